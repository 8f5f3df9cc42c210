"""The train job (arch x fold x aug x stage), as its steps:

1. :func:`prepare`: the job's directory, variant and identity (stage=self_train: with its folder's and
   teachers' digests); a complete job is skipped, a predicted one finished, a changed config refused
   (``force=true`` starts over);
2. :func:`build`: the fold's data, the retrain_val parent or the self_train pseudo-labels
   (:mod:`fstag.train.self_training`), the LightningModule, its data module, the MLflow run and the Trainer;
3. :func:`fit`: Lightning fits (resuming from ``last.ckpt``), best checkpoint by ``task.monitor`` (val_acc1
   single-label, val_lwlrap multi-label; a retrain_val job's ``fit_*`` twin: it validates on rows it trained on);
4. :func:`predict`: the best weights predict the validation fold (OOF) and the test split with TTA;
5. :func:`record` then :func:`finish`: run.json, then metrics, artifacts and the per-class report in
   MLflow, the run closed FINISHED, and only then run.json marked complete.

The files it writes are the job directory's contract (:mod:`fstag.runs.run_dir`).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from fstag.core.config import flatten, to_plain
from fstag.core.io import atomic_path, save_npz_atomic, write_json_atomic, write_text_atomic
from fstag.core.task import task_of, task_of_cfg
from fstag.evaluate.metrics import task_scores
from fstag.evaluate.reports import REPORTS_DIR, log_class_report
from fstag.infer.predictor import MODES, predict_probs
from fstag.models.augment import pad_value_of
from fstag.models.module import TaggingModule, plain_state_dict
from fstag.runs.identity import check_reuse, identity, job_variant, task_overrides, write_identity
from fstag.runs.launchers import current_lease
from fstag.runs.run_dir import (
    BEST_CKPT, CHECKPOINT_DIR, CONFIG_YAML, LAST_CKPT, MLFLOW_RUN_DIR_TAG, MLFLOW_RUN_ID_FILE, OOF_NPZ, RUN_JSON,
    TEST_NPZ, RunDir, job_name, mlflow_run_name,
)
from fstag.runs.journal import RunJournal, Settings, is_local_id, pending_dir, sync_pending
from fstag.runs.tracking import open_job_run
from fstag.train import self_training
from fstag.train.datamodule import FoldDataModule
from fstag.train.distributed import ranks_end_with_fit, relaunch_ranks_as_jobs
from fstag.train.fold_data import FoldData, TrainingSetupError, load_fold_data
from fstag.train.resident_data import fold_datamodule
from fstag.train.lightning_parts import (BestEpochMetrics, build_callbacks, build_loggers, build_trainer,
                                         channels_last, metric_prefix, on_gpu)
from fstag.train.retrain import parent_run, previous_init_from, start_from_parent
from fstag.train.timings import EpochTimes, StepTimes

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What :func:`prepare` settles about a job before anything is built."""

    cfg: DictConfig
    dir: Path
    stage: str
    fold: int
    lead: bool           # rank 0 (or the only process): writes the files and the MLflow run
    variant: str
    items: list[str]     # the variant's overrides
    ident: dict
    teachers: list[RunDir] = field(default_factory=list)  # stage=self_train: the runs that pseudo-label


@dataclass
class Built:
    """What :func:`build` makes for :func:`fit` and :func:`predict`."""

    data: FoldData
    parent: RunDir | None  # the train run a retrain_val job starts from
    module: TaggingModule
    datamodule: FoldDataModule
    trainer: pl.Trainer
    run_id: str | None
    run_name: str
    resume_from: str | None
    init_from: dict | None
    gpu: bool
    self_train: dict | None = None  # stage=self_train: run.json's record of the pseudo-labels


@dataclass
class JobPredictions:
    test_fnames: list[str]
    test_missing: list[str]
    oof_probs: np.ndarray
    oof_targets: np.ndarray
    oof_source: str


def run_training(cfg: DictConfig) -> dict[str, Any]:
    """Run one job to completion (or resume it); return its run.json contents. Under DDP every process
    trains; rank 0 alone writes the job's files and its one MLflow run (other ranks return ``{}``)."""
    times = StepTimes()
    with times.step("prepare"):
        job, done = prepare(cfg)
    if done is not None:
        return done
    with times.step("build"):
        built = build(job)
    with times.step("fit"):
        fit(built)
    if not built.trainer.is_global_zero:
        return {}
    with times.step("best_weights"):
        best_ckpt = load_best_weights(job, built)
    with times.step("predict"):
        predictions = predict(job, built)
    epochs = next((c for c in built.trainer.callbacks if isinstance(c, EpochTimes)), None)
    return finish(job.dir, record(job, built, predictions, best_ckpt, times.as_dict(epochs)))


def optimized_value(info: dict, metric: str) -> float:
    """The value train.py returns: ``best_<metric>`` of a finished job's run.json (NaN when absent); a
    retrain_val job's validation scores are its parent's (``parent_metrics``), its own being in-sample."""
    value = (info.get("best_metrics") or {}).get(str(metric))
    if value is None:
        value = (info.get("parent_metrics") or {}).get(str(metric))
    if value is None and str(metric) == "val_acc1":
        value = info.get("best_val_acc1")
    return float("nan") if value is None else float(value)


def global_rank() -> int:
    """This process's rank in a distributed job (0 alone). Lightning reads it from the environment a
    launcher sets (LOCAL_RANK/NODE_RANK for its own DDP processes, SLURM_PROCID, ...) before the Trainer exists."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


# 1. prepare -----------------------------------------------------------------------------------------
def prepare(cfg: DictConfig) -> tuple[Job, dict | None]:
    """The job's directory, variant and identity. Returns ``(job, run.json)`` when there is nothing to
    train: a complete job (skipped) or one whose predictions were written but whose MLflow run was not
    closed (finished now). A changed config in a used directory raises JobConfigMismatch."""
    job_dir = Path(str(cfg.job_dir))
    job_dir.mkdir(parents=True, exist_ok=True)
    stage = str(cfg.stage.name)
    lead = global_rank() == 0
    variant, items = job_variant(task_overrides(), stage, str(cfg.data.root))
    if variant != job_dir.parent.name and lead:
        log.warning("job_dir %s does not end in the variant %s/fold_<k> of this job", job_dir, variant)
    teachers = []
    if stage == "self_train":  # its identity holds its folder's and its teachers' content
        self_training.input_folder(cfg)
        teachers = self_training.resolve_teachers(cfg)
    ident = identity(cfg, teachers=[t.path for t in teachers]) if stage == "self_train" else identity(cfg)
    from fstag.data.folds import FoldsError, fold_index

    try:
        fold = fold_index(cfg.fold, str(cfg.folds.get("method", "stratified")), int(cfg.folds.n_splits))
    except FoldsError as exc:
        raise TrainingSetupError(str(exc)) from None
    job = Job(cfg, job_dir, stage, fold, lead, variant, items, ident, teachers)
    if not cfg.force:
        check_reuse(job_dir, job.ident)  # JobConfigMismatch names the differing keys
    existing = job_dir / RUN_JSON
    if existing.is_file() and not cfg.force and lead:
        info = RunDir.open(job_dir).info
        if info.get("complete"):
            log.info("%s is complete (best %s); nothing to do (force=true retrains)", job_dir, _best_text(info))
            return job, info
        log.info("%s: predictions were written but the MLflow run was not closed; finishing it", job_dir)
        return job, finish(job_dir, info)
    if cfg.force and lead:  # start over: new checkpoints and a new MLflow run
        shutil.rmtree(job_dir / CHECKPOINT_DIR, ignore_errors=True)
        existing.unlink(missing_ok=True)
        (job_dir / MLFLOW_RUN_ID_FILE).unlink(missing_ok=True)
    return job, None


# 2. build -------------------------------------------------------------------------------------------
def build(job: Job) -> Built:
    """Data, parent, module, data module, MLflow run and Trainer, in that order (a setup error comes
    before a run is opened)."""
    cfg = job.cfg
    check_predict_config(cfg)  # before training, not after it
    if job.stage == "self_train" and task_of_cfg(cfg).multi_label:
        raise TrainingSetupError("stage=self_train pseudo-labels one label per clip: it needs task=single_label "
                                 f"(this job's task is {task_of_cfg(cfg).name})")
    pl.seed_everything(int(cfg.seed), workers=True)
    data = load_fold_data(cfg)
    if job.lead:
        write_identity(job.dir, job.ident, job.variant, job.items)
    parent = parent_run(cfg, data.labels, data.feature_key, job.ident) if job.stage == "retrain_val" else None

    store, train_rows, st_record = data.train_store, data.train_rows, None
    if job.stage == "self_train":
        self_training.check_teachers(job.teachers, data.labels, data.feature_key)
        pseudo = self_training.pseudo_label(cfg, job.teachers, torch.device("cuda" if on_gpu(cfg) else "cpu"))
        store, train_rows = self_training.with_pseudo_labels(store, train_rows, pseudo, float(cfg.self_train.weight))
        if job.lead:
            st_record = self_training.record(cfg, pseudo, data.labels, job.ident, job.dir)

    module = build_module(cfg, data.labels, data.train_store, from_parent=parent is not None)
    module.metric_prefix = metric_prefix(cfg)  # fit_* for retrain_val: its "validation" rows are in-sample
    if train_rows.start_epoch is not None:  # data.sources.<source>.from_epoch
        module.row_start_epoch = torch.as_tensor(train_rows.start_epoch)
    last = job.dir / CHECKPOINT_DIR / LAST_CKPT
    resume_from = str(last) if cfg.resume and last.is_file() else None
    init_from = None
    if parent is not None and resume_from is None:
        init_from = start_from_parent(module, parent, job.dir, write=job.lead)
        log.info("retrain_val: starting from %s", parent.best_checkpoint)
    gpu = on_gpu(cfg)
    if channels_last(cfg, gpu):
        module = module.to(memory_format=torch.channels_last)
    if cfg.gpu.compile:
        module.compile_model(str(cfg.gpu.get("compile_backend", "inductor")))
    dm = fold_datamodule(store, train_rows, data.val_rows, to_plain(cfg.loader), to_plain(cfg.aug), gpu)  # loader.resident

    run_name = mlflow_run_name(str(cfg.arch.name), str(cfg.aug.name), job.fold, job.stage, job.variant)
    run_id = open_run(job, run_name)
    log.info("%s: %d train rows%s, %d val rows, %d classes%s", run_name, len(train_rows),
             f" ({len(train_rows) - len(data.train_rows)} pseudo-labelled)" if job.stage == "self_train" else "",
             len(data.val_rows), len(data.labels), f" (resuming from {resume_from})" if resume_from else "")
    trainer = build_trainer(cfg, job.dir, build_callbacks(cfg, job.dir), build_loggers(cfg, run_id))
    return Built(data, parent, module, dm, trainer, run_id, run_name, resume_from, init_from, gpu, st_record)


def check_predict_config(cfg: DictConfig) -> None:
    from fstag.infer.predictor import WINDOW_REDUCES
    from fstag.models.losses import LossConfigError, loss_name

    mode, hop = str(cfg.predict.get("mode", "crops")), cfg.predict.get("hop_frames")
    if mode not in MODES:
        raise TrainingSetupError(f"predict.mode={mode!r}: choose one of {', '.join(MODES)}")
    reduce = str(cfg.predict.get("window_reduce", "mean"))
    if reduce not in WINDOW_REDUCES:
        raise TrainingSetupError(f"predict.window_reduce={reduce!r}: choose one of {', '.join(WINDOW_REDUCES)}")
    try:
        loss_name(task_of_cfg(cfg), to_plain(cfg.get("loss")))
    except LossConfigError as exc:
        raise TrainingSetupError(str(exc)) from None
    if hop is not None and int(hop) <= 0:
        raise TrainingSetupError(f"predict.hop_frames={hop}: a positive number of frames (or null: half a crop)")


def build_module(cfg: DictConfig, labels: list[str], train_store, from_parent: bool = False) -> TaggingModule:
    """The LightningModule of the job's recipe; band statistics (arch.input_norm=band_stats) come from
    the feature cache's train split and travel in the checkpoint's hyper-parameters. A retrain_val job
    (``from_parent``) loads every weight from its parent, so its backbone is built without initial weights
    (no download, no arch.pretrained_path: its hparams say pretrained=false)."""
    from fstag.data.band_stats import load_or_compute_band_stats
    from fstag.models.backbones import input_norm_of
    from fstag.models.batch_aug import frame_rate_of
    from fstag.models.module import without_initial_weights

    arch = to_plain(cfg.arch)
    optimizer = to_plain(cfg.optimizer)
    if from_parent:
        arch = without_initial_weights(arch)
        scale = float((cfg.get("retrain") or {}).get("lr_scale", 1.0))
        if scale != 1.0:  # retrain.lr_scale: fine-tune the parent's weights at a fraction of its learning rate
            optimizer["lr"] = float(optimizer["lr"]) * scale
    stats = load_or_compute_band_stats(train_store, train_store.path.parent) if input_norm_of(arch) == "band_stats" else None
    aug = to_plain(cfg.aug)
    return TaggingModule(
        arch=arch, labels=labels, optimizer=optimizer, scheduler=to_plain(cfg.scheduler),
        mixup=to_plain(cfg.mixup), gpu=to_plain(cfg.gpu), cpu=to_plain(cfg.get("cpu")), loss=to_plain(cfg.get("loss")),
        specaug=to_plain(cfg.get("specaug")), recording=aug.get("recording"), mixstyle=to_plain(cfg.get("mixstyle")),
        noise=to_plain(cfg.get("noise")), band_stats=stats, frame_rate=frame_rate_of(to_plain(cfg.features)),
        task=task_of_cfg(cfg).name,
    )


def open_run(job: Job, run_name: str) -> str | None:
    """Open (or reopen, by ``mlflow_run_id``) the job's MLflow run and save its resolved config; other DDP
    ranks only read the run id (Lightning's loggers are rank-0 only)."""
    cfg, id_file = job.cfg, job.dir / MLFLOW_RUN_ID_FILE
    if not job.lead:
        return id_file.read_text().strip() if id_file.is_file() else None
    # the run's calls go to <job_dir>/mlflow_journal.jsonl, sent by a thread: training never waits for the store
    run_id = open_job_run(str(cfg.mlflow.tracking_uri), str(cfg.mlflow.experiment), str(cfg.mlflow.artifact_location),
                          id_file, run_name, run_tags(job), flatten(to_plain(cfg)),
                          settings=Settings.of(to_plain(cfg.mlflow)), pending_root=pending_dir(str(cfg.paths.root_dir)))
    # a job that fails from here on leaves its MLflow run FAILED: fstag.runs.hydra_callbacks.MlflowSweepCallback.on_job_end
    write_text_atomic(job.dir / CONFIG_YAML, OmegaConf.to_yaml(cfg, resolve=True))
    return run_id


def run_tags(job: Job) -> dict[str, str]:
    cfg = job.cfg
    tags = {MLFLOW_RUN_DIR_TAG: str(job.dir), "fstag.arch": str(cfg.arch.name), "fstag.aug": str(cfg.aug.name),
            "fstag.fold": str(job.fold), "fstag.stage": str(cfg.stage.name), "fstag.variant": job.variant,
            "fstag.exp": str(cfg.exp), "fstag.task": task_of_cfg(cfg).name}
    if current_lease():  # the launcher's slot (hydra/launcher=joblib on GPUs: <device>:<slot>)
        tags["fstag.device_lease"] = current_lease()
    # each variant override as a tag (and, through the flat config, as a param of that name)
    tags.update({f"fstag.override.{i.split('=', 1)[0]}": (i.split("=", 1) + [""])[1] for i in job.items if "=" in i})
    tags.update({"fstag.override.data": i.split("@", 1)[1] for i in job.items if i.startswith("data@")})
    return tags


# 3. fit ---------------------------------------------------------------------------------------------
def fit(built: Built) -> None:
    relaunch_ranks_as_jobs()  # a multirun job's extra DDP ranks re-run this job, not the sweep
    with ranks_end_with_fit():  # the next job of a multirun in this process starts its own ranks
        built.trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=built.resume_from)


# 4. predict -----------------------------------------------------------------------------------------
def load_best_weights(job: Job, built: Built) -> dict:
    """Load the best checkpoint's weights (else last.ckpt's) into the module; return that checkpoint
    (empty when none was written: trainer.fast_dev_run, debug=fdr predict with the weights in memory)."""
    best, last = job.dir / CHECKPOINT_DIR / BEST_CKPT, job.dir / CHECKPOINT_DIR / LAST_CKPT
    ckpt_file = best if best.is_file() else last
    if not ckpt_file.is_file():
        return {}
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    built.module.load_state_dict(plain_state_dict(ckpt["state_dict"]))
    return ckpt


def predict(job: Job, built: Built) -> JobPredictions:
    """test.npz (the test split) and oof.npz (the validation fold; a retrain_val job trained on it, so it
    carries a copy of its parent's), by ``predict.mode`` with the module's best weights."""
    cfg, data = job.cfg, built.data
    device = torch.device("cuda" if built.gpu else "cpu")
    module = built.module.to(device).eval()
    test_fnames = data.layout.test_fnames()
    test_probs, test_missing, test_silent = predict_clips(module, data.test_store, test_fnames, cfg, device)
    missing = set(test_missing)
    save_npz_atomic(job.dir / TEST_NPZ, fnames=np.array(test_fnames), probs=test_probs,
                    missing=np.array([f in missing for f in test_fnames]), silent=test_silent)
    if built.parent is None:
        val_fnames = data.fold_fnames
        oof_probs, _, _ = predict_clips(module, data.train_store, val_fnames, cfg, device)
        oof_targets = data.val_rows.targets
        save_npz_atomic(job.dir / OOF_NPZ, fnames=np.array(val_fnames), probs=oof_probs, targets=oof_targets)
        oof_source = str(job.dir)
    else:
        with atomic_path(job.dir / OOF_NPZ) as tmp:
            shutil.copyfile(built.parent.path / OOF_NPZ, tmp)
        oof = built.parent.oof()
        oof_probs, oof_targets = oof.probs, oof.targets
        oof_source = str(built.parent.path)
    return JobPredictions(test_fnames, test_missing, oof_probs, oof_targets, oof_source)


def predict_clips(module: TaggingModule, store, fnames: list[str], cfg: DictConfig, device) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(probs, missing fnames, silent mask)`` of cached clips, by ``predict.mode`` (fstag.infer.predictor)."""
    clips = [store[store.index_of(f)] if f in store else None for f in fnames]
    missing = [f for f, c in zip(fnames, clips) if c is None]
    probs, silent = predict_probs(
        module.model.to(device), clips, fnames, crop_frames=int(cfg.loader.crop_frames), aug=to_plain(cfg.aug),
        mode=str(cfg.predict.get("mode", "crops")), pad_value=pad_value_of(cfg.loader), n_passes=int(cfg.predict.tta),
        hop_frames=cfg.predict.get("hop_frames"), seed=int(cfg.predict.seed),
        batch_size=int(cfg.predict.batch_size), device=device, num_classes=len(module.labels),
        task=module.task, window_reduce=str(cfg.predict.get("window_reduce", "mean")),
    )
    return probs, missing, silent


# 5. record and finish -------------------------------------------------------------------------------
def record(job: Job, built: Built, p: JobPredictions, best_ckpt: dict, timings: dict | None = None) -> dict:
    """Write run.json (``complete: false``): from here a crash is repaired by rerunning the same command,
    which finishes the run instead of retraining it."""
    cfg, trainer, data = job.cfg, built.trainer, built.data
    task = data.task
    best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    best_acc = float(best_score) if best_score is not None else float("nan")
    best_metrics = next((c.metrics for c in trainer.callbacks if isinstance(c, BestEpochMetrics)), {})
    init_from = built.init_from
    if init_from is None and built.parent is not None:
        init_from = previous_init_from(job.dir)
    oof_scores = {f"oof_{k}": v for k, v in task_scores(task, p.oof_probs, p.oof_targets).items()}
    info = {
        "name": job_name(job.fold, job.stage), "arch": str(cfg.arch.name), "aug": str(cfg.aug.name), "fold": job.fold,
        "stage": job.stage, "variant": job.variant, "overrides": job.items, "identity": job.ident,
        "best_metrics": best_metrics, "init_from": init_from,
        "task": task.name, "labels": data.labels, "feature_key": data.feature_key, "features": to_plain(cfg.features),
        "data_name": str(cfg.data.name), "data_root": str(cfg.data.root), "data_layout": data.layout.name,
        "fold_split": data.fold_split,
        "mlflow_run_id": built.run_id, "mlflow_tracking_uri": str(cfg.mlflow.tracking_uri), "mlflow_run_name": built.run_name,
        **({"best_val_acc1": best_acc} if job.stage != "retrain_val" and task.monitor == "val_acc1" else {}),
        "best_monitor": {"name": str(trainer.checkpoint_callback.monitor) if trainer.checkpoint_callback else None,
                         "value": best_acc},
        **oof_scores, "oof_source": p.oof_source,
        "epochs_trained": int(trainer.current_epoch), "best_epoch": int(best_ckpt.get("epoch", -1)),
        "test_missing": p.test_missing, "world_size": int(trainer.world_size), "device_lease": current_lease(),
        "timings": timings or {}, "complete": False,
    }
    if built.parent is not None:  # held-out scores of a retrain_val job: its parent's (its own fit_* are in-sample)
        info["parent_metrics"] = {k: v for k, v in (built.parent.info.get("best_metrics") or {}).items()
                                  if str(k).startswith("val_")}
        info["parent_run"] = str(built.parent.path)
    if built.self_train is not None:
        info["self_train"] = built.self_train
    write_json_atomic(job.dir / RUN_JSON, info)
    return info


def _best_text(info: dict) -> str:
    """``val_acc1 0.8123`` (or the job's monitored metric) for a log line."""
    best = info.get("best_monitor") or {}
    name, value = best.get("name") or "val_acc1", best.get("value", info.get("best_val_acc1", float("nan")))
    return f"{name} {float(value):.4f}" if value is not None else name


def _tracking_settings(job_dir: Path) -> tuple[Settings, Path | None]:
    """The job's ``mlflow.*`` waiting settings and pending-journal folder, from its saved config.yaml."""
    try:
        saved = OmegaConf.load(job_dir / CONFIG_YAML)
        node = OmegaConf.to_container(saved.get("mlflow") or {}, resolve=False)
        root = OmegaConf.select(saved, "paths.root_dir", default=None)
    except Exception:  # noqa: BLE001  (no or an unreadable config.yaml: the defaults)
        return Settings(), None
    return Settings.of(node), pending_dir(str(root)) if root else None


def _job_run_id(job_dir: Path, info: dict) -> str | None:
    """The job's MLflow run: ``mlflow_run_id`` (rewritten when a placeholder's run is created) over run.json's."""
    id_file = job_dir / MLFLOW_RUN_ID_FILE
    known = id_file.read_text().strip() if id_file.is_file() else ""
    recorded = info.get("mlflow_run_id")
    if known and (is_local_id(recorded) or not recorded):
        return known
    return str(recorded) if recorded else (known or None)


def finish(job_dir: Path, info: dict) -> dict:
    """Journal a predicted job's metrics, artifacts, per-class report and the run's FINISHED status
    (:mod:`fstag.runs.journal`), fsync the journal, and only then mark run.json complete (a crash before is
    finished by the next rerun). Then wait (``mlflow.end_wait_s``, as long as the backlog moves) for the journal
    to reach the store: run.json says ``mlflow_synced`` true, or false with the journal left for
    ``python -m fstag.runs sync`` (or the next job of the same store)."""
    run = RunDir(job_dir, info)
    run_name = str(info.get("mlflow_run_name") or run.name)
    t0 = time.perf_counter()
    uri = str(info["mlflow_tracking_uri"])
    settings, pending = _tracking_settings(job_dir)
    journal = RunJournal.open(job_dir, uri, expect=_job_run_id(job_dir, info), id_file=job_dir / MLFLOW_RUN_ID_FILE,
                              pending_root=pending, settings=settings)
    run_id = journal.current_id
    # metrics at the time run.json was recorded: a finish repeated after a crash logs the same points again
    client = journal.client(timestamp_ms=int((job_dir / RUN_JSON).stat().st_mtime * 1000))
    client.update_run(run_id, status="RUNNING")
    task = task_of(info)
    best_acc = float(info.get("best_val_acc1", float("nan")))
    if np.isfinite(best_acc):
        client.log_metric(run_id, "best_val_acc1", best_acc)
    for k, v in (info.get("best_metrics") or {}).items():  # the best epoch's metrics: best_val_map3 (fit_*: retrain_val)
        if k != "val_acc1" and np.isfinite(v):
            client.log_metric(run_id, f"best_{k}", v)
    for k, v in (info.get("parent_metrics") or {}).items():  # retrain_val: its parent's held-out scores
        if np.isfinite(v):
            client.log_metric(run_id, f"parent_{k}", v)
    for k in task.oof_metrics:  # held-out for every job (a retrain_val job's are its parent's: oof_source)
        if k in info and np.isfinite(float(info[k])):
            client.log_metric(run_id, k, float(info[k]))
    client.log_metric(run_id, "epochs_trained", int(info.get("epochs_trained", -1)))
    for k, v in (info.get("timings") or {}).items():  # where the job's time went (fstag.train.timings)
        if v is not None:
            client.log_metric(run_id, f"time_{k}" if k == "epochs" else f"time_{k}_s", float(v))
    done = {k: v for k, v in info.items() if k != "mlflow_synced"}
    done.update(complete=True, mlflow_run_id=run_id)
    client.log_dict(run_id, done, RUN_JSON)  # the artifact is the run.json this job ends with (less timings.finish)
    for name in (CONFIG_YAML, OOF_NPZ, TEST_NPZ):
        client.log_artifact(run_id, str(job_dir / name))
    if info.get("self_train"):  # the pseudo-labels: counts as metrics, pseudo_labels.csv as an artifact
        self_training.log_to_mlflow(client, run_id, job_dir, info["self_train"])
    best = job_dir / CHECKPOINT_DIR / BEST_CKPT
    if best.is_file():  # checkpoints/best.ckpt: predict.py from the tracking server alone (fstag.runs.members)
        client.log_artifact(run_id, str(best), CHECKPOINT_DIR)
    if (job_dir / ".hydra").is_dir():
        client.log_artifacts(run_id, str(job_dir / ".hydra"), "hydra")
    # per-class OOF report (a retrain_val job reports the OOF it carries, its parent's, as its oof_map3 does)
    oof = run.oof()
    log_class_report(client, run_id, oof.probs, oof.targets, list(info["labels"]), job_dir / REPORTS_DIR, title=run_name,
                     task=task)
    client.set_terminated(run_id, "FINISHED")
    journal.sync_to_disk()  # the job's records are safe on disk: from here it is complete
    if "timings" in done:
        done["timings"] = {**done["timings"], "finish": round(time.perf_counter() - t0, 3)}
    write_json_atomic(job_dir / RUN_JSON, {**done, "mlflow_synced": False})
    synced = journal.close(wait_s=settings.end_wait_s)  # synced: run.json's mlflow_synced and run id updated, journal removed
    done = {**done, "mlflow_run_id": journal.current_id, "mlflow_synced": synced}
    if synced and pending is not None:  # the store answers: send what other jobs of it left behind
        sync_pending(uri, pending, settings.sync_others_s)
    scores = ", ".join(f"{k} {float(info[k]):.4f}" for k in task.oof_metrics if k in info)
    log.info("%s done: best %s, %s -> %s%s", run_name, _best_text(info), scores, job_dir,
             "" if synced else f" (MLflow run {journal.current_id} not synced: python -m fstag.runs sync)")
    return done
