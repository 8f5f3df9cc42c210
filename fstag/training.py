"""One training job (arch x fold x aug x stage): data of the fold, Lightning fit with MLflow tracking,
best checkpoint by val_acc1, then OOF and TTA test predictions in the job directory (fstag.run_dir)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from fstag.config import flatten, to_plain
from fstag.datamodule import FoldDataModule, Rows
from fstag.dataset_layout import DatasetLayout, labels_from_train, read_train_csv
from fstag.folds import load_or_create_folds
from fstag.inference import predict_probs
from fstag.io_utils import atomic_path, save_npz_atomic, write_json_atomic, write_text_atomic
from fstag.lit_module import TaggingModule
from fstag.metrics import map_at_3, top1_accuracy
from fstag.run_dir import (
    BEST_CKPT, CHECKPOINT_DIR, CONFIG_YAML, LAST_CKPT, MLFLOW_RUN_DIR_TAG, OOF_NPZ, RUN_JSON, TEST_NPZ, RunDir,
    RunDirError,
    job_name, mlflow_run_name,
)
from fstag.tracking import ensure_experiment, log_params_flat, read_parent_run_id

log = logging.getLogger(__name__)
MLFLOW_RUN_ID_FILE = "mlflow_run_id"


class TrainingSetupError(RuntimeError):
    """A job cannot start (missing features, parent checkpoint, ...); the message says what was looked for."""


def _open_features(cfg: DictConfig):
    from fstag.feature_store import FeatureStore, feature_dir
    from fstag.features import FeatureConfig, feature_key

    fcfg = FeatureConfig.from_cfg(to_plain(cfg.features))
    fdir = feature_dir(cfg.data.features_dir, fcfg)
    try:
        train_store = FeatureStore.open(fdir, "train")
        test_store = FeatureStore.open(fdir, "test")
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise TrainingSetupError(
            f"features for data={cfg.data.name} not found in {fdir} ({exc}); "
            f"run `python preprocess.py data={cfg.data.name} data.root={cfg.data.root}` first"
        ) from exc
    return feature_key(fcfg), train_store, test_store


def _rows(df, store, labels: list[str], mask: np.ndarray, unverified_weight: float) -> Rows:
    lab = {l: i for i, l in enumerate(labels)}
    sub = df[mask]
    return Rows(
        index=np.array([store.index_of(f) for f in sub["fname"]], dtype=np.int64),
        targets=np.array([lab[l] for l in sub["label"]], dtype=np.int64),
        weights=np.where(sub["manually_verified"].to_numpy(), 1.0, unverified_weight).astype(np.float32),
    )


def _parent_run(cfg: DictConfig, labels: list[str], fkey: str) -> RunDir:
    parent_dir = Path(str(cfg.stage.parent))
    try:
        parent = RunDir.open(parent_dir)
    except RunDirError as exc:
        raise TrainingSetupError(
            f"stage=retrain_val needs the train run of arch={cfg.arch.name} aug={cfg.aug.name} fold={cfg.fold}: "
            f"looked for {parent_dir / RUN_JSON} and {parent_dir / CHECKPOINT_DIR / BEST_CKPT}, not found. "
            f"Train it first: python train.py arch={cfg.arch.name} aug={cfg.aug.name} fold={cfg.fold}"
        ) from exc
    if not parent.complete or not parent.best_checkpoint.is_file():
        raise TrainingSetupError(f"parent run {parent_dir} is not complete (no {parent.best_checkpoint}); finish it first")
    if parent.labels != labels or parent.feature_key != fkey:
        raise TrainingSetupError(f"parent run {parent_dir} was trained with another label set or feature config")
    return parent


def _mlflow_logger(cfg: DictConfig, job_dir: Path, run_name: str):
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    uri = str(cfg.mlflow.tracking_uri)
    exp_id = ensure_experiment(uri, str(cfg.mlflow.experiment), str(cfg.mlflow.artifact_location))
    client = MlflowClient(uri)
    id_file = job_dir / MLFLOW_RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    if run_id:
        try:
            client.get_run(run_id)
        except Exception:
            run_id = None
    if not run_id:
        tags = {MLFLOW_RUN_DIR_TAG: str(job_dir), "fstag.arch": str(cfg.arch.name), "fstag.aug": str(cfg.aug.name),
                "fstag.fold": str(cfg.fold), "fstag.stage": str(cfg.stage.name)}
        parent = read_parent_run_id(_sweep_dir())
        if parent:
            tags["mlflow.parentRunId"] = parent
        run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        write_text_atomic(id_file, run_id + "\n")
        log_params_flat(client, run_id, flatten(to_plain(cfg)))
    else:
        client.update_run(run_id, status="RUNNING")
    logger = MLFlowLogger(experiment_name=str(cfg.mlflow.experiment), tracking_uri=uri, run_id=run_id)
    return logger, client, run_id


def _sweep_dir() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return str(hc.sweep.dir) if str(hc.mode) == "RunMode.MULTIRUN" else None


def _on_gpu(cfg: DictConfig) -> bool:
    return torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")


def _trainer(cfg: DictConfig, job_dir: Path, logger, max_epochs: int, min_epochs: int, patience: int) -> pl.Trainer:
    from pytorch_lightning.callbacks import EarlyStopping, GradientAccumulationScheduler, LearningRateMonitor, ModelCheckpoint

    t = cfg.trainer
    precision = t.precision or ("bf16-mixed" if _on_gpu(cfg) else "32-true")
    ckpt_dir = job_dir / CHECKPOINT_DIR
    callbacks = [
        ModelCheckpoint(dirpath=ckpt_dir, filename=Path(BEST_CKPT).stem, monitor="val_acc1", mode="max",
                        save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False),
        # last.ckpt every epoch, for resuming (Lightning 2.6's save_last only writes it with a new best)
        ModelCheckpoint(dirpath=ckpt_dir, filename=Path(LAST_CKPT).stem, monitor=None, save_top_k=1, every_n_epochs=1,
                        enable_version_counter=False, auto_insert_metric_name=False),
        EarlyStopping(monitor=str(cfg.early_stopping.monitor), mode="max", patience=patience,
                      min_delta=float(cfg.early_stopping.min_delta)),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    accumulate = {int(k): int(v) for k, v in (to_plain(t.accumulate) or {}).items()}
    if accumulate:
        callbacks.append(GradientAccumulationScheduler(scheduling=accumulate))
    return pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, precision=precision, max_epochs=max_epochs, min_epochs=min_epochs,
        logger=logger, callbacks=callbacks, default_root_dir=str(job_dir), log_every_n_steps=int(t.log_every_n_steps),
        gradient_clip_val=t.gradient_clip_val, deterministic=bool(t.deterministic),
        enable_progress_bar=bool(t.enable_progress_bar), num_sanity_val_steps=int(t.num_sanity_val_steps),
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
    )


def _predict(module: TaggingModule, store, fnames: list[str], cfg: DictConfig, device) -> tuple[np.ndarray, list[str]]:
    clips = [store[store.index_of(f)] if f in store else None for f in fnames]
    missing = [f for f, c in zip(fnames, clips) if c is None]
    probs = predict_probs(
        module.model.to(device), clips, crop_frames=int(cfg.loader.crop_frames), aug=to_plain(cfg.aug),
        pad_value=float(cfg.loader.pad_value), n_passes=int(cfg.predict.tta), seed=int(cfg.predict.seed),
        batch_size=int(cfg.predict.batch_size), device=device, num_classes=len(module.labels),
    )
    return probs, missing


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Run one job to completion (or resume it); return its run.json contents."""
    job_dir = Path(str(cfg.job_dir))
    job_dir.mkdir(parents=True, exist_ok=True)
    stage, fold = str(cfg.stage.name), int(cfg.fold)
    existing = job_dir / RUN_JSON
    if existing.is_file() and not cfg.force:
        info = RunDir.open(job_dir).info
        if info.get("complete"):
            log.info("%s is complete (val_acc1 %.4f); nothing to do (force=true retrains)", job_dir, info.get("best_val_acc1", float("nan")))
            return info
    if cfg.force:  # start over: new checkpoints and a new MLflow run
        shutil.rmtree(job_dir / CHECKPOINT_DIR, ignore_errors=True)
        existing.unlink(missing_ok=True)
        (job_dir / MLFLOW_RUN_ID_FILE).unlink(missing_ok=True)

    pl.seed_everything(int(cfg.seed), workers=True)
    fkey, train_store, test_store = _open_features(cfg)  # first: its error says to run preprocess.py
    layout = DatasetLayout(Path(str(cfg.data.root)))
    train_df = read_train_csv(layout.train_csv)
    labels = labels_from_train(train_df)
    df = load_or_create_folds(train_df, Path(str(cfg.data.features_dir)), int(cfg.folds.n_splits), int(cfg.folds.seed))
    if not 0 <= fold < int(cfg.folds.n_splits):
        raise TrainingSetupError(f"fold={fold} is out of range: folds.n_splits={cfg.folds.n_splits}")
    absent = ~df["fname"].isin(set(train_store.fnames))
    if absent.any():
        log.warning("%d train.csv rows have no features (unreadable or missing audio; see the preprocess report) "
                    "and are left out, e.g. %s", int(absent.sum()), df["fname"][absent].iloc[0])
        df = df[~absent].reset_index(drop=True)
    in_fold = (df["fold"] == fold).to_numpy()
    verified = df["manually_verified"].to_numpy(dtype=bool)
    use_unver = bool(cfg.data.use_unverified)
    uw = float(cfg.data.unverified_weight)
    if stage == "retrain_val":
        parent = _parent_run(cfg, labels, fkey)
        train_mask, val_mask = in_fold & (verified | use_unver), ~in_fold
        max_epochs, min_epochs, patience = int(cfg.retrain.max_epochs), int(cfg.retrain.min_epochs), int(cfg.retrain.patience)
    else:
        parent = None
        train_mask, val_mask = ~in_fold & (verified | use_unver), in_fold
        max_epochs, min_epochs, patience = int(cfg.trainer.max_epochs), int(cfg.trainer.min_epochs), int(cfg.early_stopping.patience)
    train_rows = _rows(df, train_store, labels, train_mask, uw)
    val_rows = _rows(df, train_store, labels, val_mask, uw)

    module = TaggingModule(arch=to_plain(cfg.arch), labels=labels, optimizer=to_plain(cfg.optimizer),
                           scheduler=to_plain(cfg.scheduler), mixup=to_plain(cfg.mixup), gpu=to_plain(cfg.gpu))
    last = job_dir / CHECKPOINT_DIR / LAST_CKPT
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if parent is not None and resume_from is None:
        state = torch.load(parent.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        log.info("retrain_val: starting from %s", parent.best_checkpoint)
    on_gpu = _on_gpu(cfg)
    if on_gpu and cfg.gpu.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if on_gpu and cfg.gpu.compile:
        module.model = torch.compile(module.model)
    dm = FoldDataModule(train_store, train_rows, val_rows, to_plain(cfg.loader), to_plain(cfg.aug), on_gpu)

    run_name = mlflow_run_name(str(cfg.arch.name), str(cfg.aug.name), fold, stage)
    logger, client, run_id = _mlflow_logger(cfg, job_dir, run_name)
    write_text_atomic(job_dir / CONFIG_YAML, OmegaConf.to_yaml(cfg, resolve=True))
    log.info("%s: %d train rows, %d val rows, %d classes%s", run_name, len(train_rows), len(val_rows), len(labels),
             f" (resuming from {resume_from})" if resume_from else "")
    trainer = _trainer(cfg, job_dir, logger, max_epochs, min_epochs, patience)
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)

    best = job_dir / CHECKPOINT_DIR / BEST_CKPT
    ckpt = torch.load(best if best.is_file() else last, map_location="cpu", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    best_score = trainer.checkpoint_callback.best_model_score  # the first ModelCheckpoint: val_acc1
    best_acc = float(best_score) if best_score is not None else float("nan")
    device = torch.device("cuda" if on_gpu else "cpu")

    test_fnames = layout.split_fnames("test")
    test_probs, test_missing = _predict(module, test_store, test_fnames, cfg, device)
    missing = set(test_missing)
    save_npz_atomic(job_dir / TEST_NPZ, fnames=np.array(test_fnames), probs=test_probs,
                    missing=np.array([f in missing for f in test_fnames]))
    if parent is None:
        val_fnames = df["fname"][in_fold].tolist()
        oof_probs, _ = _predict(module, train_store, val_fnames, cfg, device)
        oof_targets = val_rows.targets
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
        "labels": labels, "feature_key": fkey, "features": to_plain(cfg.features), "data_name": str(cfg.data.name),
        "data_root": str(cfg.data.root), "mlflow_run_id": run_id, "mlflow_tracking_uri": str(cfg.mlflow.tracking_uri),
        "best_val_acc1": best_acc, "oof_map3": oof_map3, "oof_acc1": oof_acc1, "oof_source": oof_source,
        "epochs_trained": int(trainer.current_epoch), "best_epoch": int(ckpt.get("epoch", -1)), "test_missing": test_missing, "complete": True,
    }
    write_json_atomic(job_dir / RUN_JSON, info)
    client.log_metric(run_id, "best_val_acc1", best_acc)
    client.log_metric(run_id, "oof_map3", oof_map3)
    client.log_metric(run_id, "oof_acc1", oof_acc1)
    for name in (RUN_JSON, CONFIG_YAML, OOF_NPZ, TEST_NPZ):
        client.log_artifact(run_id, str(job_dir / name))
    if (job_dir / ".hydra").is_dir():
        client.log_artifacts(run_id, str(job_dir / ".hydra"), "hydra")
    client.set_terminated(run_id, "FINISHED")
    log.info("%s done: best val_acc1 %.4f, OOF MAP@3 %.4f -> %s", run_name, best_acc, oof_map3, job_dir)
    return info
