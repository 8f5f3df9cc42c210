"""Against a real `mlflow server` on 127.0.0.1 that stores artifacts itself (--serve-artifacts): a sweep
whose jobs submitit starts as separate processes, then a blend and predictions rebuilt from the server
alone, after the run directories are deleted."""

from __future__ import annotations

import shutil
from pathlib import Path
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
    (parent,) = [r for n, r in runs.items() if n.startswith(f"sweep/{EXP}/")]
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in jobs)
    # the sweep's summary, from the records submitit's job processes wrote: one row per job
    client = MlflowClient(uri)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep_summary")} == {
        "sweep_summary/summary.csv", "sweep_summary/summary.html", "sweep_summary/summary.png"}
    csv_text = Path(client.download_artifacts(parent.info.run_id, "sweep_summary/summary.csv", str(cluster_sweep))).read_text()
    assert sorted(line.split(",")[0] for line in csv_text.splitlines()[1:]) == [f"cnn_small/none/default/fold_{k}" for k in (0, 1)]
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `apt-get install chromium` (.ci/run installs it as root)")
def test_the_printed_ui_address_opens_the_sweeps_training_runs_in_a_browser(server, cluster_sweep, tmp_path):
    """Headless Chromium on the address fstag prints, against the real server: MLflow 3's model-training view
    (not the GenAI overview) listing the sweep's jobs and their parent by name."""
    import subprocess

    from fstag.runs.tracking import ui_url

    uri, _ = server
    exp = MlflowClient(uri).get_experiment_by_name(EXPERIMENT)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    url = ui_url(uri, exp.experiment_id)
    assert url.startswith(f"{uri}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=30000", "--dump-dom", url]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    parent = next(n for n in _runs(uri) if n.startswith(f"sweep/{EXP}/"))
    for name in (parent, "cnn_small/none/default/fold_0", "cnn_small/none/default/fold_1"):
        assert name in dom, f"{name} not on the page {url}"
    assert "Model training" in dom and "No data available" not in dom


def test_the_listing_and_a_sweep_selector_work_from_the_server_alone(demo_project, server, cluster_sweep, tmp_path):
    uri, _ = server
    env = {"MLFLOW_TRACKING_URI": uri}
    common = [f"exp={EXP}", f"paths.runs_dir={cluster_sweep}", f"mlflow.experiment={EXPERIMENT}"]
    shutil.rmtree(cluster_sweep / EXP / "cnn_small", ignore_errors=True)  # no job folder here: the server alone
    runs = _runs(uri)
    listed = demo_project.run("-m fstag.runs", *common, "--sort", "val_map3", env=env).stdout
    assert f"2 job(s) from experiment '{EXPERIMENT}' (exp {EXP}) in {uri}" in listed
    for k in (0, 1):
        run = runs[f"cnn_small/none/default/fold_{k}"]
        row = next(line.split() for line in listed.splitlines() if line.startswith(f"cnn_small/none/fold_{k} "))
        assert row[-1] == run.info.run_id and row[7] == f"{run.data.metrics['oof_map3']:.4f}"
    sweep = next(r for n, r in runs.items() if n.startswith(f"sweep/{EXP}/")).data.tags["fstag.sweep_name"]
    members = demo_project.run("-m fstag.runs", *common, f"sweep:{sweep}", "--as", "members", env=env).stdout
    assert sorted(yaml_list(members)) == sorted(f"runs:/{runs[f'cnn_small/none/default/fold_{k}'].info.run_id}" for k in (0, 1))


def yaml_list(text: str) -> list:
    from omegaconf import OmegaConf

    return list(OmegaConf.to_container(OmegaConf.create(text)))
