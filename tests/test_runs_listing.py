"""From a sweep to a blend without typing paths, on the tiny demo, through the real entry points: a 2x2
sweep (lr x fold), retrain_val over it, ``python -m fstag.runs`` listing the jobs with their scores (from
the job directories and from the SQLite store alone), blends by a pattern and by the sweeps' names giving
the same members, a byte-identical rebuild from the saved config, predict.py by a ranked selector, the
sweep's summary, and the not-found error that names the sibling variant."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import TINY_TRAIN

pytestmark = pytest.mark.slow
EXP = "flow"
FLOW = [*TINY_TRAIN, f"exp={EXP}", "trainer.max_epochs=1", "optimizer.lr=0.01,0.05", "fold=0,1"]
TRAIN_VARIANTS = {lr: f"optimizer.lr={lr},trainer.max_epochs=1" for lr in ("0.01", "0.05")}
RETRAIN_VARIANTS = {lr: f"optimizer.lr={lr},retrain.max_epochs=1,trainer.max_epochs=1" for lr in ("0.01", "0.05")}
JOBS = sorted([f"cnn_small/none/{v}/fold_{k}" for v in TRAIN_VARIANTS.values() for k in (0, 1)]
              + [f"cnn_small/none/{v}/fold_{k}_r" for v in RETRAIN_VARIANTS.values() for k in (0, 1)])


@pytest.fixture(scope="module")
def flow(demo_project):
    demo_project.run("train.py", "-m", *FLOW, "sweep_name=lr")
    demo_project.run("train.py", "-m", *FLOW, "stage=retrain_val", "retrain.max_epochs=1", "sweep_name=lr_r")
    return demo_project


def runs_listing(project, *args, check=True):
    return project.run("-m fstag.runs", f"exp={EXP}", *args, check=check)


def _run_json(project, name: str) -> dict:
    return json.loads((project.root / "multirun" / EXP / name / "run.json").read_text())


def test_the_listing_shows_every_job_with_its_scores_from_the_directories_and_from_mlflow(flow):
    out = runs_listing(flow, "--sort", "val_map3").stdout
    lines = out.splitlines()
    rows = [line.split() for line in lines[1:-2]]
    assert sorted(r[0] for r in rows) == JOBS and lines[-2].startswith("8 job(s) from ")
    assert lines[-1].startswith("(^ retrain_val: its train parent's held-out score")
    header = lines[0].split()
    assert header == ["job", "variant", "fold", "stage", "complete", "val_acc1", "val_map3", "oof_map3", "epochs", "mlflow_run_id"]
    for r in rows:
        info = _run_json(flow, r[0])
        retrain = info["stage"] == "retrain_val"  # its OOF scores are its parent's predictions: marked as such
        assert r[4] == "yes" and r[7] == f"{info['oof_map3']:.4f}" + ("^" if retrain else "")
        assert r[9] == info["mlflow_run_id"] and r[3] == info["stage"] and r[8] == str(info["epochs_trained"])
        if info["stage"] == "retrain_val":  # in-sample fit_* scores are never shown as val_*: its parent's, marked
            parent = _run_json(flow, r[0].replace("retrain.max_epochs=1,", "")[:-2])
            assert r[6] == f"{parent['best_metrics']['val_map3']:.4f}^" == f"{info['parent_metrics']['val_map3']:.4f}^"
            assert "val_map3" not in info["best_metrics"] and "fit_map3" in info["best_metrics"]
        else:
            assert r[6] == f"{info['best_metrics']['val_map3']:.4f}"
    scores = [float(r[6].rstrip("^")) for r in rows]
    assert scores == sorted(scores, reverse=True)
    # ties (a retrain_val job and its parent) go to the name: a train job first
    assert rows[0][3] == "train"
    # the same jobs and run ids from the SQLite store alone
    from_mlflow = runs_listing(flow, "--source", "mlflow", "--as", "json").stdout
    local = {r["name"]: r for r in json.loads(runs_listing(flow, "--as", "json").stdout)}
    remote = {r["name"]: r for r in json.loads(from_mlflow)}
    assert set(remote) == set(local) and all(remote[n]["mlflow_run_id"] == local[n]["mlflow_run_id"] for n in local)
    assert all(remote[n]["oof_map3"] == local[n]["oof_map3"] and remote[n]["epochs"] == local[n]["epochs"] for n in local)
    # --as members: the YAML list a blend config takes; --sweeps: the launches and their names
    members = OmegaConf.to_container(OmegaConf.create(runs_listing(flow, "sweep:lr", "--as", "members").stdout))
    assert sorted(members) == sorted(j for j in JOBS if not j.endswith("_r"))
    sweeps = runs_listing(flow, "--sweeps").stdout
    assert "lr " in sweeps and "lr_r " in sweeps and " 4 " in sweeps
    bad = runs_listing(flow, "sweep:nope", check=False)
    assert bad.returncode == 2 and "no sweep called 'nope'" in bad.stderr and "lr_r (" in bad.stderr


def test_blends_by_a_pattern_and_by_the_sweeps_give_the_same_members_and_rebuild_byte_identically(flow):
    by_glob = flow.run("blend.py", f"exp={EXP}", "blend.name=by_glob", "blend.members='cnn_small/none/*lr=*/fold_*'")  # '=' inside: Hydra quotes
    by_sweep = flow.run("blend.py", f"exp={EXP}", "blend.name=by_sweep", "blend.members=[sweep:lr,sweep:lr_r]")
    configs = {}
    for name in ("by_glob", "by_sweep"):
        (saved,) = (flow.root / "outputs" / "blend" / name).glob("*/config.yaml")
        configs[name] = OmegaConf.load(saved)
    expected = sorted(str((flow.root / "multirun" / EXP / j).resolve()) for j in JOBS)
    assert sorted(configs["by_glob"].blend.members) == expected == sorted(configs["by_sweep"].blend.members)
    assert list(configs["by_sweep"].blend.selected_by) == ["sweep:lr", "sweep:lr_r"]
    for out in (by_glob.stdout, by_sweep.stdout):
        assert out.strip().splitlines()[-1].startswith("test MAP@3 ")
    # a rebuild from the saved config is byte-identical, whatever is trained later
    submission = flow.root / "submissions" / "by_sweep.csv"
    built = submission.read_bytes()
    (saved,) = (flow.root / "outputs" / "blend" / "by_sweep").glob("*/config.yaml")
    copy = flow.root / "saved_by_sweep"
    copy.mkdir()
    shutil.copy(saved, copy / "config.yaml")
    # a job that the pattern now matches too, as if trained after the blend
    later = flow.root / "multirun" / EXP / "cnn_small/none/optimizer.lr=0.03,trainer.max_epochs=1"
    shutil.copytree(flow.root / "multirun" / EXP / "cnn_small/none" / TRAIN_VARIANTS["0.01"], later)
    assert len(OmegaConf.create(runs_listing(flow, "--select", "cnn_small/none/*lr=*/fold_*", "--as", "members").stdout)) == 10
    submission.unlink()
    flow.run("blend.py", "--config-path", str(copy), "--config-name", "config")
    assert submission.read_bytes() == built


def test_predict_takes_a_ranked_selector(flow):
    res = flow.run("predict.py", f"exp={EXP}", "runs=sweep:lr|best_per_fold:val_map3")
    picked = {}
    for k in (0, 1):
        scores = {lr: _run_json(flow, f"cnn_small/none/{v}/fold_{k}")["best_metrics"]["val_map3"] for lr, v in TRAIN_VARIANTS.items()}
        picked[k] = max(sorted(scores), key=lambda lr: scores[lr])
    lines = res.stdout.split("runs (2):\n")[1].splitlines()[:2]
    used = [line.strip() for line in lines]
    assert used == [str(flow.root / "multirun" / EXP / "cnn_small/none" / TRAIN_VARIANTS[picked[k]] / f"fold_{k}") for k in (0, 1)]


def test_each_sweep_has_a_summary_with_one_row_per_job_on_its_parent_run(flow):
    client = MlflowClient(flow.tracking_uri)
    exp = client.get_experiment_by_name("fstag-demo")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow 3 opens it on the runs
    (parent,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'sweep/flow/lr'")
    assert parent.info.status == "FINISHED" and parent.data.tags["fstag.sweep_name"] == "lr"
    folder = flow.root / "multirun" / EXP / ".sweeps" / parent.info.run_id
    header, *rows = list(csv.reader(io.StringIO((folder / "summary.csv").read_text())))
    assert header == ["job", "status", "optimizer.lr", "fold", "val_acc1", "val_map3", "oof_map3", "epochs", "mlflow_run_id"]
    assert sorted(r[0] for r in rows) == [j for j in JOBS if not j.endswith("_r")]
    for r in rows:
        info = _run_json(flow, r[0])
        assert r[1] == "complete" and r[2] == r[0].split("lr=")[1].split(",")[0] and r[3] == r[0][-1]
        assert r[5] == f"{info['best_metrics']['val_map3']:.4f}" and r[8] == info["mlflow_run_id"]
    assert [float(r[5]) for r in rows] == sorted((float(r[5]) for r in rows), reverse=True)  # best first
    assert (folder / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (folder / "summary.html").read_text()
    assert html.count("<tr") == 5 and "optimizer.lr" in html
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep_summary")} == {
        "sweep_summary/summary.csv", "sweep_summary/summary.html", "sweep_summary/summary.png"}
    assert set(parent.data.tags["fstag.sweep.run_ids"].split(",")) == {r[8] for r in rows}
    # the retrain_val sweep's summary ranks its jobs by their parents' held-out scores, and says so
    (retrained,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'sweep/flow/lr_r'")
    folder = flow.root / "multirun" / EXP / ".sweeps" / retrained.info.run_id
    header, *rows = list(csv.reader(io.StringIO((folder / "summary.csv").read_text())))
    assert header[-1] == "held_out" and all(r[-1] == "parent" for r in rows)
    for r in rows:
        assert r[5] == f"{_run_json(flow, r[0])['parent_metrics']['val_map3']:.4f}"


def test_a_retrain_whose_parent_is_missing_names_the_variants_that_exist(flow):
    res = flow.run("train.py", *TINY_TRAIN, f"exp={EXP}", "stage=retrain_val", "fold=0", "optimizer.lr=0.02",
                   "trainer.max_epochs=1", check=False)
    err = res.stdout + res.stderr
    assert res.returncode != 0 and "Existing variants of cnn_small/none/fold_0" in err
    assert f"cnn_small/none/{TRAIN_VARIANTS['0.01']}/fold_0 (complete; differs by -optimizer.lr=0.02 +optimizer.lr=0.01)" \
        in err.replace("+optimizer.lr=0.01 -optimizer.lr=0.02", "-optimizer.lr=0.02 +optimizer.lr=0.01")
    assert ("python train.py stage=retrain_val arch=cnn_small aug=none fold=0 optimizer.lr=0.05 trainer.max_epochs=1"
            in err)
