"""The README's main job (python -m fstag.demo_job, what `make demo` runs) end to end on tiny demo data."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fstag.ensemble.submission import validate_submission
from fstag.runs.identity import job_variant
from tests.conftest import TINY_DEMO, TINY_OVERRIDES, Project, make_env

pytestmark = pytest.mark.slow(seconds=130)  # the longest test (the order of the xdist queue: tests/conftest.py)


def test_demo_job_end_to_end(tmp_path):
    project = Project(root=tmp_path, env=make_env(tmp_path))
    sets = [a for x in TINY_DEMO for a in ("--set", x)]
    train_sets = [a for x in TINY_OVERRIDES for a in ("--train-set", x)]
    # --jobs 1: the sweeps' jobs one after the other in their train.py process. `make demo` runs them two at a
    # time (hydra/launcher=joblib, below); on tiny jobs the workers' own start-up would be most of this test
    # (198 against 145 CPU-s), and the joblib sweep runs for real in tests/test_train.py.
    res = project.run("-m fstag.demo_job", "--jobs", "1", "--folds", "0,1", "--augs", "none", *sets, *train_sets,
                      timeout=900)
    out = res.stdout

    submission = tmp_path / "submissions" / "demo.csv"
    assert f"submission: {submission}" in out
    match = re.search(r"test MAP@3 ([0-9.]+) \(top-1 ([0-9.]+), public ([0-9.]+), private ([0-9.]+)\)", out)
    assert match, out[-2000:]
    assert 0.0 <= float(match.group(1)) <= 1.0
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in out

    data = tmp_path / "data" / "demo"
    labels = sorted(pd.read_csv(data / "train.csv")["label"].unique())
    validate_submission(submission, data / "sample_submission.csv", labels)
    # the tiny settings are overrides, so the jobs are a variant of their own, which predict and blend found
    variant = {s: job_variant(TINY_OVERRIDES, stage, None)[0] for s, stage in (("", "train"), ("_r", "retrain_val"))}
    assert variant[""] == "loader.batch_size=16,predict.tta=2,trainer.max_epochs=2"
    for k in (0, 1):
        for s in ("", "_r"):
            assert (tmp_path / "multirun" / "demo" / "cnn_small" / "none" / variant[s] / f"fold_{k}{s}" / "run.json").is_file()
    assert list((tmp_path / "outputs" / "predict").glob("*/top3.csv"))

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fstag-demo")
    names = {r.info.run_name for r in client.search_runs([exp.experiment_id])}
    # the UI's address opens the training runs, not MLflow 3's GenAI overview
    assert (f"then open http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
            "&orderByKey=metrics.%60best_val_map3%60&orderByAsc=false") in out
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert {f"cnn_small/none/{variant['']}/fold_0", f"cnn_small/none/{variant['_r']}/fold_1_r", "blend/demo"} <= names

    # scores compare like with like: a retrain_val job trained on its validation fold, so it never ranks by its
    # in-sample scores (fit_*); the listing ranks it by its parent's, marked, and the UI's order puts train jobs first
    listing = project.run("-m fstag.runs", "--sort", "val_map3").stdout.splitlines()
    assert listing[1].split()[3] == "train", listing
    retrain_rows = [line.split() for line in listing[1:5] if " retrain_val " in line]
    assert retrain_rows and all(r[6].endswith("^") for r in retrain_rows)
    by_ui = client.search_runs([exp.experiment_id], "tags.`fstag.arch` = 'cnn_small'",
                               order_by=["metrics.`best_val_map3` DESC"])
    assert [r.data.tags["fstag.stage"] for r in by_ui[:2]] == ["train", "train"]
    retrained = [r for r in by_ui if r.data.tags["fstag.stage"] == "retrain_val"]
    assert retrained and all("best_val_map3" not in r.data.metrics and "best_fit_map3" in r.data.metrics
                             and "parent_val_map3" in r.data.metrics for r in retrained)


def test_the_demo_jobs_sweeps_run_as_many_jobs_at_once_as_asked():
    from fstag.demo_job import _launcher

    assert _launcher("auto") == ["hydra/launcher=joblib"]  # make demo: one job per core (or GPU)
    assert _launcher("3") == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]
    assert _launcher("1") == []  # Hydra's basic launcher: one after the other
    for bad in ("0", "two"):
        with pytest.raises(SystemExit, match=f"--jobs {bad}: auto or a positive number"):
            _launcher(bad)
