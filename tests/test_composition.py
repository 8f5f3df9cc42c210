"""Parts built from config groups (optimizer, scheduler, callbacks, logger, trainer, debug), multi-process
training with the single-process metrics, and checkpoints that reload anywhere: through train.py and
predict.py, against a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import TINY_TRAIN

pytestmark = pytest.mark.slow


def _runs(project, experiment="fstag-demo"):
    client = MlflowClient(project.tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=500)


def _job(project, exp: str, fold: int, suffix: str = "") -> Path:
    jobs = sorted(project.root.glob(f"multirun/{exp}/*/*/*/fold_{fold}{suffix}"))
    assert len(jobs) == 1, jobs
    return jobs[0]


def test_parts_swapped_from_the_command_line_are_built_and_logged(demo_project):
    demo_project.run(
        "train.py", "fold=2", *TINY_TRAIN, "exp=parts", "optimizer=adamw", "scheduler=onecycle", "logger=many",
        "callbacks.early_stopping.patience=3", "+callbacks.swa._target_=pytorch_lightning.callbacks.StochasticWeightAveraging",
        "+callbacks.swa.swa_lrs=0.01", "callbacks.gradient_accumulation=null")
    job = _job(demo_project, "parts", 2)
    info = json.loads((job / "run.json").read_text())
    assert info["complete"]
    client, runs = _runs(demo_project)
    run = next(r for r in runs if r.info.run_id == info["mlflow_run_id"])
    p = run.data.params
    assert p["optimizer._target_"] == "torch.optim.AdamW" and p["scheduler._target_"] == "torch.optim.lr_scheduler.OneCycleLR"
    assert p["callbacks.swa._target_"] == "pytorch_lightning.callbacks.StochasticWeightAveraging"
    assert p["callbacks.early_stopping.patience"] == "3" and p["callbacks.gradient_accumulation"] == "None"
    # the Lightning parts really were those: AdamW's state in the checkpoint, SWA's callback state, the CSV log
    ckpt = torch.load(job / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert "exp_avg_sq" in next(iter(ckpt["optimizer_states"][0]["state"].values()))
    assert any("StochasticWeightAveraging" in k for k in ckpt["callbacks"])
    assert any("EarlyStopping" in k and v["patience"] == 3 for k, v in ckpt["callbacks"].items())
    assert (job / "csv" / "metrics.csv").is_file() and "val_acc1" in (job / "csv" / "metrics.csv").read_text()
    assert "lr-AdamW" in client.get_run(info["mlflow_run_id"]).data.metrics
    # the saved config rebuilds the job: the same parts, composed again from it
    saved = OmegaConf.load(job / "config.yaml")
    assert saved.optimizer._target_ == "torch.optim.AdamW" and saved.callbacks.swa.swa_lrs == 0.01


def test_debug_presets_run_and_stay_out_of_the_experiment(demo_project):
    demo_project.run("train.py", "-m", "debug=fdr,limit,overfit", "fold=0", *TINY_TRAIN)
    for preset in ("fdr", "limit", "overfit"):
        job = next(demo_project.root.glob(f"multirun/debug/cnn_small/none/debug={preset}/fold_0"))
        info = json.loads((job / "run.json").read_text())
        assert info["complete"] and np.load(job / "test.npz")["probs"].shape[0] == 12
    assert not (demo_project.root / "multirun" / "debug" / "cnn_small" / "none" / "default").exists()
    _, runs = _runs(demo_project, "fstag-debug")
    names = {r.info.run_name for r in runs}
    assert {f"cnn_small/none/debug={p}/fold_0" for p in ("fdr", "limit", "overfit")} <= names
    fdr = json.loads(next(demo_project.root.glob("multirun/debug/cnn_small/none/debug=fdr/fold_0/run.json")).read_text())
    assert fdr["epochs_trained"] <= 1 and not (fdr.get("best_epoch", -1) > 0)
    overfit = next(demo_project.root.glob("multirun/debug/cnn_small/none/debug=overfit/fold_0"))
    assert json.loads((overfit / "run.json").read_text())["epochs_trained"] == 20


def _validate_single_process(job) -> dict[str, float]:
    """val_acc1 / val_map3 of the job's best checkpoint on its validation rows, in this one process."""
    from fstag.train.datamodule import FoldDataModule
    from fstag.train.fold_data import load_fold_data
    from fstag.models.module import TaggingModule
    from fstag.evaluate.metrics import map_at_3_torch

    cfg = OmegaConf.load(job / "config.yaml")
    data = load_fold_data(cfg)
    module = TaggingModule.from_checkpoint(job / "checkpoints" / "best.ckpt")
    dm = FoldDataModule(data.train_store, data.train_rows, data.val_rows, dict(cfg.loader), dict(cfg.aug), False)
    logits, targets = [], []
    with torch.no_grad():
        for x, y, *_ in dm.val_dataloader():
            logits.append(module(x).float())
            targets.append(y)
    logits, targets = torch.cat(logits), torch.cat(targets)
    return {"val_acc1": float((logits.argmax(1) == targets).float().mean()), "val_map3": float(map_at_3_torch(logits, targets)),
            "val_loss": float(torch.nn.functional.cross_entropy(logits, targets))}


# The audio-native backbones (issue 19) with their BatchNorms, squeeze-excitation and mean + max pooling: the
# DDP mechanics (ranks, metrics gathered once, one run) are the same for any arch, so these two stand for all.
DDP_ARCHS = ("cnn6", "mn10_audio")


def test_ddp_on_two_cpu_processes_gives_the_single_process_metrics_once(demo_project):
    # a multirun of two jobs: each job's second rank must run that job alone, not the sweep again
    demo_project.run("train.py", "-m", "fold=3", *TINY_TRAIN, "trainer=ddp_sim", "exp=ddp", f"arch={','.join(DDP_ARCHS)}",
                     "trainer.max_epochs=1")
    _, runs = _runs(demo_project)
    for arch in DDP_ARCHS:
        (job,) = demo_project.root.glob(f"multirun/ddp/{arch}/*/*/fold_3")
        assert job.parent.name == "trainer.max_epochs=1,trainer=ddp_sim"
        info = json.loads((job / "run.json").read_text())
        assert info["complete"] and info["world_size"] == 2 and info["arch"] == arch
        single = _validate_single_process(job)
        best = info["best_metrics"]
        assert best["val_acc1"] == pytest.approx(single["val_acc1"], abs=1e-6), arch
        assert best["val_map3"] == pytest.approx(single["val_map3"], abs=1e-6), arch
        assert best["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5), arch  # over all rows, each once
        # one MLflow run for the job (a child of the launch's parent), one set of files
        mine = [r for r in runs if r.data.tags.get("fstag.exp") == "ddp" and r.data.tags.get("fstag.fold") == "3"
                and r.info.run_id == info["mlflow_run_id"]]
        assert len(mine) == 1 and mine[0].info.status == "FINISHED"
        assert len(list(job.rglob("*.ckpt"))) == 2
    ddp_runs = [r for r in runs if r.data.tags.get("fstag.exp") == "ddp" and r.data.tags.get("fstag.fold") == "3"]
    assert len(ddp_runs) == len(DDP_ARCHS)
    assert len(list(demo_project.root.glob("multirun/ddp/*/*/*/fold_*"))) == len(DDP_ARCHS)


def test_checkpoints_reload_without_their_initial_weights_or_compiler(demo_project, tmp_path):
    """A run trained from a local pretrained file, compiled: predict.py and retrain_val need neither."""
    from fstag.models.backbones import build_model

    weights = tmp_path / "imagenet_like.pt"
    net = build_model({"name": "cnn_small", "pretrained": False}, num_classes=21)
    torch.save(net.backbone.state_dict(), weights)
    common = ["fold=4", *TINY_TRAIN, "exp=reload", "gpu.compile=true", "gpu.compile_backend=eager"]
    demo_project.run("train.py", *common, f"arch.pretrained_path={weights}")
    weights.unlink()  # offline, or the file is gone: reloading needs only the checkpoint
    job = _job(demo_project, "reload", 4)
    state = torch.load(job / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state and not any("_orig_mod" in k for k in state)
    out = tmp_path / "pred"
    demo_project.run("predict.py", f"runs=['{job}']", "tta=2", f"hydra.run.dir={out}")
    assert np.isfinite(np.load(out / "probs.npz")["probs"]).all()
    demo_project.run("train.py", *common, f"arch.pretrained_path={weights}", "stage=retrain_val")
    retrained = json.loads((_job(demo_project, "reload", 4, "_r") / "run.json").read_text())
    assert retrained["complete"] and retrained["init_from"]["checkpoint"].endswith("best.ckpt")


def test_a_compiled_models_checkpoint_loads_into_a_plain_module(tmp_path):
    from fstag.models.module import TaggingModule

    hp = dict(arch={"name": "cnn_small", "pretrained": False}, labels=["a", "b", "c"],
              optimizer={"_target_": "torch.optim.SGD", "lr": 0.1}, scheduler={"_target_": "x"}, mixup={"enabled": False})
    module = TaggingModule(**hp)
    wrapped = {k.replace("model.", "model._orig_mod.", 1): v for k, v in module.state_dict().items()}  # torch.compile's keys
    torch.save({"hyper_parameters": hp, "state_dict": wrapped}, tmp_path / "c.ckpt")
    loaded = TaggingModule.from_checkpoint(tmp_path / "c.ckpt")
    x = torch.randn(2, 3, 64, 150)
    assert torch.allclose(loaded(x), module.eval()(x))


def test_a_job_that_crashed_after_predicting_is_finished_on_rerun(swept_project):
    """The state a crash between writing predictions and closing the MLflow run leaves: run.json not
    complete, the run RUNNING. A rerun finishes it (artifacts, FINISHED) without training again."""
    job = swept_project.runs_dir / "cnn_small" / "none" / "default" / "fold_1"
    info = json.loads((job / "run.json").read_text())
    client = MlflowClient(swept_project.tracking_uri)
    client.update_run(info["mlflow_run_id"], status="RUNNING")
    (job / "run.json").write_text(json.dumps({**info, "complete": False}))
    ckpt_mtime = (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    res = swept_project.run("train.py", "fold=1", *TINY_TRAIN)
    assert "not closed; finishing it" in res.stderr + res.stdout
    assert json.loads((job / "run.json").read_text())["complete"]
    assert client.get_run(info["mlflow_run_id"]).info.status == "FINISHED"
    assert (job / "checkpoints" / "best.ckpt").stat().st_mtime_ns == ckpt_mtime
    arts = {a.path for a in client.list_artifacts(info["mlflow_run_id"])}
    assert {"run.json", "oof.npz", "test.npz", "config.yaml"} <= arts
