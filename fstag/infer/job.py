"""predict.py's job: trained runs -> probabilities (TTA crops or every window) for the test split or any
folder of audio, as the runs' task (fstag.core.task) makes them. Unreadable clips and silent clips
(fstag.data.features.is_silent) get uninformed probabilities (single-label: uniform; multi-label: 0) and are
flagged.

Outputs (each written atomically into ``output_dir``):

- ``probs.npz``: ``fnames``, ``probs`` (N, C), ``labels``, ``flagged``, ``silent``, ``task``;
- single-label: ``top3.csv``: ``fname``, ``label1..3``, ``prob1..3``, ``flagged``, ``silent``, ``error``;
- multi-label: ``tags.csv``: ``fname``, ``labels`` (every label at or above ``threshold``, most probable
  first, comma-joined), ``label1..k``, ``prob1..k`` (the ``top_k`` most probable), ``flagged``, ``silent``,
  ``error``; and ``probs.csv``: ``fname`` and one probability column per label (FSDKaggle2019's format).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fstag.models.augment import pad_value_of
from fstag.core.config import to_plain
from fstag.core.task import Task, join_labels, task_of, uninformed
from fstag.data.features import SILENT_REASON
from fstag.data.layouts import open_layout
from fstag.infer.modes import MODES, WINDOW_REDUCES
from fstag.infer.predictor import predict_probs
from fstag.core.io import save_npz_atomic, write_text_atomic
from fstag.evaluate.metrics import combine_probs
from fstag.runs.run_dir import CONFIG_YAML, RunDir, RunDirError

if TYPE_CHECKING:  # Lightning is imported when a model is loaded, not for predict.py's config errors
    from fstag.models.module import TaggingModule

log = logging.getLogger(__name__)


def load_module(run: RunDir) -> TaggingModule:
    """The run's best model: a plain ``weights_only`` checkpoint load that needs no network, no initial
    weights file and no compiler (TaggingModule.from_checkpoint)."""
    ckpt_path = run.best_checkpoint if run.best_checkpoint.is_file() else run.last_checkpoint
    if not ckpt_path.is_file():
        raise RunDirError(f"{run.path}: no checkpoint ({run.best_checkpoint} or {run.last_checkpoint})")
    from fstag.models.module import TaggingModule

    return TaggingModule.from_checkpoint(ckpt_path)


def run_config(run: RunDir) -> DictConfig:
    path = run.path / CONFIG_YAML
    if not path.is_file():
        raise RunDirError(f"{path}: the run's resolved config is missing")
    return OmegaConf.load(path)


def list_audio(folder: Path, extensions: list[str], key: str = "input") -> list[Path]:
    """The audio files below ``folder`` (:func:`fstag.data.audio.list_audio_files`); none is an error
    naming the config ``key`` that gave the folder."""
    from fstag.data.audio import list_audio_files

    files = list_audio_files(folder, extensions)
    if not files:
        exts = sorted("." + str(e).lower().lstrip(".") for e in extensions)
        raise FileNotFoundError(f"{key}={folder}: no audio files with extensions {exts}")
    return files


def _clips_for_test(run_cfg: DictConfig, fnames: list[str], feature_cfg: dict, num_workers, long_seconds=None) -> tuple[list, list[str | None]]:
    """Cached test features when the cache exists, else computed from the audio files."""
    from fstag.data.feature_store import FeatureStore, feature_dir
    from fstag.data.feature_config import FeatureConfig

    fcfg = FeatureConfig.from_cfg(feature_cfg)
    try:
        store = FeatureStore.open(feature_dir(run_cfg.data.features_dir, fcfg), "test")
    except (FileNotFoundError, OSError, ValueError):
        layout = open_layout(run_cfg.data)
        return _clips_for_files([layout.audio_path("test", f) for f in fnames], feature_cfg, num_workers, long_seconds)
    clips = [store[store.index_of(f)] if f in store else None for f in fnames]
    return clips, [None if c is not None else "no features (unreadable audio; see the preprocess report)" for c in clips]


def _clips_for_files(paths: list[Path], feature_cfg: dict, num_workers, long_seconds=None) -> tuple[list, list[str | None]]:
    """Features of audio files; a file longer than ``long_seconds`` is streamed in chunks when used."""
    from fstag.data.feature_config import FeatureConfig
    from fstag.data.extract import features_for_files

    return features_for_files(paths, FeatureConfig.from_cfg(feature_cfg), num_workers=num_workers,
                              long_seconds=long_seconds)


def top_labels(probs: np.ndarray, labels: list[str], k: int) -> dict[str, Any]:
    """``label1..k`` and ``prob1..k``: each row's ``k`` most probable labels (ties: the lower class index first)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    out: dict[str, Any] = {}
    for i in range(min(int(k), len(labels))):
        out[f"label{i + 1}"] = [labels[j] for j in order[:, i]]
        out[f"prob{i + 1}"] = np.round(probs[np.arange(len(probs)), order[:, i]], 6)
    return out


def flag_columns(errors: list[str | None], silent) -> dict[str, Any]:
    """``flagged`` (a clip that could not be read or is silent), ``silent`` and ``error`` (the reason)."""
    return {"flagged": [e is not None or bool(s) for e, s in zip(errors, silent)], "silent": silent,
            "error": [e or (SILENT_REASON if s else "") for e, s in zip(errors, silent)]}


def top3_table(fnames: list[str], probs: np.ndarray, labels: list[str], errors: list[str | None],
               silent=None) -> pd.DataFrame:
    """Three labels per clip; ``flagged`` marks a clip that could not be read or is silent (``silent``)."""
    silent = np.zeros(len(fnames), dtype=bool) if silent is None else np.asarray(silent, dtype=bool)
    return pd.DataFrame({"fname": fnames, **top_labels(probs, labels, 3), **flag_columns(errors, silent)})


def tags_table(fnames: list[str], probs: np.ndarray, labels: list[str], errors: list[str | None], silent=None,
               threshold: float = 0.5, top_k: int = 3) -> pd.DataFrame:
    """A multi-label task's table: every label at or above ``threshold`` (most probable first, comma-joined;
    empty when none is), the ``top_k`` labels and their probabilities, and the flags."""
    silent = np.zeros(len(fnames), dtype=bool) if silent is None else np.asarray(silent, dtype=bool)
    order = np.argsort(-probs, axis=1, kind="stable")
    above = [join_labels([labels[j] for j in order[i] if probs[i, j] >= threshold]) for i in range(len(fnames))]
    return pd.DataFrame({"fname": fnames, "labels": above, **top_labels(probs, labels, int(top_k)),
                         **flag_columns(errors, silent)})


def probs_table(fnames: list[str], probs: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """``fname`` and one probability column per label (FSDKaggle2019's submission format)."""
    table = pd.DataFrame(np.round(probs.astype(np.float64), 6), columns=list(labels))
    table.insert(0, "fname", fnames)
    return table


def run_predict(cfg: DictConfig) -> Path:
    """The predict job's steps: resolve the runs, read the clips' features, predict with every run,
    combine (the task's way) and flag, write ``probs.npz`` and the task's tables into ``output_dir``."""
    runs = resolve_runs(cfg)
    print(f"runs ({len(runs)}):", *(str(r.path) for r in runs), sep="\n  ")
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else str(cfg.device)))
    mode = str(cfg.mode)
    if mode not in MODES:
        raise ValueError(f"mode={mode}: expected one of {'|'.join(MODES)}")
    if str(cfg.get("window_reduce", "mean")) not in WINDOW_REDUCES:
        raise ValueError(f"window_reduce={cfg.get('window_reduce')}: expected one of {'|'.join(WINDOW_REDUCES)}")
    t0 = time.perf_counter()
    fnames, clips, errors = read_clips(cfg, runs[0])
    t_feat = time.perf_counter() - t0
    probs, errors, silent, unusable = predict_with_runs(cfg, runs, clips, fnames, errors, mode, device)
    elapsed = time.perf_counter() - t0
    for f, e, s in zip(fnames, errors, silent):
        if e is not None or s:
            log.warning("%s: %s (uniform probabilities, flagged)", f, e or SILENT_REASON)
    task = task_of(runs[0].info)
    out = write_predictions(Path(str(cfg.output_dir)), fnames, probs, runs[0].labels, errors, silent, unusable, task,
                            float(cfg.get("threshold", 0.5)), int(cfg.get("top_k", 3)))
    how = f"{int(cfg.tta)} crops" if mode == "crops" else "windows"
    log.info("%d clips x %d run(s) x %s on %s in %.1f s (features %.1f s): %.1f clips/s -> %s",
             len(fnames), len(runs), how, device, elapsed, t_feat, len(fnames) / max(elapsed, 1e-9), out)
    table = "tags.csv" if task.multi_label else "top3.csv"
    print(f"predictions: {out / table} ({len(fnames)} clips, {int(unusable.sum())} flagged, "
          f"{int(silent.sum())} of them silent)")
    return out


def resolve_runs(cfg: DictConfig) -> list[RunDir]:
    """``runs=[...]`` resolved and checked together: complete, with checkpoints, one label set and feature config."""
    from fstag.runs.members import resolve_members

    runs = cfg.runs or []
    specs = [str(runs)] if isinstance(runs, str) else [str(s) for s in runs]
    if not specs:
        raise ValueError("predict.py needs runs=[...]: run directories, MLflow run ids, arch/aug/fold_k names or "
                         "selectors (sweep:<name>, a pattern such as cnn_small/*/fold_*)")
    runs_root = Path(str(cfg.paths.runs_dir)) / str(cfg.exp)
    return [m.run for m in resolve_members(specs, runs_root, str(cfg.mlflow.tracking_uri), str(cfg.data.root),
                                           checkpoints=True, experiment=str(cfg.mlflow.experiment), data=cfg.data)]


def predict_with_runs(cfg: DictConfig, runs: list[RunDir], clips: list, fnames: list[str], errors: list[str | None],
                      mode: str, device) -> tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray]:
    """Every run's probabilities of the clips (:func:`predict_run`), combined by geometric mean (per row
    renormalised single-label, per label multi-label); unreadable and silent clips get exactly
    :func:`~fstag.core.task.uninformed` rows. ``cfg`` holds predict.py's ``tta``, ``hop_frames``,
    ``window_reduce``, ``seed`` and ``batch_size``. Returns ``(probs, errors (a long clip's found while
    streaming included), silent, unusable)``."""
    task = task_of(runs[0].info)
    per_run, silent = [], np.zeros(len(fnames), dtype=bool)
    for run in runs:
        probs_k, silent = predict_run(cfg, run, clips, fnames, mode, device, len(runs[0].labels))
        per_run.append(probs_k)
    errors = [e if e is not None else getattr(c, "error", None) for c, e in zip(clips, errors)]  # long clips
    probs = per_run[0] if len(per_run) == 1 else combine_probs(task, np.stack(per_run)).astype(np.float32)
    unusable = np.array([e is not None for e in errors], dtype=bool) | silent
    probs[unusable] = uninformed(task, probs.shape[1])  # exactly, also after combining runs
    return probs, errors, silent, unusable


def read_folder(folder: Path, extensions: list[str], feature_cfg: dict, num_workers=None, long_seconds=None,
                key: str = "input") -> tuple[list[str], list, list[str | None]]:
    """``(fnames, features, errors)`` of every audio file below ``folder`` (fnames relative to it), computed
    in memory with ``feature_cfg``; ``key`` names the folder's config key in the error for an empty folder."""
    paths = list_audio(folder, extensions, key)
    fnames = [p.relative_to(folder).as_posix() for p in paths]
    clips, errors = _clips_for_files(paths, feature_cfg, num_workers, long_seconds)
    return fnames, clips, errors


def read_clips(cfg: DictConfig, first: RunDir) -> tuple[list[str], list, list[str | None]]:
    """``(fnames, features, errors)`` of the test split (``input=test``: the first run's data set, cached
    features when they exist) or of every audio file below the ``input`` folder."""
    long_seconds = cfg.get("long_file_seconds")
    if str(cfg.input) == "test":
        first_cfg = run_config(first)
        fnames = open_layout(first_cfg.data).test_fnames()
        clips, errors = _clips_for_test(first_cfg, fnames, first.info["features"], cfg.num_workers, long_seconds)
    else:
        folder = Path(str(cfg.input)).expanduser().resolve()
        fnames, clips, errors = read_folder(folder, list(cfg.extensions), first.info["features"], cfg.num_workers,
                                            long_seconds)
    return fnames, clips, errors


def predict_run(cfg: DictConfig, run: RunDir, clips: list, fnames: list[str], mode: str, device,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One run's ``(probs, silent mask)``, with the run's own crop length, aug and padding."""
    rc = run_config(run)
    module = load_module(run).to(device)
    return predict_probs(
        module.model, clips, fnames, crop_frames=int(rc.loader.crop_frames), aug=to_plain(rc.aug), mode=mode,
        pad_value=pad_value_of(rc.loader), n_passes=int(cfg.tta), hop_frames=cfg.get("hop_frames"),
        seed=int(cfg.seed), batch_size=int(cfg.batch_size), device=device, num_classes=num_classes,
        task=task_of(run.info), window_reduce=str(cfg.get("window_reduce", "mean")))


def write_predictions(out: Path, fnames: list[str], probs: np.ndarray, labels: list[str], errors, silent,
                      unusable, task: Task | None = None, threshold: float = 0.5, top_k: int = 3) -> Path:
    """``probs.npz`` (with ``flagged``, ``silent`` and ``task``) and the task's tables (``top3.csv``; or
    ``tags.csv`` and ``probs.csv``), each written atomically."""
    from fstag.core.task import SINGLE_LABEL

    extra = {} if task is None or task.name == SINGLE_LABEL else {"task": np.array(task.name)}
    save_npz_atomic(out / "probs.npz", fnames=np.array(fnames), probs=probs, labels=np.array(labels),
                    flagged=unusable, silent=silent, **extra)
    if task is not None and task.multi_label:
        write_text_atomic(out / "tags.csv", tags_table(fnames, probs, labels, errors, silent, threshold, top_k)
                          .to_csv(index=False))
        write_text_atomic(out / "probs.csv", probs_table(fnames, probs, labels).to_csv(index=False))
        return out
    write_text_atomic(out / "top3.csv", top3_table(fnames, probs, labels, errors, silent).to_csv(index=False))
    return out
