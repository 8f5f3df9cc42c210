"""Serving speed: requests/s and p50/p95 latency of ``mlflow models serve`` for 1 and 16 clips per request,
PyTorch members against ONNX members run by onnxruntime (that model serves without torch: librosa features, numpy
crops), against predict.py's clips/s on the same clips.

    python bench/serve.py [--root DIR] [--run-dir DIR ...] [--requests 40] [--batches 8] [--tiny]

Without ``--run-dir`` the script makes a demo data set (63 train clips, 64 test clips of the demo's real length
distribution: median 2.5 s, up to 30 s) in ``<root>`` (a separate FSTAG_ROOT, default ``bench_runs/serve``) and
trains two ``experiment=demo`` jobs (cnn_small, folds 0 and 1, one epoch: their speed does not depend on how well
they learnt) through the real entry points; a finished root is reused. The two runs are packaged as one model per
backend (fstag.serve's bundle, as ``python -m fstag.export`` writes it: equal weights, predict.py's settings, 5 TTA
crops), each served in turn by ``mlflow models serve --env-manager local`` on a free 127.0.0.1 port, and asked, one
request after another from this process, with the test clips as base64-encoded audio: ``--requests`` requests of 1
clip and ``--batches`` requests of 16 clips, after one warm-up request each. Latency is a request's wall time at the
client; requests/s is requests over their total time. predict.py then tags the same clips (``input=<folder>``, the
same two runs, 5 crops) in a process of its own: its own clips/s figure (features and predictions, start-up
excluded) and its wall time with start-up. The ratios compare figures of this one run.

``--tiny``: a smoke test of the same steps on CPU: a tiny demo set (12 test clips of at most 4 s), 1 epoch, 3
requests of 1 clip and 1 of 16; in a temporary root unless ``--root`` is given. Its figures mean nothing. With
``--run-dir`` (finished jobs, as tests/test_benches.py passes swept_project's two) nothing is trained.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import TINY_NOTE, machine  # noqa: E402

DATA = ["data.demo.n_train=63", "data.demo.n_test=64", "data.demo.n_shifted=0", "data.demo.seed=7"]
TINY_DATA = ["data.demo.n_train=63", "data.demo.n_test=12", "data.demo.n_shifted=0", "data.demo.max_duration=4.0",
             "data.demo.seed=7"]
EXP = "bench-serve"
BACKENDS = ("torch", "onnx")
SIZES = (1, 16)


def _run(args: list[str], env: dict, cwd: Path, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({res.returncode}); see {log}")
    return time.perf_counter() - t0


def _train(args, root: Path, env: dict) -> list[Path]:
    runs = sorted(p.parent for p in (root / "multirun" / EXP).rglob("run.json"))
    if len(runs) == 2:
        return runs
    _run([str(REPO / "preprocess.py"), "data=demo", *args.data], env, root, root / "preprocess.log")
    _run([str(REPO / "train.py"), "-m", "experiment=demo", "fold=0,1", f"exp={EXP}", "trainer.max_epochs=1",
          "retrain.max_epochs=1", "predict.tta=1", "trainer.enable_progress_bar=false", *args.data],
         env, root, root / "train.log")
    runs = sorted(p.parent for p in (root / "multirun" / EXP).rglob("run.json"))
    if len(runs) != 2:
        raise SystemExit(f"{root / 'multirun' / EXP}: expected two finished jobs, found {len(runs)}")
    return runs


def _package(runs: list[Path], backend: str, dest: Path) -> Path:
    """The runs as an MLflow model folder, as python -m fstag.export writes it (equal weights, default settings)."""
    import mlflow.pyfunc

    from fstag.runs.members import Member
    from fstag.runs.run_dir import RunDir
    from fstag.serve.bundle import SETTINGS, build_bundle
    from fstag.serve.registry import model_kwargs

    members = [Member(spec=str(r), run=RunDir.open(r), key=f"run{i}") for i, r in enumerate(runs)]
    bundle = dest / f"bundle_{backend}"
    spec = build_bundle(bundle, [(m.key, m.run, 1.0, m.spec) for m in members], name=f"bench-{backend}", fmt=backend,
                        settings=SETTINGS, source={"kind": "runs"})
    folder = dest / f"model_{backend}"
    with tempfile.TemporaryDirectory() as code, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        kwargs = model_kwargs(bundle, spec, Path(code))
        kwargs.pop("input_example")  # no validation run at save time: the bench asks the server itself
        mlflow.pyfunc.save_model(path=str(folder), **kwargs)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _served(folder: Path, env: dict, log: Path):
    """``mlflow models serve -m <folder>`` on a free port; yields (url, its pid, seconds until /ping answered)."""
    import signal

    port = _free_port()
    bin_dir = Path(sys.executable).parent
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", str(folder), "--env-manager", "local",
                                 "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/ping", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 300:
                    raise SystemExit(f"mlflow models serve -m {folder} did not start; see {log}")
                time.sleep(0.2)
        yield url, proc.pid, time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants (Linux /proc; nan elsewhere):
    the server's own cost of the requests, which other processes on the machine do not inflate as they do the
    wall-clock latency."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    stats = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    if pid not in stats:
        return float("nan")
    tree, grew = {pid}, True
    while grew:
        more = {p for p, (parent, _) in stats.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(stats[p][1] for p in tree)


def _request(url: str, rows: list[dict]) -> float:
    data = json.dumps({"dataframe_records": rows}).encode()
    req = urllib.request.Request(url + "/invocations", data=data, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        body = json.loads(r.read())
    took = time.perf_counter() - t0
    if len(body["predictions"]) != len(rows):
        raise SystemExit(f"{url}: {len(body['predictions'])} answers for {len(rows)} clips")
    return took


def _measure(url: str, pid: int, payloads: list[dict], size: int, count: int) -> dict[str, float]:
    """``count`` sequential requests of ``size`` clips each (cycling over the clips), after one warm-up request;
    ``pid``: the server's process, whose CPU time per request is measured too."""
    def rows(k: int) -> list[dict]:
        return [{**payloads[(k * size + j) % len(payloads)], "name": f"r{k}_{j}_{payloads[(k * size + j) % len(payloads)]['name']}"}
                for j in range(size)]

    _request(url, rows(count))
    cpu0, t0 = _tree_cpu(pid), time.perf_counter()
    lat = [_request(url, rows(k)) for k in range(count)]
    total, cpu = time.perf_counter() - t0, _tree_cpu(pid) - cpu0
    return {"p50_ms": 1000 * float(np.percentile(lat, 50)), "p95_ms": 1000 * float(np.percentile(lat, 95)),
            "requests_per_s": count / total, "clips_per_s": count * size / total, "requests": count,
            "cpu_ms_per_clip": 1000 * cpu / (count * size)}


def _predict_py(runs: list[Path], folder: Path, root: Path, env: dict) -> dict[str, float]:
    out = root / "predict_serve"
    log = root / "predict.log"
    log.unlink(missing_ok=True)
    wall = _run([str(REPO / "predict.py"), "runs=[" + ",".join(f"'{r}'" for r in runs) + "]", f"input={folder}",
                 "tta=5", f"hydra.run.dir={out}"], env, root, log)
    m = re.search(r"(\d+) clips x \d+ run\(s\) x .* in ([\d.]+) s \(features ([\d.]+) s\): ([\d.]+) clips/s", log.read_text())
    if not m:
        raise SystemExit(f"predict.py's clips/s line not found in {log}")
    n, seconds = int(m.group(1)), float(m.group(2))
    return {"clips": n, "seconds": seconds, "clips_per_s": n / max(seconds, 1e-9), "wall_s": wall,
            "clips_per_s_wall": n / wall}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="the FSTAG_ROOT (default bench_runs/serve; --tiny: a temporary folder)")
    ap.add_argument("--run-dir", action="append", default=[], help="a finished train.py job (give two; default: train them)")
    ap.add_argument("--requests", type=int, default=40, help="requests of 1 clip per backend")
    ap.add_argument("--batches", type=int, default=8, help="requests of 16 clips per backend")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: tiny demo set, 3 + 1 requests, a temporary root")
    args = ap.parse_args(argv)
    args.data = DATA
    if args.tiny:
        print(TINY_NOTE, flush=True)
        args.requests, args.batches, args.data = 3, 1, TINY_DATA
    with contextlib.ExitStack() as stack:
        if args.root is None:
            args.root = (stack.enter_context(tempfile.TemporaryDirectory(prefix="fstag-serve-tiny-")) if args.tiny
                         else str(REPO / "bench_runs" / "serve"))
        run(args, Path(args.root).resolve())


def run(args, root: Path) -> None:
    from fstag.infer.job import run_config
    from fstag.runs.run_dir import RunDir

    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FSTAG_"))}
    env.update(FSTAG_ROOT=str(root), PYTHONUNBUFFERED="1")
    runs = [Path(r).resolve() for r in args.run_dir] if args.run_dir else _train(args, root, env)
    data_root = Path(str(run_config(RunDir.open(runs[0])).data.root))
    clips = sorted((data_root / "audio_test").glob("*.wav"))
    import soundfile as sf

    seconds = [sf.info(str(c)).duration for c in clips]
    payloads = [{"name": c.name, "audio": base64.b64encode(c.read_bytes()).decode("ascii")} for c in clips]
    print(f"machine: {machine()}")
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} (unset: torch and onnxruntime each use "
          f"every core); load average at start {os.getloadavg()[0]:.1f}")
    print(f"clips: {len(clips)} demo test clips ({data_root / 'audio_test'}), {np.mean(seconds):.2f} s mean, "
          f"{np.max(seconds):.1f} s max; model: {len(runs)} cnn_small runs, 5 TTA crops each, equal weights")
    results: dict[tuple[str, int], dict] = {}
    startup = {}
    with tempfile.TemporaryDirectory(prefix="fstag-serve-models-") as tmp:
        for backend in BACKENDS:
            folder = _package(runs, backend, Path(tmp))
            with _served(folder, env, root / f"serve_{backend}.log") as (url, pid, took):
                startup[backend] = took
                for size, count in zip(SIZES, (args.requests, args.batches)):
                    results[backend, size] = _measure(url, pid, payloads, size, count)
                    r = results[backend, size]
                    print(f"{backend}, {size} clip(s)/request: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
                          f"{r['requests_per_s']:.2f} requests/s, server CPU {r['cpu_ms_per_clip']:.0f} ms/clip", flush=True)
    ref = _predict_py(runs, data_root / "audio_test", root, env)
    print()
    print("| backend | clips/request | requests | p50 ms | p95 ms | requests/s | clips/s | vs predict.py | onnx/torch "
          "| server CPU ms/clip |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for backend in BACKENDS:
        for size in SIZES:
            r = results[backend, size]
            print(f"| {backend} | {size} | {r['requests']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                  f"{r['requests_per_s']:.2f} | {r['clips_per_s']:.2f} | {r['clips_per_s'] / ref['clips_per_s']:.2f} | "
                  f"{r['clips_per_s'] / results['torch', size]['clips_per_s']:.2f} | {r['cpu_ms_per_clip']:.0f} |")
    print(f"predict.py (the same runs and clips, 5 crops): {ref['clips']} clips in {ref['seconds']:.1f} s: "
          f"{ref['clips_per_s']:.2f} clips/s; {ref['wall_s']:.1f} s wall with start-up: {ref['clips_per_s_wall']:.2f} clips/s")
    print(f"server start-up to the first /ping: torch {startup['torch']:.1f} s, onnx {startup['onnx']:.1f} s")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    (root / "serve.json").write_text(json.dumps({
        "results": {f"{b}/{s}": v for (b, s), v in results.items()}, "predict_py": ref, "startup_s": startup,
        "clips": len(clips), "mean_seconds": float(np.mean(seconds))}, indent=2))


if __name__ == "__main__":
    main()
