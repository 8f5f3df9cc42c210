"""Launcher configs (conf/hydra/launcher/), one GPU per joblib worker, and the feature cache shared by
concurrent processes: one preprocess.py writes while a second waits; two train.py jobs read at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hydra import compose, initialize_config_dir

from fstag.core.config import CONFIG_DIR
from tests.conftest import REPO, TINY_DEMO, TINY_TRAIN


def _launcher(name: str, *overrides: str) -> dict:
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={name}", *overrides], return_hydra_config=True)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.mark.filterwarnings("ignore:(?s).*is validated against ConfigStore schema:UserWarning")  # fstag.core.config
def test_launcher_configs_as_users_type_them():
    import joblib
    import torch

    jl = _launcher("joblib")
    want = torch.cuda.device_count() or joblib.cpu_count()  # one job per GPU, else per CPU
    assert jl["n_jobs"] == want and jl["_target_"].endswith("JoblibLauncher")
    assert _launcher("joblib", "hydra.launcher.n_jobs=3")["n_jobs"] == 3
    # jobs per GPU: n_jobs = devices x launcher.jobs_per_gpu (a device list given, as on a CPU machine)
    assert _launcher("joblib", "launcher.gpus=[3,5]", "launcher.jobs_per_gpu=3")["n_jobs"] == 6
    for bad, key in (("launcher.jobs_per_gpu=0", "launcher.jobs_per_gpu=0"), ("launcher.gpus=7", "launcher.gpus=7")):
        with pytest.raises(Exception, match=f"{key}: a "):
            _launcher("joblib", "launcher.gpus=[0]", bad)
    slurm = _launcher("submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90")
    assert slurm["_target_"].endswith("SlurmLauncher")
    assert (slurm["partition"], slurm["timeout_min"], slurm["gpus_per_node"]) == ("gpu", 90, 1)
    assert slurm["mem_gb"] and slurm["cpus_per_task"] and slurm["submitit_folder"].endswith("/.submitit/%j")
    assert _launcher("submitit_local")["_target_"].endswith("LocalLauncher")


def _lease(gpus, key, per_gpu, queue, done):
    from fstag.runs.launchers import current_lease, lease_gpu

    queue.put((lease_gpu(gpus, key, per_gpu), os.environ.get("CUDA_VISIBLE_DEVICES"), current_lease()))
    done.wait(300)  # hold the lease until every worker has tried


def test_each_worker_process_leases_its_own_slot():
    """Two devices, two jobs per device: four workers get the four slots, the first two on different
    devices; a fifth finds none free and leaves CUDA alone."""
    ctx = multiprocessing.get_context("spawn")
    queue, done = ctx.Queue(), ctx.Event()
    key = f"test-{os.getpid()}-{time.time_ns()}"
    procs = [ctx.Process(target=_lease, args=(["3", "5"], key, 2, queue, done)) for _ in range(5)]
    for p in procs:
        p.start()
    try:
        got = [queue.get(timeout=300) for _ in procs]
    finally:
        done.set()
    for p in procs:
        p.join(timeout=60)
    leased = [g for g in got if g[0] is not None]
    assert sorted(g[2] for g in leased) == ["3:0", "3:1", "5:0", "5:1"]  # each slot once
    assert all(g[1] == g[0] == g[2].split(":")[0] for g in leased)  # pinned to its slot's device
    assert [(g[0], g[2]) for g in got if g[0] is None] == [(None, None)]  # no slot, no lease recorded


def test_slots_spread_over_devices_first():
    from fstag.runs.launchers import slots

    assert slots(["0", "1"], 2) == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]


@pytest.mark.slow
def test_second_preprocess_waits_for_the_first_and_never_interleaves(demo_project, tmp_path):
    """Two real preprocess.py processes on one new cache folder: the first is paused (SIGSTOP) while it
    holds the lock; the second says so and writes nothing until the first is done."""
    features = tmp_path / "features"
    cmd = [sys.executable, str(REPO / "preprocess.py"), "data=demo", *TINY_DEMO, f"data.features_dir={features}",
           "preprocess.progress=false", "preprocess.chunk_size=8"]
    first = subprocess.Popen(cmd, cwd=demo_project.root, env=demo_project.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not list(features.glob("*/features.yaml")) and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)  # features.yaml is written under the lock
    first.send_signal(signal.SIGSTOP)
    second = None
    try:
        assert first.poll() is None, "the first preprocess.py ended before it could be paused"
        (cache,) = features.glob("*/features.yaml")
        cache = cache.parent
        second = subprocess.Popen(cmd, cwd=demo_project.root, env=demo_project.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        guard = threading.Timer(600, second.kill)  # never hang the suite if it waited silently
        guard.daemon = True  # and never keep the test process alive once the test is over
        guard.start()
        lines = []
        for line in second.stdout:  # until it reports the lock
            lines.append(line)
            if "waiting for it to finish" in line:
                break
        assert "another preprocess.py is writing features into" in "".join(lines), "".join(lines)
        snapshot = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
        time.sleep(1.0)
        assert second.poll() is None  # still waiting ...
        assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == snapshot  # ... and wrote nothing
    finally:
        first.send_signal(signal.SIGCONT)
    out1, _ = first.communicate(timeout=600)
    out2, _ = second.communicate(timeout=600)
    guard.cancel()
    assert first.returncode == 0 and second.returncode == 0, out1 + out2
    assert "features up to date" in "".join(lines) + out2  # the second found the first's work complete
    # the cache equals the one the session's single preprocess.py made
    (reference,) = (demo_project.root / "data" / "demo" / "features").glob(f"{cache.name}")
    for name in ("train.f16", "train.index.csv", "test.f16", "test.index.csv"):
        assert (cache / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.slow
def test_two_train_jobs_read_one_cache_at_once(demo_project, tmp_path):
    from fstag.runs.tracking import ensure_experiment

    runs_dir = tmp_path / "multirun"
    # the store exists before the jobs start, as a sweep's callback or a tracking server makes sure
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(uri, "fstag-demo", str(tmp_path / "mlartifacts"))
    procs = [subprocess.Popen([sys.executable, str(REPO / "train.py"), f"fold={k}", *TINY_TRAIN, "trainer.max_epochs=1",
                               "exp=concurrent", f"paths.runs_dir={runs_dir}"],
                              cwd=demo_project.root, env={**demo_project.env, "MLFLOW_TRACKING_URI": uri},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in (2, 3)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    for k in (2, 3):
        info = json.loads((runs_dir / "concurrent/cnn_small/none/trainer.max_epochs=1" / f"fold_{k}" / "run.json").read_text())
        assert info["complete"] and info["fold"] == k and len(info["labels"]) == 21
