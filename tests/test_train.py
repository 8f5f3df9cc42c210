"""train.py end to end on tiny demo data: a 2-job multirun, retrain_val, resume, MLflow read back."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TINY_TRAIN

pytestmark = pytest.mark.slow


def _runs_by_name(uri: str, experiment: str = "fstag-demo") -> dict:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} not in {uri}"
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


@pytest.fixture
def swept(swept_project):
    return swept_project


def test_multirun_writes_two_jobs_and_mlflow_runs(swept):
    for k in (0, 1):
        job = swept.runs_dir / "cnn_small" / "none" / f"fold_{k}"
        info = json.loads((job / "run.json").read_text())
        assert info["complete"] and info["name"] == f"fold_{k}" and info["stage"] == "train"
        assert (job / "checkpoints" / "best.ckpt").is_file() and (job / "checkpoints" / "last.ckpt").is_file()
        assert (job / ".hydra" / "config.yaml").is_file() and (job / "config.yaml").is_file()
        with np.load(job / "test.npz") as z:
            probs = z["probs"]
            assert probs.shape == (12, len(info["labels"]))
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
        with np.load(job / "oof.npz") as z:
            assert len(z["fnames"]) == len(z["targets"]) > 0
        # checkpoints reload with torch's default weights_only=True
        ckpt = torch.load(job / "checkpoints" / "best.ckpt", map_location="cpu")
        assert ckpt["hyper_parameters"]["labels"] == info["labels"]
    runs = _runs_by_name(swept.tracking_uri)
    client = MlflowClient(swept.tracking_uri)
    for k in (0, 1):
        run = runs[f"cnn_small/none/fold_{k}"]
        assert run.info.status == "FINISHED"
        assert run.data.params["arch.name"] == "cnn_small" and run.data.params["fold"] == str(k)
        for metric in ("val_acc1", "val_map3", "val_loss", "train_loss"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert len(history) == 2, (metric, history)  # one value per epoch
        assert 0.0 <= run.data.metrics["val_map3"] <= 1.0
        assert run.data.tags["fstag.run_dir"].endswith(f"cnn_small/none/fold_{k}")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"run.json", "oof.npz", "test.npz", "config.yaml", "hydra"} <= artifacts
    parent_ids = {runs[f"cnn_small/none/fold_{k}"].data.tags.get("mlflow.parentRunId") for k in (0, 1)}
    assert len(parent_ids) == 1 and None not in parent_ids  # grouped under one sweep run
    sweep = [r for r in runs.values() if r.info.run_id in parent_ids]
    assert sweep and sweep[0].info.run_name.startswith("sweep/")


def test_rerun_of_complete_job_is_a_noop(swept):
    job = swept.runs_dir / "cnn_small" / "none" / "fold_0"
    before = (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    res = swept.run("train.py", "fold=0", *TINY_TRAIN)
    assert "nothing to do" in res.stdout + res.stderr
    assert (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before


def test_retrain_val_starts_from_parent_and_carries_its_oof(swept):
    swept.run("train.py", "fold=0", "stage=retrain_val", *TINY_TRAIN)
    job = swept.runs_dir / "cnn_small" / "none" / "fold_0_r"
    parent = swept.runs_dir / "cnn_small" / "none" / "fold_0"
    info = json.loads((job / "run.json").read_text())
    assert info["stage"] == "retrain_val" and info["name"] == "fold_0_r" and info["oof_source"] == str(parent)
    with np.load(job / "oof.npz") as a, np.load(parent / "oof.npz") as b:
        np.testing.assert_array_equal(a["probs"], b["probs"])
    runs = _runs_by_name(swept.tracking_uri)
    assert runs["cnn_small/none/fold_0_r"].info.status == "FINISHED"


def test_retrain_val_without_parent_names_what_was_looked_for(swept):
    res = swept.run("train.py", "fold=3", "stage=retrain_val", *TINY_TRAIN, check=False)
    assert res.returncode != 0
    assert "cnn_small/none/fold_3" in res.stderr and "Train it first" in res.stderr


def test_interrupted_job_resumes_from_last_ckpt(demo_project):
    job = demo_project.runs_dir / "cnn_small" / "none" / "fold_2"
    last = job / "checkpoints" / "last.ckpt"
    tiny = [a for a in TINY_TRAIN if not a.startswith("trainer.max_epochs=")]
    args = ["fold=2", *tiny, "trainer.max_epochs=6", "early_stopping.patience=10"]
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=demo_project.root,
                            env=demo_project.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.is_file() and not (job / "run.json").is_file(), "the job should have been killed mid-way"
    first_epoch = torch.load(last, map_location="cpu")["epoch"]
    assert first_epoch < 5
    run_id = (job / "mlflow_run_id").read_text().strip()
    res = demo_project.run("train.py", *args)
    assert "resuming from" in res.stdout + res.stderr
    assert torch.load(last, map_location="cpu")["epoch"] == 5  # finished all 6 epochs (0-based)
    info = json.loads((job / "run.json").read_text())
    assert info["complete"] and info["mlflow_run_id"] == run_id  # the same MLflow run went on
    history = MlflowClient(demo_project.tracking_uri).get_metric_history(run_id, "val_acc1")
    assert sorted({m.step for m in history}) == sorted(m.step for m in history)  # no duplicated epochs
    assert len(history) == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tracks_to_a_real_mlflow_server(demo_project, tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise AssertionError("mlflow server did not start")
                time.sleep(0.5)
        demo_project.run("train.py", "fold=4", *TINY_TRAIN, "exp=server", "mlflow.experiment=fstag-server",
                         env={"MLFLOW_TRACKING_URI": uri})
        runs = _runs_by_name(uri, "fstag-server")
        run = runs["cnn_small/none/fold_4"]
        assert run.info.status == "FINISHED" and "val_acc1" in run.data.metrics and "val_map3" in run.data.metrics
        assert {"run.json", "test.npz"} <= {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_pretrained_offline_fails_at_once_with_a_clear_message(demo_project):
    res = demo_project.run("train.py", "fold=0", *TINY_TRAIN, "arch=resnet50", "arch.pretrained=true", "exp=pretrained",
                           check=False, timeout=120)
    assert res.returncode != 0
    assert "arch.pretrained=true" in res.stderr and "resnet50" in res.stderr


def test_parallel_joblib_sweep_against_a_new_sqlite_store(demo_project, tmp_path):
    """Two jobs in parallel processes (Hydra's joblib launcher) on a store that does not exist yet: the
    sweep callback creates it once, before the jobs start, and both jobs land under one parent run."""
    db = tmp_path / "new" / "parallel.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    demo_project.run("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "fold=0,1",
                     *TINY_TRAIN, "trainer.max_epochs=1", "exp=parallel", env={"MLFLOW_TRACKING_URI": uri})
    runs = _runs_by_name(uri)
    jobs = [runs[f"cnn_small/none/fold_{k}"] for k in (0, 1)]
    assert all(r.info.status == "FINISHED" for r in jobs)
    parents = {r.data.tags["mlflow.parentRunId"] for r in jobs}
    assert len(parents) == 1 and runs[next(n for n in runs if n.startswith("sweep/"))].info.run_id in parents


def test_unverified_rows_can_be_left_out(swept):
    import re

    import pandas as pd

    res = swept.run("train.py", "fold=3", *TINY_TRAIN, "trainer.max_epochs=1", "exp=verified_only",
                    "data.use_unverified=false")
    n_train = int(re.search(r"fold_3: (\d+) train rows, (\d+) val rows", res.stdout + res.stderr).group(1))
    (folds_csv,) = (swept.root / "data" / "demo" / "features").glob("folds_n5_seed2018_*.csv")
    folds = pd.read_csv(folds_csv)
    train = pd.read_csv(swept.root / "data" / "demo" / "train.csv")
    verified = train.set_index("fname")["manually_verified"].astype(bool)
    expected = sum(1 for f, k in zip(folds["fname"], folds["fold"]) if k != 3 and verified[f])
    assert n_train == expected < int((folds["fold"] != 3).sum())


def test_force_retrains_into_a_new_mlflow_run(demo_project):
    args = ["fold=0", *TINY_TRAIN, "trainer.max_epochs=1", "exp=forced"]
    job = demo_project.root / "multirun" / "forced" / "cnn_small" / "none" / "fold_0"
    demo_project.run("train.py", *args)
    first = json.loads((job / "run.json").read_text())["mlflow_run_id"]
    demo_project.run("train.py", *args, "force=true")
    second = json.loads((job / "run.json").read_text())
    assert second["complete"] and second["mlflow_run_id"] != first
    assert MlflowClient(demo_project.tracking_uri).get_run(second["mlflow_run_id"]).info.status == "FINISHED"


def test_training_before_preprocessing_says_what_to_run(tmp_path):
    from tests.conftest import Project, make_env

    res = Project(root=tmp_path, env=make_env(tmp_path)).run("train.py", *TINY_TRAIN, check=False)
    assert res.returncode != 0
    assert "features for data=demo not found" in res.stderr and "python preprocess.py data=demo" in res.stderr
