"""A train job's epochs with and without a tracking-server outage, and the sync of what a job could not send.

    python bench/tracking_outage.py [--root DIR] [--epochs 30] [--outage-after 3] [--outage-epochs 8]
                                    [--fast-retries] [--tiny]

In ``--root`` (its own FSTAG_ROOT, default bench_runs/tracking_outage; the tiny demo set of the tests, 63 train
clips, is made there on first use), against a real ``mlflow server`` on 127.0.0.1 (SQLite store in the root,
artifacts served by it), three real ``train.py`` jobs of the test suite's tiny preset for ``--epochs`` epochs
(early stopping off), each in its own experiment folder:

1. ``steady``: the server up all along;
2. ``outage``: the server killed (SIGKILL) once ``--outage-after`` epochs are journaled, started again on the
   same port and store once ``--outage-epochs`` more are (its start-up takes seconds more, still inside the outage);
3. ``gone``: the server killed at the same point and not back before the job ends; then started again and
   ``python -m fstag.runs sync`` sends the job's journal.

It prints, per job, the epochs, the outage's length (from the kill until the server answers again; ``gone``: until
after the job), the median gap between epochs (their ``val_loss`` timestamps: whole epochs,
training, validation, checkpoints and logging) before, inside and after the outage, the job's wall time, the
time from the server's return until the backlog was on it (``outage``), the sync's wall time (``gone``), and
whether every epoch arrived exactly once. ``--fast-retries`` sets MLFLOW_HTTP_REQUEST_MAX_RETRIES=1,
..._BACKOFF_FACTOR=0, ..._TIMEOUT=5 (the tests' setting: each call gives up within seconds); by default MLflow's
own retries apply (7 with backoff: a call waits up to ~4 minutes, in the sender thread only).
``--tiny``: the ``gone`` job only, 6 epochs, the server killed after 2 (a smoke test; its times mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench import TINY_NOTE, machine  # noqa: E402

TINY_DATA = ["data.demo.n_train=63", "data.demo.n_test=12", "data.demo.n_shifted=0", "data.demo.max_duration=4.0",
             "data.demo.seed=7"]
TRAIN = [f"hydra.searchpath=[file://{REPO / 'tests' / 'conf'}]", "experiment=tiny", "fold=0",
         "callbacks.early_stopping=null", "mlflow.experiment=fstag-outage-bench"]
FAST_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


class Server:
    """``mlflow server`` on a fixed 127.0.0.1 port with its SQLite store in ``folder``: killed and started again
    (tests/test_tracking_outage.py stops the same server)."""

    def __init__(self, folder: Path, start_timeout: float = 300.0):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.start_timeout = folder, start_timeout
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> float:
        """Start it and wait until it answers; returns the seconds that took."""
        t0 = time.perf_counter()
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
               "--artifacts-destination", str(self.folder / "artifacts")]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: a lighter server
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        while not self.answers():
            if self.proc.poll() is not None or time.perf_counter() - t0 > self.start_timeout:
                self.stop()
                raise RuntimeError(f"mlflow server did not start on port {self.port}")
            time.sleep(0.2)
        return time.perf_counter() - t0

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGKILL the server and its workers (its own process group): an outage, not a polite shutdown; returns
        once the port refuses connections (30 s at most)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.2)


def journaled_epochs(job_dir: Path | None) -> int:
    if job_dir is None:
        return 0
    try:
        lines = (job_dir / "mlflow_journal.jsonl").read_text().splitlines()
    except OSError:
        return 0
    n = 0
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        n += sum(1 for m in e.get("metrics", []) if m[0] == "val_loss")
    return n


def job_dir_of(root: Path, exp: str) -> Path | None:
    found = sorted((root / "multirun" / exp / "cnn_small" / "none").glob("*/fold_0"))
    return found[0] if found else None


def wait_until(cond, proc: subprocess.Popen, what: str) -> None:
    while not cond():
        if proc.poll() is not None:
            raise SystemExit(f"the job ended before {what}")
        time.sleep(0.05)


def gaps(stamps: list[int], lo: float, hi: float) -> tuple[list[float], list[float], list[float]]:
    """Epoch gaps (s) ending before, inside and after the outage [lo, hi] (ms)."""
    pairs = [(b, (b - a) / 1000) for a, b in zip(stamps, stamps[1:])]
    return ([g for t, g in pairs if t <= lo], [g for t, g in pairs if lo < t < hi], [g for t, g in pairs if t >= hi])


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}" if values else "-"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run(args, root: Path, server: Server, env: dict, exp: str, mode: str) -> dict:
    """One train.py job (``mode``: steady | outage | gone); its epochs as the server received them."""
    from mlflow.tracking import MlflowClient

    cmd = [sys.executable, str(REPO / "train.py"), *TRAIN, f"exp={exp}", f"trainer.max_epochs={args.epochs}",
           "mlflow.end_wait_s=5" if mode == "gone" else "mlflow.end_wait_s=300"]
    log = open(root / f"{exp}.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    lo = hi = float("inf")
    catch_up = sync_s = None
    if mode != "steady":
        wait_until(lambda: journaled_epochs(job_dir_of(root, exp)) >= args.outage_after, proc, "the outage")
        server.stop()
        lo = time.time() * 1000
        if mode == "outage":
            at = journaled_epochs(job_dir_of(root, exp))
            wait_until(lambda: journaled_epochs(job_dir_of(root, exp)) >= at + args.outage_epochs, proc, "the restart")
            server.start()
            hi = time.time() * 1000
            client, back = MlflowClient(server.uri), time.perf_counter()
            target = journaled_epochs(job_dir_of(root, exp))
            rid = (job_dir_of(root, exp) / "mlflow_run_id").read_text().strip()
            while len(client.get_metric_history(rid, "val_loss")) < target and proc.poll() is None:
                time.sleep(0.1)
            catch_up = time.perf_counter() - back
    rc = proc.wait()
    wall = time.perf_counter() - t0
    log.close()
    if rc != 0:
        raise SystemExit(f"train.py failed ({rc}); see {root / f'{exp}.log'}")
    job = job_dir_of(root, exp)
    info = json.loads((job / "run.json").read_text())
    synced_at_end = info.get("mlflow_synced")
    if mode == "gone":
        server.start()
        hi = time.time() * 1000
        t1 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "fstag.runs", "sync", str(job)], cwd=root, env=env,
                             capture_output=True, text=True)
        sync_s = time.perf_counter() - t1
        if res.returncode != 0:
            raise SystemExit(f"sync failed: {res.stdout}{res.stderr}")
    info = json.loads((job / "run.json").read_text())
    client = MlflowClient(server.uri)
    rid = info["mlflow_run_id"]
    history = client.get_metric_history(rid, "val_loss")
    steps = [m.step for m in history]
    stamps = sorted(m.timestamp for m in history)
    before, inside, after = gaps(stamps, lo, hi)
    return {"mode": mode, "epochs": int(info["epochs_trained"]), "once": len(steps) == len(set(steps)) == int(info["epochs_trained"]),
            "status": client.get_run(rid).info.status, "wall": wall, "before": before, "inside": inside, "after": after,
            "all": [g for gs in (before, inside, after) for g in gs], "catch_up": catch_up, "sync_s": sync_s,
            "synced_at_end": synced_at_end, "fit": (info.get("timings") or {}).get("fit"),
            "outage": (hi - lo) / 1000 if hi < float("inf") else None}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="the FSTAG_ROOT (default bench_runs/tracking_outage; --tiny: a temporary folder)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--outage-after", type=int, default=3, help="epochs journaled before the server is killed")
    ap.add_argument("--outage-epochs", type=int, default=8, help="epochs journaled in the outage before the restart")
    ap.add_argument("--fast-retries", action="store_true", help="MLflow's client gives up on a call within seconds")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: the gone job, 6 epochs, outage after 2")
    a = ap.parse_args(argv)
    if a.tiny:
        a.epochs, a.outage_after, a.outage_epochs = 6, 2, 2
    with tempfile.TemporaryDirectory(prefix="fstag-outage-tiny-") as tmp:
        root = Path(a.root or (tmp if a.tiny else REPO / "bench_runs" / "tracking_outage")).resolve()
        root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(FSTAG_ROOT=str(root), PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1",
                   PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
        if a.fast_retries:
            env.update(FAST_RETRIES)
        if not (root / "data" / "demo" / "features").is_dir():
            subprocess.run([sys.executable, str(REPO / "preprocess.py"), "data=demo", *TINY_DATA], cwd=root, env=env,
                           check=True, capture_output=True)
        server = Server(root / "server")
        started = server.start()
        env["MLFLOW_TRACKING_URI"] = server.uri
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            modes = ("gone",) if a.tiny else ("steady", "outage", "gone")
            rows = [run(a, root, server, env, f"{mode}-{stamp}", mode) for mode in modes]
        finally:
            server.stop()
    if a.tiny:
        print(TINY_NOTE)
    print(f"machine: {machine()}")
    retries = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES=1, BACKOFF_FACTOR=0, TIMEOUT=5" if a.fast_retries
               else "MLflow's default retries")
    print(f"mlflow server (SQLite, 127.0.0.1, started in {started:.1f} s); {retries}; tiny preset, {a.epochs} epochs; "
          f"outage after {a.outage_after} epochs, restart after {a.outage_epochs} more")
    print("| job | epochs | each once | status | outage (s) | gap before (s) | gap in outage (s) | gap after (s) | all gaps (s) "
          "| job wall (s) | backlog on the server after restart (s) | sync (s) | synced at its end |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['epochs']} | {'yes' if r['once'] else 'NO'} | {r['status']} | {secs(r['outage'])} | "
              f"{med(r['before'])} | "
              f"{med(r['inside'])} | {med(r['after'])} | {med(r['all'])} | {r['wall']:.1f} | "
              f"{secs(r['catch_up'])} | {secs(r['sync_s'])} | {r['synced_at_end']} |")


if __name__ == "__main__":
    main()
