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
from fstag.datamodule import FoldDataModule, Rows
from fstag.dataset_layout import DatasetLayout, labels_from_train, read_train_csv
from fstag.folds import load_or_create_folds
from fstag.inference import predict_probs
from fstag.job_identity import check_reuse, differing_keys, format_diff, identity, job_variant, task_overrides, write_identity
from fstag.io_utils import atomic_path, save_npz_atomic, write_json_atomic, write_text_atomic
from fstag.lit_module import TaggingModule
from fstag.metrics import map_at_3, top1_accuracy
from fstag.run_dir import (
    BEST_CKPT, CHECKPOINT_DIR, CONFIG_YAML, LAST_CKPT, MLFLOW_RUN_DIR_TAG, OOF_NPZ, RUN_JSON, TEST_NPZ, RunDir,
    RunDirError,
    job_name, mlflow_run_name,
)
from fstag.tracking import ensure_experiment, log_params_flat, parent_run_id

log = logging.getLogger(__name__)
MLFLOW_RUN_ID_FILE = "mlflow_run_id"


class TrainingSetupError(RuntimeError):
    """A job cannot start (missing features, parent checkpoint, ...); the message says what was looked for."""


class _BestEpochMetrics(pl.Callback):
    """The validation metrics of the epoch the best checkpoint comes from (the best by ``monitor``, as
    ModelCheckpoint picks it: strictly better). Saved in checkpoints, so a resumed job keeps them."""

    def __init__(self, monitor: str = "val_acc1"):
        self.monitor, self.metrics = monitor, {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_") and torch.as_tensor(v).numel() == 1}
        cur, best = m.get(self.monitor), self.metrics.get(self.monitor)
        if cur is not None and np.isfinite(cur) and (best is None or cur > best):
            self.metrics = m

    def state_dict(self) -> dict:
        return {"metrics": dict(self.metrics)}

    def load_state_dict(self, state_dict) -> None:
        self.metrics = dict(state_dict.get("metrics", {}))


def _mlflow_logger_class():
    from pytorch_lightning.loggers import MLFlowLogger

    class ParamsOnceMLFlowLogger(MLFlowLogger):
        """The job logs its resolved config once as '.'-separated params; Lightning's hyper-parameter
        logging (the module's hparams, '/'-flattened) would duplicate them under other names."""

        def log_hyperparams(self, params) -> None:
            return None

    return ParamsOnceMLFlowLogger


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
        verified=sub["manually_verified"].to_numpy().astype(bool),
    )


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


def _mlflow_logger(cfg: DictConfig, job_dir: Path, run_name: str, variant: str, items: list[str]):
    from mlflow.tracking import MlflowClient

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
                "fstag.fold": str(cfg.fold), "fstag.stage": str(cfg.stage.name), "fstag.variant": variant,
                "fstag.exp": str(cfg.exp)}
        # each variant override as a tag (and, through the flat config below, as a param of that name)
        tags.update({f"fstag.override.{i.split('=', 1)[0]}": (i.split("=", 1) + [""])[1] for i in items if "=" in i})
        tags.update({"fstag.override.data": i.split("@", 1)[1] for i in items if i.startswith("data@")})
        parent = parent_run_id()
        if parent:
            tags["mlflow.parentRunId"] = parent
        run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
        write_text_atomic(id_file, run_id + "\n")
        log_params_flat(client, run_id, flatten(to_plain(cfg)))
    else:
        client.update_run(run_id, status="RUNNING")
    logger = _mlflow_logger_class()(experiment_name=str(cfg.mlflow.experiment), tracking_uri=uri, run_id=run_id)
    return logger, client, run_id


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
        _BestEpochMetrics("val_acc1"),
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
        pad_value=pad_value_of(cfg.loader), n_passes=int(cfg.predict.tta), seed=int(cfg.predict.seed),
        batch_size=int(cfg.predict.batch_size), device=device, num_classes=len(module.labels),
    )
    return probs, missing


def _build_module(cfg: DictConfig, labels: list[str], train_store) -> TaggingModule:
    """The LightningModule of the job's recipe; band statistics (arch.input_norm=band_stats) come from
    the feature cache's train split and travel in the checkpoint's hyper-parameters."""
    from fstag.band_stats import load_or_compute_band_stats
    from fstag.batch_aug import frame_rate_of
    from fstag.models import input_norm_of

    arch = to_plain(cfg.arch)
    stats = load_or_compute_band_stats(train_store, train_store.path.parent) if input_norm_of(arch) == "band_stats" else None
    aug = to_plain(cfg.aug)
    return TaggingModule(
        arch=arch, labels=labels, optimizer=to_plain(cfg.optimizer), scheduler=to_plain(cfg.scheduler),
        mixup=to_plain(cfg.mixup), gpu=to_plain(cfg.gpu), loss=to_plain(cfg.get("loss")),
        specaug=to_plain(cfg.get("specaug")), recording=aug.get("recording"), mixstyle=to_plain(cfg.get("mixstyle")),
        noise=to_plain(cfg.get("noise")), band_stats=stats, frame_rate=frame_rate_of(to_plain(cfg.features)),
    )


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Run one job to completion (or resume it); return its run.json contents."""
    job_dir = Path(str(cfg.job_dir))
    job_dir.mkdir(parents=True, exist_ok=True)
    stage, fold = str(cfg.stage.name), int(cfg.fold)
    variant, items = job_variant(task_overrides(), stage, str(cfg.data.root))
    if variant != job_dir.parent.name:
        log.warning("job_dir %s does not end in the variant %s/fold_<k> of this job", job_dir, variant)
    ident = identity(cfg)
    if not cfg.force:
        check_reuse(job_dir, ident)  # JobConfigMismatch names the differing keys
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
    write_identity(job_dir, ident, variant, items)
    if stage == "retrain_val":
        parent = _parent_run(cfg, labels, fkey, ident)
        train_mask, val_mask = in_fold & (verified | use_unver), ~in_fold
        max_epochs, min_epochs, patience = int(cfg.retrain.max_epochs), int(cfg.retrain.min_epochs), int(cfg.retrain.patience)
    else:
        parent = None
        train_mask, val_mask = ~in_fold & (verified | use_unver), in_fold
        max_epochs, min_epochs, patience = int(cfg.trainer.max_epochs), int(cfg.trainer.min_epochs), int(cfg.early_stopping.patience)
    train_rows = _rows(df, train_store, labels, train_mask, uw)
    val_rows = _rows(df, train_store, labels, val_mask, uw)

    module = _build_module(cfg, labels, train_store)
    init_from = None
    last = job_dir / CHECKPOINT_DIR / LAST_CKPT
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if parent is not None and resume_from is None:
        state = torch.load(parent.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        init_from = {"checkpoint": str(parent.best_checkpoint), "state_sha256": state_digest(state)}
        write_json_atomic(job_dir / "init_from.json", init_from)
        log.info("retrain_val: starting from %s", parent.best_checkpoint)
    on_gpu = _on_gpu(cfg)
    if on_gpu and cfg.gpu.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if on_gpu and cfg.gpu.compile:
        module.model = torch.compile(module.model)
    dm = FoldDataModule(train_store, train_rows, val_rows, to_plain(cfg.loader), to_plain(cfg.aug), on_gpu)

    run_name = mlflow_run_name(str(cfg.arch.name), str(cfg.aug.name), fold, stage, variant)
    logger, client, run_id = _mlflow_logger(cfg, job_dir, run_name, variant, items)
    # a job that fails from here on leaves its MLflow run FAILED: fstag.callbacks.MlflowSweepCallback.on_job_end
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
    best_metrics = next((c.metrics for c in trainer.callbacks if isinstance(c, _BestEpochMetrics)), {})
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
        "variant": variant, "overrides": items, "identity": ident, "best_metrics": best_metrics,
        "init_from": init_from if init_from is not None else (_previous_init_from(job_dir) if parent is not None else None),
        "labels": labels, "feature_key": fkey, "features": to_plain(cfg.features), "data_name": str(cfg.data.name),
        "data_root": str(cfg.data.root), "mlflow_run_id": run_id, "mlflow_tracking_uri": str(cfg.mlflow.tracking_uri),
        "best_val_acc1": best_acc, "oof_map3": oof_map3, "oof_acc1": oof_acc1, "oof_source": oof_source,
        "epochs_trained": int(trainer.current_epoch), "best_epoch": int(ckpt.get("epoch", -1)), "test_missing": test_missing, "complete": True,
    }
    write_json_atomic(job_dir / RUN_JSON, info)
    client.log_metric(run_id, "best_val_acc1", best_acc)
    for k, v in best_metrics.items():  # the best epoch's validation metrics: best_val_map3, ...
        if k != "val_acc1" and np.isfinite(v):
            client.log_metric(run_id, f"best_{k}", v)
    client.log_metric(run_id, "oof_map3", oof_map3)
    client.log_metric(run_id, "oof_acc1", oof_acc1)
    for name in (RUN_JSON, CONFIG_YAML, OOF_NPZ, TEST_NPZ):
        client.log_artifact(run_id, str(job_dir / name))
    if (job_dir / ".hydra").is_dir():
        client.log_artifacts(run_id, str(job_dir / ".hydra"), "hydra")
    client.set_terminated(run_id, "FINISHED")
    log.info("%s done: best val_acc1 %.4f, OOF MAP@3 %.4f -> %s", run_name, best_acc, oof_map3, job_dir)
    return info
