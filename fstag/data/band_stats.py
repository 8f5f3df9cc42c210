"""Per-channel, per-mel-band mean and std of a feature cache's train split, saved beside the cache.

Used by ``arch.input_norm=band_stats``: the statistics are computed once over every frame of every train
clip (no labels are read, so every fold can share them), written atomically as ``band_stats.npz`` in the
feature folder, and copied into each model's hyper-parameters, so a checkpoint carries its own
normalisation and never needs the cache again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fstag.core.io import save_npz_atomic

log = logging.getLogger(__name__)
BAND_STATS_NPZ = "band_stats.npz"


def compute_band_stats(store) -> dict[str, list]:
    """``{"mean": (C, F), "std": (C, F)}`` over all frames of all clips of a FeatureStore (float64 sums)."""
    total = None
    total_sq = None
    frames = 0
    for i in range(len(store)):
        x = np.asarray(store[i], dtype=np.float64)  # (C, F, T)
        s, sq = x.sum(axis=2), np.square(x).sum(axis=2)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        frames += x.shape[2]
    if not frames:
        raise ValueError(f"{store.path}: no frames to compute band statistics from")
    mean = total / frames
    std = np.sqrt(np.maximum(total_sq / frames - np.square(mean), 0.0))
    return {"mean": mean.astype(np.float32).tolist(), "std": std.astype(np.float32).tolist()}


def load_or_compute_band_stats(store, feature_dir: str | Path) -> dict[str, list]:
    """The cached statistics of ``feature_dir``'s train split, computed and saved on first use."""
    path = Path(feature_dir) / BAND_STATS_NPZ
    if path.is_file():
        with np.load(path) as z:
            if int(z["n_clips"]) == len(store):
                return {"mean": z["mean"].tolist(), "std": z["std"].tolist()}
    stats = compute_band_stats(store)
    save_npz_atomic(path, mean=np.array(stats["mean"], dtype=np.float32), std=np.array(stats["std"], dtype=np.float32),
                    n_clips=np.array(len(store)))
    log.info("band statistics of %d train clips -> %s", len(store), path)
    return stats
