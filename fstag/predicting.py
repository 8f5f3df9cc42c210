"""predict.py's job: trained runs -> TTA probabilities for the test split or any folder of audio."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from fstag.augment import pad_value_of
from fstag.config import to_plain
from fstag.dataset_layout import DatasetLayout
from fstag.inference import predict_probs
from fstag.io_utils import save_npz_atomic, write_text_atomic
from fstag.lit_module import TaggingModule
from fstag.metrics import geometric_mean
from fstag.run_dir import CONFIG_YAML, RunDir, RunDirError

log = logging.getLogger(__name__)


def load_module(run: RunDir) -> TaggingModule:
    """The run's best model (plain ``weights_only`` checkpoint load, no pickled objects)."""
    ckpt_path = run.best_checkpoint if run.best_checkpoint.is_file() else run.last_checkpoint
    if not ckpt_path.is_file():
        raise RunDirError(f"{run.path}: no checkpoint ({run.best_checkpoint} or {run.last_checkpoint})")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    module = TaggingModule(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


def run_config(run: RunDir) -> DictConfig:
    path = run.path / CONFIG_YAML
    if not path.is_file():
        raise RunDirError(f"{path}: the run's resolved config is missing")
    return OmegaConf.load(path)


def list_audio(folder: Path, extensions: list[str]) -> list[Path]:
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise FileNotFoundError(f"input={folder}: no audio files with extensions {sorted(exts)}")
    return files


def _clips_for_test(run_cfg: DictConfig, fnames: list[str], feature_cfg: dict, num_workers) -> tuple[list, list[str | None]]:
    """Cached test features when the cache exists, else computed from the audio files."""
    from fstag.feature_store import FeatureStore, feature_dir
    from fstag.features import FeatureConfig

    fcfg = FeatureConfig.from_cfg(feature_cfg)
    try:
        store = FeatureStore.open(feature_dir(run_cfg.data.features_dir, fcfg), "test")
    except (FileNotFoundError, OSError, ValueError):
        audio_dir = DatasetLayout(Path(str(run_cfg.data.root))).audio_dir("test")
        return _clips_for_files([audio_dir / f for f in fnames], feature_cfg, num_workers)
    clips = [store[store.index_of(f)] if f in store else None for f in fnames]
    return clips, [None if c is not None else "no features (unreadable audio; see the preprocess report)" for c in clips]


def _clips_for_files(paths: list[Path], feature_cfg: dict, num_workers) -> tuple[list, list[str | None]]:
    from fstag.features import FeatureConfig, compute_features_for_files

    return compute_features_for_files(paths, FeatureConfig.from_cfg(feature_cfg), device="cpu", num_workers=num_workers)


def top3_table(fnames: list[str], probs: np.ndarray, labels: list[str], errors: list[str | None]) -> pd.DataFrame:
    order = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    rows: dict[str, Any] = {"fname": fnames}
    for k in range(3):
        rows[f"label{k + 1}"] = [labels[j] for j in order[:, k]]
        rows[f"prob{k + 1}"] = np.round(probs[np.arange(len(fnames)), order[:, k]], 6)
    rows["flagged"] = [e is not None for e in errors]
    rows["error"] = [e or "" for e in errors]
    return pd.DataFrame(rows)


def run_predict(cfg: DictConfig) -> Path:
    from fstag.members import resolve_members

    specs = [str(s) for s in (cfg.runs or [])]
    if not specs:
        raise ValueError("predict.py needs runs=[...]: run directories, MLflow run ids or arch/aug/fold_k names")
    runs_root = Path(str(cfg.paths.runs_dir)) / str(cfg.exp)
    # resolved and checked together: complete, same label set and feature config
    runs = [m.run for m in resolve_members(specs, runs_root, str(cfg.mlflow.tracking_uri), str(cfg.data.root))]
    first = runs[0]
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else str(cfg.device)))
    first_cfg = run_config(first)
    t0 = time.perf_counter()
    if str(cfg.input) == "test":
        fnames = DatasetLayout(Path(str(first_cfg.data.root))).split_fnames("test")
        clips, errors = _clips_for_test(first_cfg, fnames, first.info["features"], cfg.num_workers)
    else:
        folder = Path(str(cfg.input)).expanduser().resolve()
        paths = list_audio(folder, list(cfg.extensions))
        fnames = [str(p.relative_to(folder)) for p in paths]
        clips, errors = _clips_for_files(paths, first.info["features"], cfg.num_workers)
    t_feat = time.perf_counter() - t0
    per_run = []
    for run in runs:
        rc = run_config(run)
        module = load_module(run).to(device)
        per_run.append(predict_probs(
            module.model, clips, crop_frames=int(rc.loader.crop_frames), aug=to_plain(rc.aug),
            pad_value=pad_value_of(rc.loader), n_passes=int(cfg.tta), seed=int(cfg.seed),
            batch_size=int(cfg.batch_size), device=device, num_classes=len(first.labels)))
    probs = per_run[0] if len(per_run) == 1 else geometric_mean(np.stack(per_run)).astype(np.float32)
    elapsed = time.perf_counter() - t0
    for f, e in zip(fnames, errors):
        if e is not None:
            log.warning("%s: %s (uniform probabilities, flagged)", f, e)
    out = Path(str(cfg.output_dir))
    save_npz_atomic(out / "probs.npz", fnames=np.array(fnames), probs=probs, labels=np.array(first.labels),
                    flagged=np.array([e is not None for e in errors]))
    write_text_atomic(out / "top3.csv", top3_table(fnames, probs, first.labels, errors).to_csv(index=False))
    log.info("%d clips x %d run(s) x %d crops on %s in %.1f s (features %.1f s): %.1f clips/s -> %s",
             len(fnames), len(runs), int(cfg.tta), device, elapsed, t_feat, len(fnames) / max(elapsed, 1e-9), out)
    print(f"predictions: {out / 'top3.csv'} ({len(fnames)} clips, {sum(e is not None for e in errors)} flagged)")
    return out
