"""train.py end to end on tiny demo data: a 2-job multirun, retrain_val, resume, MLflow read back."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

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
        job = swept.runs_dir / "cnn_small" / "none" / "default" / f"fold_{k}"
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
        # checkpoint.best_weights_only: best.ckpt without the optimizer state; last.ckpt whole, for resuming
        last = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert "optimizer_states" not in ckpt and last["optimizer_states"] and ckpt["epoch"] <= last["epoch"] == 1
        # where the job's time went (fstag.train.timings): its steps, and the spans of its 2 epochs
        t = info["timings"]
        assert {"startup", "prepare", "build", "fit", "best_weights", "predict", "finish", "fit_setup"} <= set(t)
        assert t["epochs"] == 2 and min(v for v in t.values() if v is not None) >= 0
        spans = t["epoch_train"] + t["epoch_validation"] + t["epoch_after_validation"]
        assert spans == pytest.approx(t["epoch"], abs=0.01) and t["epoch"] * 2 <= t["fit"]
    runs = _runs_by_name(swept.tracking_uri)
    client = MlflowClient(swept.tracking_uri)
    for k in (0, 1):
        run = runs[f"cnn_small/none/default/fold_{k}"]
        assert run.info.status == "FINISHED"
        assert run.data.params["arch.name"] == "cnn_small" and run.data.params["fold"] == str(k)
        # the resolved config once, '.'-separated: no '/'-flattened duplicates from Lightning's hparams
        assert not [p for p in run.data.params if "/" in p] and "scheduler.step_gamma" in run.data.params
        for metric in ("val_acc1", "val_map3", "val_loss", "train_loss"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert len(history) == 2, (metric, history)  # one value per epoch
        assert 0.0 <= run.data.metrics["val_map3"] <= 1.0
        assert run.data.metrics["time_fit_s"] > 0 and run.data.metrics["time_epochs"] == 2
        assert run.data.tags["fstag.run_dir"].endswith(f"cnn_small/none/default/fold_{k}")
        assert run.data.tags["fstag.variant"] == "default"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"run.json", "oof.npz", "test.npz", "config.yaml", "hydra"} <= artifacts
    parent_ids = {runs[f"cnn_small/none/default/fold_{k}"].data.tags.get("mlflow.parentRunId") for k in (0, 1)}
    assert len(parent_ids) == 1 and None not in parent_ids  # grouped under one sweep run
    sweep = [r for r in runs.values() if r.info.run_id in parent_ids]
    assert sweep and sweep[0].info.run_name.startswith("sweep/")


def test_rerun_of_complete_job_is_a_noop(swept):
    job = swept.runs_dir / "cnn_small" / "none" / "default" / "fold_0"
    before = (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    res = swept.run("train.py", "fold=0", *TINY_TRAIN)
    assert "nothing to do" in res.stdout + res.stderr
    assert (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before


def test_retrain_val_starts_from_parent_and_carries_its_oof(swept):
    swept.run("train.py", "fold=0", "stage=retrain_val", *TINY_TRAIN)
    job = swept.runs_dir / "cnn_small" / "none" / "default" / "fold_0_r"
    parent = swept.runs_dir / "cnn_small" / "none" / "default" / "fold_0"
    info = json.loads((job / "run.json").read_text())
    assert info["stage"] == "retrain_val" and info["name"] == "fold_0_r" and info["oof_source"] == str(parent)
    with np.load(job / "oof.npz") as a, np.load(parent / "oof.npz") as b:
        np.testing.assert_array_equal(a["probs"], b["probs"])
    runs = _runs_by_name(swept.tracking_uri)
    assert runs["cnn_small/none/default/fold_0_r"].info.status == "FINISHED"


def test_retrain_val_without_parent_names_what_was_looked_for(swept):
    res = swept.run("train.py", "fold=3", "stage=retrain_val", *TINY_TRAIN, check=False)
    assert res.returncode != 0
    assert "cnn_small/none/default/fold_3" in res.stderr and "Train it first" in res.stderr


def test_interrupted_job_resumes_from_last_ckpt(demo_project):
    job = demo_project.runs_dir / "cnn_small" / "none" / "callbacks.early_stopping.patience=10,trainer.max_epochs=6" / "fold_2"
    last = job / "checkpoints" / "last.ckpt"
    args = ["fold=2", *TINY_TRAIN, "trainer.max_epochs=6", "callbacks.early_stopping.patience=10"]
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


def test_pretrained_offline_fails_at_once_with_a_clear_message(demo_project):
    res = demo_project.run("train.py", "fold=0", *TINY_TRAIN, "arch=resnet50", "arch.pretrained=true", "exp=pretrained",
                           check=False, timeout=120)
    assert res.returncode != 0
    assert "arch.pretrained=true" in res.stderr and "resnet50" in res.stderr


def test_parallel_joblib_sweep_against_a_new_sqlite_store(demo_project, tmp_path):
    """Two jobs in parallel processes (Hydra's joblib launcher) on a store that does not exist yet: the
    sweep callback creates it once, before the jobs start, and both jobs land under one parent run.
    Both share one device (``launcher.gpus=[0]``, two jobs per GPU, so n_jobs is 2): each worker leases a slot
    of its own, recorded in its run.json and MLflow run (CUDA_VISIBLE_DEVICES=0 is harmless on a CPU machine)."""
    db = tmp_path / "new" / "parallel.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    demo_project.run("train.py", "-m", "hydra/launcher=joblib", "launcher.gpus=[0]", "launcher.jobs_per_gpu=2",
                     "fold=0,1", *TINY_TRAIN, "trainer.max_epochs=1", "exp=parallel", env={"MLFLOW_TRACKING_URI": uri})
    runs = _runs_by_name(uri)
    jobs = [runs[f"cnn_small/none/trainer.max_epochs=1/fold_{k}"] for k in (0, 1)]
    assert all(r.info.status == "FINISHED" for r in jobs)
    parents = {r.data.tags["mlflow.parentRunId"] for r in jobs}
    assert len(parents) == 1 and runs[next(n for n in runs if n.startswith("sweep/"))].info.run_id in parents
    infos = [json.loads((demo_project.runs_dir.parent / "parallel" / "cnn_small/none/trainer.max_epochs=1" / f"fold_{k}"
                         / "run.json").read_text()) for k in (0, 1)]
    assert sorted(i["device_lease"] for i in infos) == ["0:0", "0:1"]  # one device, two slots, one job each
    assert [i["mlflow_run_id"] for i in infos] == [r.info.run_id for r in jobs]  # each job its own run ...
    assert [r.data.tags["fstag.device_lease"] for r in jobs] == [i["device_lease"] for i in infos]  # ... and lease


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
    job = demo_project.root / "multirun" / "forced" / "cnn_small" / "none" / "trainer.max_epochs=1" / "fold_0"
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


# sweeps over any key --------------------------------------------------------------------------------
LR_GRID = ["fold=0", "optimizer.lr=0.01,0.05", "trainer.max_epochs=1", "exp=lrtest"]
LR_VARIANTS = {lr: f"optimizer.lr={lr},trainer.max_epochs=1" for lr in ("0.01", "0.05")}


@pytest.fixture(scope="module")
def lr_grid(demo_project):
    """The issue's grid: ``-m experiment=... fold=0 optimizer.lr=0.01,0.05 trainer.max_epochs=1 exp=lrtest``."""
    demo_project.run("train.py", "-m", *TINY_TRAIN, *LR_GRID)
    return demo_project


def _lrtest_runs(project) -> dict:
    return {n: r for n, r in _runs_by_name(project.tracking_uri).items() if r.data.tags.get("fstag.exp") == "lrtest"}


def test_a_grid_over_the_learning_rate_gives_two_jobs_and_two_mlflow_runs(lr_grid):
    runs = _lrtest_runs(lr_grid)
    jobs = {lr: lr_grid.root / "multirun" / "lrtest" / "cnn_small" / "none" / v / "fold_0" for lr, v in LR_VARIANTS.items()}
    for lr, job in jobs.items():
        info = json.loads((job / "run.json").read_text())
        assert info["complete"] and info["variant"] == LR_VARIANTS[lr]
        assert OmegaConf.load(job / "config.yaml").optimizer.lr == float(lr)
        run = runs[f"cnn_small/none/{LR_VARIANTS[lr]}/fold_0"]
        assert run.info.status == "FINISHED" and run.info.run_id == info["mlflow_run_id"]
        assert run.data.params["optimizer.lr"] == lr and run.data.tags["fstag.override.optimizer.lr"] == lr
        assert run.data.tags["fstag.override.trainer.max_epochs"] == "1"
        assert run.data.metrics["best_val_map3"] == pytest.approx(info["best_metrics"]["val_map3"])
    children = [r for r in runs.values() if r.info.run_name.startswith("cnn_small/")]
    assert len(children) == 2
    assert {r.data.params["optimizer.lr"] for r in children} == {"0.01", "0.05"}
    # the compare view: every param but the swept one (and the paths naming the job) is the same
    differing = {k for k in children[0].data.params if children[0].data.params[k] != children[1].data.params.get(k)}
    assert differing == {"optimizer.lr", "variant", "job_dir"}
    (parent_id,) = {r.data.tags["mlflow.parentRunId"] for r in children}
    parent = MlflowClient(lr_grid.tracking_uri).get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep/lrtest/")
    best = max(children, key=lambda r: r.data.metrics["best_val_map3"])
    assert parent.data.metrics["best_val_map3"] == best.data.metrics["best_val_map3"]
    assert parent.data.tags["fstag.best_run"] == best.info.run_name
    assert parent.data.params["best.optimizer.lr"] == best.data.params["optimizer.lr"]


def test_an_identical_rerun_skips_and_a_changed_config_in_a_used_directory_is_an_error(lr_grid):
    job = lr_grid.root / "multirun" / "lrtest" / "cnn_small" / "none" / LR_VARIANTS["0.05"] / "fold_0"
    before = (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    n_runs = len(_lrtest_runs(lr_grid))
    res = lr_grid.run("train.py", *TINY_TRAIN, "fold=0", "optimizer.lr=0.05", "trainer.max_epochs=1", "exp=lrtest")
    assert "nothing to do" in res.stdout + res.stderr and (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before
    assert len(_lrtest_runs(lr_grid)) == n_runs
    # the same variant under another preset: the demo's batch size and epochs differ from the tiny one's
    res = lr_grid.run("train.py", "experiment=demo_seed", "fold=0", "optimizer.lr=0.05", "trainer.max_epochs=1",
                      "exp=lrtest", "trainer.enable_progress_bar=false", check=False, timeout=120)
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert str(job) in err and "another config" in err and "force=true" in err and "exp=" in err
    assert "loader.batch_size: 16 -> 32" in err and "predict.tta: 2 -> 5" in err
    assert (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before


def test_retrain_val_of_a_variant_starts_from_that_variants_parent(lr_grid):
    from fstag.train.retrain import state_digest

    lr_grid.run("train.py", *TINY_TRAIN, "fold=0", "stage=retrain_val", "optimizer.lr=0.05", "trainer.max_epochs=1",
                "exp=lrtest", "retrain.max_epochs=1")
    base = lr_grid.root / "multirun" / "lrtest" / "cnn_small" / "none"
    retrain_variant = "optimizer.lr=0.05,retrain.max_epochs=1,trainer.max_epochs=1"  # sorted, retrain.* kept
    job = base / retrain_variant / "fold_0_r"
    parent = base / LR_VARIANTS["0.05"] / "fold_0"
    info = json.loads((job / "run.json").read_text())
    assert info["stage"] == "retrain_val" and info["oof_source"] == str(parent)
    digests = {lr: state_digest(torch.load(base / v / "fold_0" / "checkpoints" / "best.ckpt")["state_dict"])
               for lr, v in LR_VARIANTS.items()}
    assert digests["0.01"] != digests["0.05"]
    assert info["init_from"] == {"checkpoint": str(parent / "checkpoints" / "best.ckpt"), "state_sha256": digests["0.05"]}
    run = _lrtest_runs(lr_grid)[f"cnn_small/none/{retrain_variant}/fold_0_r"]
    assert run.info.status == "FINISHED" and run.data.tags["fstag.override.retrain.max_epochs"] == "1"


def test_a_failing_job_fails_its_sweep_and_concurrent_sweeps_keep_their_parents(demo_project):
    from fstag.runs.tracking import ensure_experiment

    # the store exists before two sweeps share it (its artifacts where train.py puts them, not in ./mlruns)
    ensure_experiment(demo_project.tracking_uri, "fstag-demo", str(demo_project.root / "mlartifacts"))
    common = [*TINY_TRAIN, "trainer.max_epochs=1", "exp=two"]
    procs = [subprocess.Popen([sys.executable, str(REPO / "train.py"), "-m", *common, *folds], cwd=demo_project.root,
                              env=demo_project.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for folds in (["fold=2"], ["fold=3,7"])]  # fold=7 is out of range: that job fails
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert procs[0].returncode == 0 and procs[1].returncode != 0, errs[1][-2000:]
    assert "fold=7 is out of range" in errs[1]
    client = MlflowClient(demo_project.tracking_uri)
    runs = {n: r for n, r in _runs_by_name(demo_project.tracking_uri).items() if r.data.tags.get("fstag.exp") == "two"}
    parents = {r.info.run_id: r for r in client.search_runs(
        [client.get_experiment_by_name("fstag-demo").experiment_id], "attributes.run_name LIKE 'sweep/two/%'")}
    assert len(parents) == 2
    ok, bad = (runs[f"cnn_small/none/trainer.max_epochs=1/fold_{k}"] for k in (2, 3))
    assert ok.data.tags["mlflow.parentRunId"] != bad.data.tags["mlflow.parentRunId"]
    assert ok.info.status == bad.info.status == "FINISHED"
    assert parents[ok.data.tags["mlflow.parentRunId"]].info.status == "FINISHED"
    failed = parents[bad.data.tags["mlflow.parentRunId"]]
    assert failed.info.status == "FAILED" and failed.data.tags["fstag.failed_job"].endswith("fold_7")
    sweeps = list((demo_project.root / "multirun" / "two" / ".sweeps").glob("*.json"))
    assert {json.loads(p.read_text())["mlflow_parent_run_id"] for p in sweeps} == set(parents)


def test_an_optuna_search_resumes_after_a_kill_and_reports_its_best_trial(demo_project, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["train.py", *TINY_TRAIN, "hparams_search=demo_optuna", "fold=1", "exp=search",
            "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={storage}", "hydra.sweeper.sampler.n_startup_trials=2"]
    proc = subprocess.Popen([sys.executable, str(REPO / args[0]), *args[1:]], cwd=demo_project.root, env=demo_project.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jobs = demo_project.root / "multirun" / "search" / "cnn_small" / "none"
    deadline = time.time() + 400
    # kill it once trial 0 is done and trial 1 has a checkpoint (mid-way through its 2 epochs)
    while time.time() < deadline and proc.poll() is None:
        done = list(jobs.glob("*/fold_1/run.json"))
        started = [p for p in jobs.glob("*/fold_1/checkpoints/last.ckpt") if not (p.parent.parent / "run.json").is_file()]
        if len(done) == 1 and started:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(done) == 1 and started, "the search should have been killed during its second trial"
    killed_job = started[0].parent.parent
    study = optuna.load_study(study_name="search-demo_optuna", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]

    res = demo_project.run(*args)
    out = res.stdout + res.stderr
    assert "resuming from" in out and "1 of 3 trials finished" in out
    study = optuna.load_study(study_name="search-demo_optuna", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states[1] == "FAIL"  # the killed trial, run again as trial 2
    assert study.trials[2].params == study.trials[1].params
    assert json.loads((killed_job / "run.json").read_text())["complete"]

    client = MlflowClient(demo_project.tracking_uri)
    runs = {n: r for n, r in _runs_by_name(demo_project.tracking_uri).items() if r.data.tags.get("fstag.exp") == "search"}
    (parent,) = [r for r in runs.values() if r.info.run_name.startswith("search/")]
    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)  # one study, one parent
    best = max(children, key=lambda r: r.data.metrics["best_val_map3"])
    assert study.best_value == pytest.approx(best.data.metrics["best_val_map3"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_val_map3"] == pytest.approx(study.best_value)
    assert parent.data.tags["fstag.best_run"] == best.info.run_name
    # the parent names its best run's parameters: those of a trial with the study's best value (on the tiny
    # data two trials may tie, and MLflow's order and optuna's may then pick different ones of them)
    best_trials = [t.params for t in study.trials if t.state.name == "COMPLETE" and t.value == pytest.approx(study.best_value)]
    assert any(all(float(parent.data.params[f"best.{k}"]) == pytest.approx(float(v)) == float(best.data.params[k])
                   for k, v in params.items()) for params in best_trials)
    # the search's summary on its parent: one row per finished trial (both launches), its keys as columns
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep_summary")} == {
        "sweep_summary/summary.csv", "sweep_summary/summary.html", "sweep_summary/summary.png"}
    summary = demo_project.root / "multirun" / "search" / ".sweeps" / parent.info.run_id / "summary.csv"
    header, *rows = list(csv.reader(summary.read_text().splitlines()))
    assert {"optimizer.lr", "optimizer.weight_decay", "mixup.prob", "val_map3"} <= set(header)
    assert sorted(r[header.index("mlflow_run_id")] for r in rows) == sorted(r.info.run_id for r in children)
