"""One job's death is one job's failure (issue 27): real sweeps of train.py with fstag's joblib launcher on the
tiny demo data, jobs and launchers killed with real signals, the MLflow store read back; and the GPU slot
lease (plain file locks) taken over from a process that died."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TINY_TRAIN

pytestmark = pytest.mark.slow

# 3 jobs, 2 at once, 6 epochs each (long enough for a kill to land mid-training); one GPU "0" with two slots,
# so each job's process leases a slot (CUDA_VISIBLE_DEVICES=0 is harmless on a CPU machine)
SWEEP = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "launcher.gpus=[0]", "launcher.jobs_per_gpu=2",
         *TINY_TRAIN, "trainer.max_epochs=6", "callbacks.early_stopping.patience=10", "fold=0,1,2"]
VARIANT = "callbacks.early_stopping.patience=10,trainer.max_epochs=6"


def _records(exp_dir: Path) -> list[dict]:
    out = []
    for f in exp_dir.glob(".sweeps/*/jobs/*.json"):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # being written
    return out


def _wait_for(what, condition, timeout_s: float = 600, proc=None):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _runs(uri: str, exp: str) -> dict:
    """The job runs of one ``exp`` folder by name (run names leave the exp out)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fstag-demo")
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], f"tags.`fstag.exp` = '{exp}'",
                                                           max_results=1000)}


def _live_processes_of(launch: str) -> list[int]:
    """Processes (not zombies) started by the launch ``launch``: its jobs, their DataLoader workers, the fork
    server (every one inherits FSTAG_LAUNCH from the launcher)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if f"FSTAG_LAUNCH={launch}".encode() in (d / "environ").read_bytes().split(b"\0") and \
                    (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(d.name))
        except OSError:
            continue
    return found


def test_a_job_killed_mid_epoch_fails_alone_and_the_same_command_resumes_it(demo_project):
    exp_dir = demo_project.root / "multirun" / "deaths"
    jobs = exp_dir / "cnn_small" / "none" / VARIANT
    args = [*SWEEP, "exp=deaths"]
    result = {}
    launch = threading.Thread(target=lambda: result.update(res=demo_project.run("train.py", *args, check=False)))
    launch.start()

    def fold_1_mid_training():
        rec = next((r for r in _records(exp_dir) if r["job_dir"].endswith("/fold_1") and r["status"] == "RUNNING"), None)
        last = jobs / "fold_1" / "checkpoints" / "last.ckpt"
        return rec if rec and last.is_file() and not (jobs / "fold_1" / "run.json").is_file() else None

    try:
        rec = _wait_for("fold_1 to save a checkpoint", lambda: fold_1_mid_training() or (not launch.is_alive() and "ended"))
        assert rec != "ended", "the sweep ended before fold_1 could be killed"
        os.kill(rec["pid"], signal.SIGKILL)  # what the out-of-memory killer does to one of the jobs
    finally:
        launch.join(timeout=900)
    res = result["res"]
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    killed_epoch = torch.load(jobs / "fold_1" / "checkpoints" / "last.ckpt", map_location="cpu")["epoch"]
    assert killed_epoch < 5

    # the other two ran to the end, the third one after the kill included
    for k in (0, 2):
        assert json.loads((jobs / f"fold_{k}" / "run.json").read_text())["complete"], out[-3000:]
    assert not (jobs / "fold_1" / "run.json").is_file()
    # the failure table: the dead job, its cause, its log file
    table = res.stderr[res.stderr.index("did not finish"):]
    row = next(line for line in table.splitlines() if f"{VARIANT}/fold_1" in line)
    assert "killed by SIGKILL (signal 9" in row and str(jobs / "fold_1" / "train.log") in row
    assert "fold_0" not in table and "fold_2" not in table
    # its MLflow run and the parent are not left RUNNING; the cause is on the run
    runs = _runs(demo_project.tracking_uri, "deaths")
    dead = runs[f"cnn_small/none/{VARIANT}/fold_1"]
    assert dead.info.status == "FAILED" and "SIGKILL" in dead.data.tags["fstag.failure"]
    assert all(runs[f"cnn_small/none/{VARIANT}/fold_{k}"].info.status == "FINISHED" for k in (0, 2))
    parent_id = dead.data.tags["mlflow.parentRunId"]
    parent = MlflowClient(demo_project.tracking_uri).get_run(parent_id)
    assert parent.info.status == "FAILED"
    # the launch's records and its summary say which job died and why
    by_job = {Path(r["job_dir"]).name: r for r in _records(exp_dir)}
    assert [by_job[f"fold_{k}"]["status"] for k in (0, 1, 2)] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert "SIGKILL" in by_job["fold_1"]["cause"]
    assert "SIGKILL" in json.loads((jobs / "fold_1" / "failure.json").read_text())["cause"]
    header, *rows = list(csv.reader((exp_dir / ".sweeps" / parent_id / "summary.csv").read_text().splitlines()))
    failed_row = dict(zip(header, next(r for r in rows if r[0].endswith("fold_1"))))
    assert failed_row["status"] == "failed" and "SIGKILL" in failed_row["cause"]
    # the third job leased a slot again after one of the first two let go of it (the dead one's, or the finished one's)
    assert json.loads((jobs / "fold_2" / "run.json").read_text())["device_lease"] in ("0:0", "0:1")

    # the same command: the dead job resumes from its last checkpoint into the same run, the others are skipped
    finished = {k: (jobs / f"fold_{k}" / "run.json").stat().st_mtime_ns for k in (0, 2)}
    run_id = (jobs / "fold_1" / "mlflow_run_id").read_text().strip()
    again = demo_project.run("train.py", *args)
    out = again.stdout + again.stderr
    assert "resuming from" in out and out.count("is complete (best") == 2
    assert {k: (jobs / f"fold_{k}" / "run.json").stat().st_mtime_ns for k in (0, 2)} == finished
    info = json.loads((jobs / "fold_1" / "run.json").read_text())
    assert info["complete"] and info["mlflow_run_id"] == run_id
    assert torch.load(jobs / "fold_1" / "checkpoints" / "last.ckpt", map_location="cpu")["epoch"] == 5
    client = MlflowClient(demo_project.tracking_uri)
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED" and "fstag.failure" not in resumed.data.tags
    assert "SIGKILL" in resumed.data.tags["fstag.previous_failure"]
    assert not (jobs / "fold_1" / "failure.json").exists()
    steps = [m.step for m in client.get_metric_history(run_id, "val_acc1")]
    assert sorted(set(steps)) == sorted(steps) and len(steps) == 6  # each epoch once, across the two attempts


def _launch_in_background(project, args: list[str]) -> tuple[threading.Thread, dict]:
    """``train.py <args>`` as Project.run runs it, in a thread: (the thread, {"res": its result once it ended})."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(res=project.run("train.py", *args, check=False)))
    thread.start()
    return thread, result


def _launcher(exp_dir: Path) -> dict:
    (launch_file,) = exp_dir.glob(".sweeps/*.json")
    return json.loads(launch_file.read_text())  # its pid and launch id


def test_stopping_the_launcher_stops_its_jobs_and_leaves_them_killed_and_resumable(demo_project):
    """SIGTERM to the launching process: both running jobs stop, their runs KILLED, the third never starts,
    no process of the launch is left, and the command exits as a stopped one (128 + 15)."""
    exp_dir = demo_project.root / "multirun" / "stopped"
    jobs = exp_dir / "cnn_small" / "none" / "callbacks.early_stopping.patience=100,trainer.max_epochs=40"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_TRAIN, "trainer.max_epochs=40",
            "callbacks.early_stopping.patience=100", "fold=0,1,2", "exp=stopped"]
    thread, result = _launch_in_background(demo_project, args)
    try:
        _wait_for("both jobs to save a checkpoint", lambda: all(
            (jobs / f"fold_{k}" / "checkpoints" / "last.ckpt").is_file() for k in (0, 1)) or not thread.is_alive())
        launcher = _launcher(exp_dir)
        os.kill(launcher["pid"], signal.SIGTERM)
    finally:
        thread.join(timeout=600)
    res = result["res"]
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-3000:]
    assert _wait_for("the launch's processes to end", lambda: not _live_processes_of(launcher["launch"]) or None, 120)
    assert "stopped: the launch received SIGTERM" in res.stderr and "not started: the launch was stopped" in res.stderr
    runs = _runs(demo_project.tracking_uri, "stopped")
    stopped = [runs[f"cnn_small/none/{jobs.name}/fold_{k}"] for k in (0, 1)]
    assert [r.info.status for r in stopped] == ["KILLED", "KILLED"]
    assert all("SIGTERM" in r.data.tags["fstag.failure"] for r in stopped)
    assert MlflowClient(demo_project.tracking_uri).get_run(stopped[0].data.tags["mlflow.parentRunId"]).info.status == "KILLED"
    assert not (jobs / "fold_2").exists()  # never started
    for k in (0, 1):  # resumable: a checkpoint, no run.json; the same command resumes them (as above)
        assert (jobs / f"fold_{k}" / "checkpoints" / "last.ckpt").is_file() and not (jobs / f"fold_{k}" / "run.json").exists()
        assert json.loads((jobs / f"fold_{k}" / "failure.json").read_text())["status"] == "KILLED"


def test_a_killed_launcher_leaves_no_orphans_and_its_job_closes_its_run(demo_project):
    """SIGKILL of the launching process (no handler runs there): its job notices (parent-death signal, watchdog),
    closes its run KILLED and ends."""
    exp_dir = demo_project.root / "multirun" / "orphan"
    job = exp_dir / "cnn_small" / "none" / "callbacks.early_stopping.patience=100,trainer.max_epochs=40" / "fold_0"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", *TINY_TRAIN, "trainer.max_epochs=40",
            "callbacks.early_stopping.patience=100", "fold=0", "exp=orphan"]
    thread, result = _launch_in_background(demo_project, args)
    try:
        _wait_for("the job to save a checkpoint", lambda: (job / "checkpoints" / "last.ckpt").is_file() or not thread.is_alive())
        launcher = _launcher(exp_dir)
        os.kill(launcher["pid"], signal.SIGKILL)
    finally:
        thread.join(timeout=600)
    assert result["res"].returncode == -signal.SIGKILL
    assert _wait_for("the orphaned job to end", lambda: not _live_processes_of(launcher["launch"]) or None, 120)
    run = MlflowClient(demo_project.tracking_uri).get_run((job / "mlflow_run_id").read_text().strip())
    assert run.info.status == "KILLED" and f"its launcher (pid {launcher['pid']}) is gone" in run.data.tags["fstag.failure"]
    parent = MlflowClient(demo_project.tracking_uri).get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "KILLED"
    (rec,) = _records(exp_dir)
    assert rec["status"] == "KILLED" and "is gone" in rec["cause"]


def test_a_killed_submitit_job_fails_alone(demo_project):
    """hydra/launcher=submitit_local (each job a process started by submitit): one job killed with SIGKILL fails
    with its cause, the other finishes, the launch waits for both and exits non-zero with the table."""
    exp_dir = demo_project.root / "multirun" / "submitit"
    args = ["-m", "hydra/launcher=submitit_local", *TINY_TRAIN, "callbacks.early_stopping.patience=10",
            "trainer.max_epochs=1,6", "fold=0", "exp=submitit"]
    doomed = exp_dir / "cnn_small" / "none" / "callbacks.early_stopping.patience=10,trainer.max_epochs=6" / "fold_0"
    result = {}
    launch = threading.Thread(target=lambda: result.update(res=demo_project.run("train.py", *args, check=False)))
    launch.start()

    def doomed_training():
        rec = next((r for r in _records(exp_dir) if r["job_dir"] == str(doomed)), None)
        return rec if rec and (doomed / "checkpoints" / "last.ckpt").is_file() else (not launch.is_alive() and "ended")

    try:
        rec = _wait_for("the 6-epoch job to save a checkpoint", doomed_training)
        assert rec != "ended", "the sweep ended before its job could be killed"
        os.kill(rec["pid"], signal.SIGKILL)
    finally:
        launch.join(timeout=900)
    res = result["res"]
    assert res.returncode != 0
    table = res.stderr[res.stderr.index("did not finish"):]
    assert "trainer.max_epochs=6/fold_0  killed by a signal" in table and str(doomed / "train.log") in table
    runs = _runs(demo_project.tracking_uri, "submitit")
    assert runs["cnn_small/none/callbacks.early_stopping.patience=10,trainer.max_epochs=1/fold_0"].info.status == "FINISHED"
    dead = runs["cnn_small/none/callbacks.early_stopping.patience=10,trainer.max_epochs=6/fold_0"]
    assert dead.info.status == "FAILED" and "killed by a signal" in dead.data.tags["fstag.failure"]
    assert MlflowClient(demo_project.tracking_uri).get_run(dead.data.tags["mlflow.parentRunId"]).info.status == "FAILED"


_HOLD = """
import os, sys, time
from fstag.runs.launchers import lease_gpu, current_lease
got = lease_gpu(["0"], sys.argv[1], 1, wait_s=float(sys.argv[2]))
print(current_lease(), flush=True)
if sys.argv[3] == "fork":  # a child that shares the lock's descriptor, as a DataLoader worker does
    if os.fork() == 0:
        time.sleep(float(sys.argv[4]))
        os._exit(0)
time.sleep(600 if got else 0)
"""


def test_a_dead_jobs_gpu_slot_is_leased_again(tmp_path):
    """One GPU, one slot (launcher.jobs_per_gpu=1): while a job's process holds it, another gets none; killed
    with SIGKILL, its slot goes to the next process, once the children that share its lock are gone too."""
    key = f"test-{os.getpid()}-{time.time_ns()}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}  # the slot locks: tmp_path/fstag-gpus-<key>/

    def start(wait_s: float, fork: str = "", child_s: float = 0):
        return subprocess.Popen([sys.executable, "-c", _HOLD, key, str(wait_s), fork, str(child_s)], env=env,
                                stdout=subprocess.PIPE, text=True)

    first = start(0, "fork", 3.0)
    assert first.stdout.readline().strip() == "0:0"
    busy = start(0)
    assert busy.communicate(timeout=60)[0].strip() == "None"  # the slot is held
    first.send_signal(signal.SIGKILL)
    first.wait()
    # the killed job's forked child still holds the lock for a moment: the next job waits for it, then leases
    nxt = start(60)
    assert nxt.stdout.readline().strip() == "0:0"
    nxt.kill()
    nxt.wait()
    assert sorted(p.name for p in (tmp_path / f"fstag-gpus-{key}").iterdir()) == ["0-0.lock"]  # one slot, one lock file


def test_each_job_computes_on_its_share_of_the_cores():
    """fstag's joblib launcher gives each job cores // n_jobs compute threads, as the plugin's loky workers had
    (two jobs on two cores: one thread each, the same numbers as before), unless the launch's environment sets
    OMP_NUM_THREADS; in a real process that has imported torch, as the fork server's jobs have."""
    import subprocess
    import sys

    from fstag.runs.isolated_launcher import job_threads

    assert job_threads(1) >= 1 and job_threads(10_000) == 1
    code = ("import torch, os; from fstag.runs.isolated_launcher import limit_threads; limit_threads(1); "
            "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1", "1"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "2"}, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["2", "2", "1"]
