"""One training job (arch x fold x aug x stage): data of the fold, Lightning fit with MLflow tracking,
best checkpoint by val_acc1, then OOF and TTA test predictions in the job directory (fstag.run_dir)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from fstag.augment import pad_value_of
from fstag.config import flatten, to_plain
from fstag.datamodule import FoldDataModule
from fstag.distributed import relaunch_ranks_as_jobs
from fstag.dataset_layout import DatasetLayout
from fstag.fold_data import TrainingSetupError, load_fold_data  # noqa: F401  (TrainingSetupError: re-exported)
from fstag.folds import describe_split, same_split, split_of
from fstag.inference import predict_probs
from fstag.job_identity import check_reuse, differing_keys, format_diff, identity, job_variant, task_overrides, write_identity
from fstag.io_utils import atomic_path, save_npz_atomic, write_json_atomic, write_text_atomic
from fstag.lightning_parts import BestEpochMetrics, build_callbacks, build_loggers, build_trainer, on_gpu
from fstag.lit_module import TaggingModule, plain_state_dict
from fstag.metrics import map_at_3, top1_accuracy
from fstag.reports import REPORTS_DIR, log_class_report
from fstag.run_dir import (
    BEST_CKPT, CHECKPOINT_DIR, CONFIG_YAML, LAST_CKPT, MLFLOW_RUN_DIR_TAG, OOF_NPZ, RUN_JSON, TEST_NPZ, RunDir,
    RunDirError, job_name, mlflow_run_name,
)
from fstag.tracking import open_job_run

log = logging.getLogger(__name__)
MLFLOW_RUN_ID_FILE = "mlflow_run_id"


def state_digest(state_dict: dict) -> str:
    """sha256 over a state dict's tensors in key order (which weights a retrain_val job started from)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _previous_init_from(job_dir: Path):
    """A resumed retrain_val job started from its parent earlier: keep what the first start recorded."""
    p = job_dir / "init_from.json"
    return json.loads(p.read_text()) if p.is_file() else None


def optimized_value(info: dict, metric: str) -> float:
    """The value train.py returns: ``best_<metric>`` of a finished job's run.json (NaN when absent)."""
    value = (info.get("best_metrics") or {}).get(str(metric))
    if value is None and str(metric) == "val_acc1":
        value = info.get("best_val_acc1")
    return float("nan") if value is None else float(value)


def _parent_run(cfg: DictConfig, labels: list[str], fkey: str, ident: dict) -> RunDir:
    parent_dir = Path(str(cfg.stage.parent))
    try:
        parent = RunDir.open(parent_dir)
    except RunDirError as exc:
        _, items = job_variant(task_overrides(), "train", str(cfg.data.root))
        extra = "".join(f" {i}" for i in items if "@" not in i)
        raise TrainingSetupError(
            f"stage=retrain_val needs the train run of arch={cfg.arch.name} aug={cfg.aug.name} fold={cfg.fold} "
            f"(variant {parent_dir.parent.name}): looked for {parent_dir / RUN_JSON} and "
            f"{parent_dir / CHECKPOINT_DIR / BEST_CKPT}, not found. "
            f"Train it first: python train.py arch={cfg.arch.name} aug={cfg.aug.name} fold={cfg.fold}{extra}"
        ) from exc
    split = split_of(DatasetLayout(Path(str(cfg.data.root))).train_csv, Path(str(cfg.data.features_dir)),
                     int(cfg.folds.n_splits), int(cfg.folds.seed))
    if not same_split(parent.info.get("fold_split"), split):
        raise TrainingSetupError(
            f"retrain_val job {cfg.job_dir} uses {describe_split(split)} but its parent run {parent_dir} was trained "
            f"on {describe_split(parent.info.get('fold_split'))}: its validation fold is other rows; retrain_val "
            "with the parent's folds.* settings and train.csv, or train a parent on this split")
    saved = (parent.info.get("identity") or {})
    diff = differing_keys(saved, ident, ignore=("stage", "retrain")) if saved else []
    if diff:
        raise TrainingSetupError(
            f"parent run {parent_dir} was trained with another config: {format_diff(diff)}; retrain it, "
            "or retrain_val with the settings it was trained with")
    if not parent.complete or not parent.best_checkpoint.is_file():
        raise TrainingSetupError(f"parent run {parent_dir} is not complete (no {parent.best_checkpoint}); finish it first")
    if parent.labels != labels or parent.feature_key != fkey:
        raise TrainingSetupError(f"parent run {parent_dir} was trained with another label set or feature config")
    return parent


def _predict(module: TaggingModule, store, fnames: list[str], cfg: DictConfig, device) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(probs, missing fnames, silent mask)`` of cached clips, by ``predict.mode`` (fstag.inference)."""
    clips = [store[store.index_of(f)] if f in store else None for f in fnames]
    missing = [f for f, c in zip(fnames, clips) if c is None]
    probs, silent = predict_probs(
        module.model.to(device), clips, fnames, crop_frames=int(cfg.loader.crop_frames), aug=to_plain(cfg.aug),
        mode=str(cfg.predict.get("mode", "crops")), pad_value=pad_value_of(cfg.loader), n_passes=int(cfg.predict.tta),
        hop_frames=cfg.predict.get("hop_frames"), seed=int(cfg.predict.seed),
        batch_size=int(cfg.predict.batch_size), device=device, num_classes=len(module.labels),
    )
    return probs, missing, silent


def _build_module(cfg: DictConfig, labels: list[str], train_store, from_parent: bool = False) -> TaggingModule:
    """The LightningModule of the job's recipe; band statistics (arch.input_norm=band_stats) come from
    the feature cache's train split and travel in the checkpoint's hyper-parameters. A retrain_val job
    (``from_parent``) loads every weight from its parent, so its backbone is built without initial weights
    (no download, no arch.pretrained_path: its hparams say pretrained=false)."""
    from fstag.band_stats import load_or_compute_band_stats
    from fstag.batch_aug import frame_rate_of
    from fstag.lit_module import without_initial_weights
    from fstag.models import input_norm_of

    arch = to_plain(cfg.arch)
    if from_parent:
        arch = without_initial_weights(arch)
    stats = load_or_compute_band_stats(train_store, train_store.path.parent) if input_norm_of(arch) == "band_stats" else None
    aug = to_plain(cfg.aug)
    return TaggingModule(
        arch=arch, labels=labels, optimizer=to_plain(cfg.optimizer), scheduler=to_plain(cfg.scheduler),
        mixup=to_plain(cfg.mixup), gpu=to_plain(cfg.gpu), loss=to_plain(cfg.get("loss")),
        specaug=to_plain(cfg.get("specaug")), recording=aug.get("recording"), mixstyle=to_plain(cfg.get("mixstyle")),
        noise=to_plain(cfg.get("noise")), band_stats=stats, frame_rate=frame_rate_of(to_plain(cfg.features)),
    )


def _check_predict_config(cfg: DictConfig) -> None:
    from fstag.inference import MODES

    mode, hop = str(cfg.predict.get("mode", "crops")), cfg.predict.get("hop_frames")
    if mode not in MODES:
        raise TrainingSetupError(f"predict.mode={mode!r}: choose one of {', '.join(MODES)}")
    if hop is not None and int(hop) <= 0:
        raise TrainingSetupError(f"predict.hop_frames={hop}: a positive number of frames (or null: half a crop)")


def global_rank() -> int:
    """This process's rank in a distributed job (0 alone). Lightning reads it from the environment a
    launcher sets (LOCAL_RANK/NODE_RANK for its own DDP processes, SLURM_PROCID, ...) before the Trainer exists."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Run one job to completion (or resume it); return its run.json contents. Under DDP every process
    trains; rank 0 alone writes the job's files and its one MLflow run (other ranks return ``{}``)."""
    job_dir = Path(str(cfg.job_dir))
    job_dir.mkdir(parents=True, exist_ok=True)
    stage, fold = str(cfg.stage.name), int(cfg.fold)
    lead = global_rank() == 0
    variant, items = job_variant(task_overrides(), stage, str(cfg.data.root))
    if variant != job_dir.parent.name and lead:
        log.warning("job_dir %s does not end in the variant %s/fold_<k> of this job", job_dir, variant)
    ident = identity(cfg)
    if not cfg.force:
        check_reuse(job_dir, ident)  # JobConfigMismatch names the differing keys
    existing = job_dir / RUN_JSON
    if existing.is_file() and not cfg.force and lead:
        info = RunDir.open(job_dir).info
        if info.get("complete"):
            log.info("%s is complete (val_acc1 %.4f); nothing to do (force=true retrains)", job_dir, info.get("best_val_acc1", float("nan")))
            return info
        log.info("%s: predictions were written but the MLflow run was not closed; finishing it", job_dir)
        return _finalize(job_dir, info)
    if cfg.force and lead:  # start over: new checkpoints and a new MLflow run
        shutil.rmtree(job_dir / CHECKPOINT_DIR, ignore_errors=True)
        existing.unlink(missing_ok=True)
        (job_dir / MLFLOW_RUN_ID_FILE).unlink(missing_ok=True)

    _check_predict_config(cfg)  # before training, not after it
    pl.seed_everything(int(cfg.seed), workers=True)
    data = load_fold_data(cfg)
    labels, fkey = data.labels, data.feature_key
    if lead:
        write_identity(job_dir, ident, variant, items)
    parent = _parent_run(cfg, labels, fkey, ident) if stage == "retrain_val" else None

    module = _build_module(cfg, labels, data.train_store, from_parent=parent is not None)
    init_from = None
    last = job_dir / CHECKPOINT_DIR / LAST_CKPT
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if parent is not None and resume_from is None:
        state = plain_state_dict(torch.load(parent.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"])
        module.load_state_dict(state)
        init_from = {"checkpoint": str(parent.best_checkpoint), "state_sha256": state_digest(state)}
        if lead:
            write_json_atomic(job_dir / "init_from.json", init_from)
        log.info("retrain_val: starting from %s", parent.best_checkpoint)
    gpu = on_gpu(cfg)
    if gpu and cfg.gpu.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if cfg.gpu.compile:
        module.compile_model(str(cfg.gpu.get("compile_backend", "inductor")))
    dm = FoldDataModule(data.train_store, data.train_rows, data.val_rows, to_plain(cfg.loader), to_plain(cfg.aug), gpu)

    run_name = mlflow_run_name(str(cfg.arch.name), str(cfg.aug.name), fold, stage, variant)
    id_file = job_dir / MLFLOW_RUN_ID_FILE
    if lead:
        run_id = open_job_run(str(cfg.mlflow.tracking_uri), str(cfg.mlflow.experiment), str(cfg.mlflow.artifact_location),
                              id_file, run_name, _run_tags(cfg, job_dir, variant, items), flatten(to_plain(cfg)))
        # a job that fails from here on leaves its MLflow run FAILED: fstag.callbacks.MlflowSweepCallback.on_job_end
        write_text_atomic(job_dir / CONFIG_YAML, OmegaConf.to_yaml(cfg, resolve=True))
    else:  # other ranks log nothing (Lightning's loggers are rank-0 only)
        run_id = id_file.read_text().strip() if id_file.is_file() else None
    log.info("%s: %d train rows, %d val rows, %d classes%s", run_name, len(data.train_rows), len(data.val_rows), len(labels),
             f" (resuming from {resume_from})" if resume_from else "")
    trainer = build_trainer(cfg, job_dir, build_callbacks(cfg, job_dir), build_loggers(cfg, run_id))
    relaunch_ranks_as_jobs()  # a multirun job's extra DDP ranks re-run this job, not the sweep
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    if not trainer.is_global_zero:
        return {}

    best = job_dir / CHECKPOINT_DIR / BEST_CKPT
    ckpt_file = best if best.is_file() else last
    if ckpt_file.is_file():
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        module.load_state_dict(plain_state_dict(ckpt["state_dict"]))
    else:  # no checkpoint written (trainer.fast_dev_run, debug=fdr): the weights in memory
        ckpt = {}
    best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    best_acc = float(best_score) if best_score is not None else float("nan")
    best_metrics = next((c.metrics for c in trainer.callbacks if isinstance(c, BestEpochMetrics)), {})
    device = torch.device("cuda" if gpu else "cpu")
    module = module.to(device).eval()

    layout, test_store, train_store = data.layout, data.test_store, data.train_store
    test_fnames = layout.split_fnames("test")
    test_probs, test_missing, test_silent = _predict(module, test_store, test_fnames, cfg, device)
    missing = set(test_missing)
    save_npz_atomic(job_dir / TEST_NPZ, fnames=np.array(test_fnames), probs=test_probs,
                    missing=np.array([f in missing for f in test_fnames]), silent=test_silent)
    if parent is None:
        val_fnames = data.fold_fnames
        oof_probs, _, _ = _predict(module, train_store, val_fnames, cfg, device)
        oof_targets = data.val_rows.targets
        save_npz_atomic(job_dir / OOF_NPZ, fnames=np.array(val_fnames), probs=oof_probs, targets=oof_targets)
        oof_source = str(job_dir)
    else:
        with atomic_path(job_dir / OOF_NPZ) as tmp:
            shutil.copyfile(parent.path / OOF_NPZ, tmp)
        oof = parent.oof()
        oof_probs, oof_targets = oof.probs, oof.targets
        oof_source = str(parent.path)
    oof_map3, oof_acc1 = map_at_3(oof_probs, oof_targets), top1_accuracy(oof_probs, oof_targets)

    info = {
        "name": job_name(fold, stage), "arch": str(cfg.arch.name), "aug": str(cfg.aug.name), "fold": fold, "stage": stage,
        "variant": variant, "overrides": items, "identity": ident, "best_metrics": best_metrics,
        "init_from": init_from if init_from is not None else (_previous_init_from(job_dir) if parent is not None else None),
        "labels": labels, "feature_key": fkey, "features": to_plain(cfg.features), "data_name": str(cfg.data.name),
        "data_root": str(cfg.data.root), "fold_split": split_of(layout.train_csv, Path(str(cfg.data.features_dir)),
                                                                int(cfg.folds.n_splits), int(cfg.folds.seed)),
        "mlflow_run_id": run_id, "mlflow_tracking_uri": str(cfg.mlflow.tracking_uri), "mlflow_run_name": run_name,
        "best_val_acc1": best_acc, "oof_map3": oof_map3, "oof_acc1": oof_acc1, "oof_source": oof_source,
        "epochs_trained": int(trainer.current_epoch), "best_epoch": int(ckpt.get("epoch", -1)), "test_missing": test_missing,
        "world_size": int(trainer.world_size), "complete": False,
    }
    # predictions are on disk: from here a crash is repaired by rerunning (the run is finished, not retrained)
    write_json_atomic(job_dir / RUN_JSON, info)
    return _finalize(job_dir, info)


def _run_tags(cfg: DictConfig, job_dir: Path, variant: str, items: list[str]) -> dict[str, str]:
    tags = {MLFLOW_RUN_DIR_TAG: str(job_dir), "fstag.arch": str(cfg.arch.name), "fstag.aug": str(cfg.aug.name),
            "fstag.fold": str(cfg.fold), "fstag.stage": str(cfg.stage.name), "fstag.variant": variant,
            "fstag.exp": str(cfg.exp)}
    # each variant override as a tag (and, through the flat config, as a param of that name)
    tags.update({f"fstag.override.{i.split('=', 1)[0]}": (i.split("=", 1) + [""])[1] for i in items if "=" in i})
    tags.update({"fstag.override.data": i.split("@", 1)[1] for i in items if i.startswith("data@")})
    return tags


def _finalize(job_dir: Path, info: dict) -> dict:
    """Log a predicted job's metrics, artifacts and per-class report to its MLflow run, close the run
    FINISHED, and only then mark run.json complete (a crash in between is finished by the next rerun)."""
    from mlflow.tracking import MlflowClient

    run = RunDir(job_dir, info)
    run_id, run_name = str(info["mlflow_run_id"]), str(info.get("mlflow_run_name") or run.name)
    client = MlflowClient(str(info["mlflow_tracking_uri"]))
    client.update_run(run_id, status="RUNNING")
    best_acc = float(info["best_val_acc1"])
    if np.isfinite(best_acc):
        client.log_metric(run_id, "best_val_acc1", best_acc)
    for k, v in (info.get("best_metrics") or {}).items():  # the best epoch's validation metrics: best_val_map3, ...
        if k != "val_acc1" and np.isfinite(v):
            client.log_metric(run_id, f"best_{k}", v)
    client.log_metric(run_id, "oof_map3", float(info["oof_map3"]))
    client.log_metric(run_id, "oof_acc1", float(info["oof_acc1"]))
    done = {**info, "complete": True}
    client.log_dict(run_id, done, RUN_JSON)  # the artifact is the run.json this job ends with
    for name in (CONFIG_YAML, OOF_NPZ, TEST_NPZ):
        client.log_artifact(run_id, str(job_dir / name))
    best = job_dir / CHECKPOINT_DIR / BEST_CKPT
    if best.is_file():  # checkpoints/best.ckpt: predict.py from the tracking server alone (fstag.members)
        client.log_artifact(run_id, str(best), CHECKPOINT_DIR)
    if (job_dir / ".hydra").is_dir():
        client.log_artifacts(run_id, str(job_dir / ".hydra"), "hydra")
    # per-class OOF report (a retrain_val job reports the OOF it carries, its parent's, as its oof_map3 does)
    oof = run.oof()
    log_class_report(client, run_id, oof.probs, oof.targets, list(info["labels"]), job_dir / REPORTS_DIR, title=run_name)
    client.set_terminated(run_id, "FINISHED")
    write_json_atomic(job_dir / RUN_JSON, done)
    log.info("%s done: best val_acc1 %.4f, OOF MAP@3 %.4f -> %s", run_name, best_acc, float(info["oof_map3"]), job_dir)
    return done
