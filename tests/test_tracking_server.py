"""Against a real `mlflow server` on 127.0.0.1 that stores artifacts itself (--serve-artifacts): a sweep
whose jobs submitit starts as separate processes, then a blend and predictions rebuilt from the server
alone, after the run directories are deleted."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_TRAIN, mlflow_server

pytestmark = pytest.mark.slow
EXPERIMENT = "fstag-cluster"
EXP = "cluster"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A tracking server with its own SQLite store and artifact root, serving artifacts over HTTP."""
    tmp = tmp_path_factory.mktemp("server")
    with mlflow_server(tmp, serve_artifacts=True) as uri:
        yield uri, tmp / "artifacts"


@pytest.fixture(scope="module")
def cluster_sweep(demo_project, server, tmp_path_factory):
    """fold=0,1 launched by hydra/launcher=submitit_local, tracked on the server; jobs in their own runs_dir."""
    uri, _ = server
    runs_dir = tmp_path_factory.mktemp("cluster") / "multirun"
    t0 = time.perf_counter()
    demo_project.run("train.py", "-m", "hydra/launcher=submitit_local", "fold=0,1", *TINY_TRAIN, f"exp={EXP}",
                     f"paths.runs_dir={runs_dir}", f"mlflow.experiment={EXPERIMENT}", env={"MLFLOW_TRACKING_URI": uri})
    print(f"submitit_local sweep of 2 tiny jobs: {time.perf_counter() - t0:.1f} s")
    return runs_dir


def _runs(uri: str) -> dict:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id], max_results=1000)}


def test_submitit_local_sweep_gives_two_child_runs_under_one_parent(demo_project, server, cluster_sweep):
    uri, artifact_root = server
    runs = _runs(uri)
    jobs = [runs[f"cnn_small/none/default/fold_{k}"] for k in (0, 1)]
    parent = runs[f"sweep/{EXP}"]
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in jobs)
    assert all({"val_acc1", "val_map3", "best_val_map3", "oof_map3"} <= set(r.data.metrics) for r in jobs)
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert "best_val_map3" in parent.data.metrics
    # submitit ran each job in its own process (its logs are in the sweep's .submitit folder) ...
    logs = list((cluster_sweep / EXP / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2
    # ... and the artifacts went to the server's artifact root, the best checkpoint among them
    for r in jobs:
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")
        logged = {a.path for a in MlflowClient(uri).list_artifacts(r.info.run_id, "checkpoints")}
        assert logged == {"checkpoints/best.ckpt"}
        assert {"run.json", "test.npz", "oof.npz"} <= {a.path for a in MlflowClient(uri).list_artifacts(r.info.run_id)}
    assert len(list(artifact_root.rglob("best.ckpt"))) == 2


def test_blend_and_predict_rebuilt_from_the_server_alone(demo_project, server, cluster_sweep, tmp_path):
    uri, _ = server
    runs = _runs(uri)
    ids = [runs[f"cnn_small/none/default/fold_{k}"].info.run_id for k in (0, 1)]
    env = {"MLFLOW_TRACKING_URI": uri}
    common = [f"exp={EXP}", f"paths.runs_dir={cluster_sweep}", f"mlflow.experiment={EXPERIMENT}"]
    submission = tmp_path / "server_blend.csv"
    out = demo_project.run("blend.py", *common, "blend.name=server", f"blend.submission={submission}",
                           f"blend.members=[runs:/{ids[0]},{ids[1]}]", env=env)
    assert f"submission: {submission}" in out.stdout
    built = submission.read_bytes()
    (saved,) = (demo_project.root / "outputs" / "blend" / "server").glob("*/config.yaml")
    config = saved.read_text()
    assert f"runs:/{ids[0]}" in config and f"runs:/{ids[1]}" in config and str(cluster_sweep) + "/" not in config
    demo_project.run("predict.py", *common, f"runs=[{ids[0]}]", f"output_dir={tmp_path / 'before'}", "tta=2", env=env)

    shutil.rmtree(cluster_sweep)  # the machine the jobs ran on is gone; only the server is left
    submission.unlink()
    demo_project.run("blend.py", "--config-path", str(saved.parent), "--config-name", "config", env=env)
    assert submission.read_bytes() == built
    cache = cluster_sweep / EXP / ".mlflow_cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted(ids)  # fetched, as run directories
    assert not (cache / ids[0] / "checkpoints").exists()  # a blend member needs only its predictions
    stamp = (cache / ids[0] / "run.json").stat().st_mtime_ns
    demo_project.run("predict.py", *common, f"runs=[runs:/{ids[0]}]", f"output_dir={tmp_path / 'after'}", "tta=2",
                     env=env)
    before, after = (pd.read_csv(tmp_path / d / "top3.csv") for d in ("before", "after"))
    pd.testing.assert_frame_equal(before, after)
    with np.load(tmp_path / "before" / "probs.npz") as a, np.load(tmp_path / "after" / "probs.npz") as b:
        assert np.array_equal(a["probs"], b["probs"]) and np.array_equal(a["fnames"], b["fnames"])

    assert (cache / ids[0] / "checkpoints" / "best.ckpt").is_file()  # predict.py's member: with its checkpoint
    assert (cache / ids[0] / "run.json").stat().st_mtime_ns == stamp  # the rest reused, not fetched again
    assert sorted(p.name for p in cache.iterdir()) == sorted(ids)  # no temporary folders left
