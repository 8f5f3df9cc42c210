"""The Trainer of a job and its callbacks and loggers, each built by ``hydra.utils.instantiate`` from the
``trainer``, ``callbacks`` and ``logger`` config groups (conf/). What the job's on-disk contract fixes is
set here: checkpoints go to <job_dir>/checkpoints (fstag.runs.run_dir), the MLflow logger writes into the job's
own run, the best epoch's validation metrics are recorded for run.json, and stage=retrain_val trains for
``retrain.max_epochs`` with early-stopping patience ``retrain.patience``. A retrain_val job trains on its
fold and "validates" on rows its parent trained on, so its metrics are ``fit_*`` (``fit_acc1``, ``fit_map3``)
and its checkpoint and early stopping monitor the ``fit_*`` twin of ``task.monitor``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fstag.core.config import to_plain
from fstag.runs.run_dir import CHECKPOINT_DIR
from fstag.train.checkpoint_io import checkpoint_io
from fstag.train.timings import EpochTimes

CHECKPOINT_KEYS = ("model_checkpoint", "last_checkpoint")


class BestEpochMetrics(pl.Callback):
    """The validation metrics (``<prefix>_*``) of the epoch the best checkpoint comes from (the best by
    ``monitor``, as ModelCheckpoint picks it: strictly better). Saved in checkpoints, so a resumed job keeps them."""

    def __init__(self, monitor: str = "val_acc1", prefix: str = "val"):
        self.monitor, self.prefix, self.metrics = monitor, prefix, {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()
             if k.startswith(f"{self.prefix}_") and torch.as_tensor(v).numel() == 1}
        cur, best = m.get(self.monitor), self.metrics.get(self.monitor)
        if cur is not None and np.isfinite(cur) and (best is None or cur > best):
            self.metrics = m

    def state_dict(self) -> dict:
        return {"metrics": dict(self.metrics)}

    def load_state_dict(self, state_dict) -> None:
        self.metrics = dict(state_dict.get("metrics", {}))


def _entries(group: DictConfig | None) -> dict[str, DictConfig]:
    """The non-null entries of a callbacks/logger group that name a ``_target_``."""
    if not group:
        return {}
    out = {}
    for key, node in group.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"{key}: each entry of the callbacks/logger groups needs a _target_ (or null to drop it)")
        out[str(key)] = node
    return out


def is_retrain(cfg: DictConfig) -> bool:
    return str(cfg.stage.name) == "retrain_val"


def metric_prefix(cfg: DictConfig) -> str:
    """``val``, or ``fit`` for a retrain_val job (its validation rows are rows its parent trained on)."""
    return "fit" if is_retrain(cfg) else "val"


def monitored(name: str | None, prefix: str) -> str | None:
    """A monitor name for this job's metrics: ``val_acc1`` -> ``fit_acc1`` when ``prefix`` is ``fit``."""
    if name is None or prefix == "val" or not str(name).startswith("val_"):
        return name
    return f"{prefix}_{str(name)[len('val_'):]}"


def build_callbacks(cfg: DictConfig, job_dir: Path) -> list[pl.Callback]:
    """``callbacks`` group -> Lightning callbacks, plus BestEpochMetrics and EpochTimes (what run.json reports)."""
    from pytorch_lightning.callbacks import EarlyStopping, ProgressBar

    callbacks: list[pl.Callback] = []
    prefix = metric_prefix(cfg)
    for key, node in _entries(cfg.get("callbacks")).items():
        kwargs: dict[str, Any] = {}
        if key in CHECKPOINT_KEYS:
            kwargs["dirpath"] = str(job_dir / CHECKPOINT_DIR)
        if key == "model_checkpoint" and "save_weights_only" not in node:
            kwargs["save_weights_only"] = bool((cfg.get("checkpoint") or {}).get("best_weights_only", True))
        if prefix != "val" and node.get("monitor"):  # retrain_val: the fit_* twin of the monitored metric
            kwargs["monitor"] = monitored(str(node.monitor), prefix)
        cb = instantiate(node, **kwargs)
        if isinstance(cb, EarlyStopping) and is_retrain(cfg):
            cb.patience = int(cfg.retrain.patience)
        if isinstance(cb, ProgressBar) and not cfg.trainer.get("enable_progress_bar", True):
            continue
        callbacks.append(cb)
    monitor = str(cfg.callbacks.model_checkpoint.monitor) if cfg.callbacks.get("model_checkpoint") \
        else str(OmegaConf.select(cfg, "task.monitor", default="val_acc1"))
    callbacks.append(BestEpochMetrics(monitored(monitor, prefix), prefix))
    callbacks.append(EpochTimes())  # run.json's timings (fstag.train.timings)
    return callbacks


def build_loggers(cfg: DictConfig, run_id: str | None) -> list:
    """``logger`` group -> Lightning loggers; the MLflow one logs into the job's run ``run_id``."""
    from hydra.utils import get_class

    from fstag.runs.tracking import JobMLFlowLogger

    loggers = []
    for node in _entries(cfg.get("logger")).values():
        cls = get_class(str(node._target_))
        loggers.append(instantiate(node, run_id=run_id) if issubclass(cls, JobMLFlowLogger) else instantiate(node))
    return loggers


def on_gpu(cfg: DictConfig) -> bool:
    return torch.cuda.is_available() and str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda")


def channels_last(cfg: DictConfig, gpu: bool) -> bool:
    """Whether the job trains in the channels_last memory format: ``gpu.channels_last`` on a GPU,
    ``cpu.channels_last`` on the CPU."""
    return bool(cfg.gpu.channels_last if gpu else (cfg.get("cpu") or {}).get("channels_last", False))


def build_trainer(cfg: DictConfig, job_dir: Path, callbacks: list, loggers: list) -> pl.Trainer:
    """``trainer`` group -> pl.Trainer; precision null = bf16-mixed on a GPU, 32-true otherwise; checkpoints
    written as ``checkpoint.*`` says (fstag.train.checkpoint_io) unless ``trainer.plugins`` names a CheckpointIO."""
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    if t.get("precision") is None:
        t["precision"] = "bf16-mixed" if on_gpu(cfg) else "32-true"
    if is_retrain(cfg):
        t["max_epochs"], t["min_epochs"] = int(cfg.retrain.max_epochs), int(cfg.retrain.min_epochs)
    plugins = list(t.pop("plugins", None) or [])
    if not any(isinstance(p, dict) and "CheckpointIO" in str(p.get("_target_", "")) for p in plugins):
        plugins.append(checkpoint_io(to_plain(cfg.get("checkpoint"))))  # checkpoint.*: how they are written
    return instantiate(t, default_root_dir=str(job_dir), callbacks=callbacks, logger=loggers or False, plugins=plugins)
