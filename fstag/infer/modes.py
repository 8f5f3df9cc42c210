"""What a prediction pass over a clip is, torch-free (shared by :mod:`.predictor` and :mod:`.numpy_predictor`): the
modes and their checked arguments, the seed of each TTA crop's generator, and how crops and windows combine into a
clip's probabilities."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from fstag.core.task import Task
from fstag.evaluate.metrics import arithmetic_mean, geometric_mean

MODES = ("crops", "windows")
WINDOW_REDUCES = ("mean", "max")


def clip_seed(seed: int, pass_idx: int, key: str | int) -> int:
    """A 63-bit generator seed from (seed, pass, clip key): blake2b of the three, stable across runs."""
    blob = f"{int(seed)}\x1f{int(pass_idx)}\x1f{key}".encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little") & (2**63 - 1)


def checked_hop(mode: str, window_reduce: str, n_clips: int, n_fnames: int, crop_frames: int,
                hop_frames: int | None) -> int:
    """The windows' hop (default: half a window), once the arguments of a prediction are checked."""
    if mode not in MODES:
        raise ValueError(f"predict mode {mode!r}: expected one of {MODES}")
    if window_reduce not in WINDOW_REDUCES:
        raise ValueError(f"predict window_reduce {window_reduce!r}: expected one of {WINDOW_REDUCES}")
    if n_fnames != n_clips:
        raise ValueError(f"{n_clips} clips but {n_fnames} fnames")
    hop = int(hop_frames) if hop_frames else max(1, int(crop_frames) // 2)
    if hop <= 0:
        raise ValueError(f"predict hop_frames must be positive, got {hop_frames}")
    return hop


def combine_passes(pass_probs: Sequence[np.ndarray], task: Task) -> np.ndarray:
    """The TTA passes' probabilities of each clip combined: per label by their mean (multi-label), else by their
    geometric mean, renormalised."""
    if task.multi_label:
        return arithmetic_mean(np.stack(pass_probs), axis=0, renormalise=False)
    return geometric_mean(np.stack(pass_probs), axis=0)


class WindowPool:
    """Every window's output of ``n`` clips pooled per clip: ``add`` a batch (each window's owner and its
    probabilities, multi-label, or log-probabilities), ``result`` the clips' probabilities (``mean``: the mean, which
    for a single-label task is renormalised from the mean log-probability; ``max``: each label's largest)."""

    def __init__(self, n: int, num_classes: int, reduce: str):
        self.maximum = reduce == "max"
        self.sums = np.full((n, num_classes), -np.inf if self.maximum else 0.0, dtype=np.float64)
        self.counts = np.zeros(n, dtype=np.int64)

    def add(self, owners: Sequence[int], out: np.ndarray) -> None:
        out = np.asarray(out).astype(np.float64)
        if self.maximum:  # each label's largest probability (single-label: of its log-probability, the same order)
            np.maximum.at(self.sums, owners, out)
        else:
            np.add.at(self.sums, owners, out)
        np.add.at(self.counts, owners, 1)

    def result(self, task: Task) -> np.ndarray:
        pooled = self.sums if self.maximum else self.sums / np.maximum(self.counts, 1)[:, None]
        if task.multi_label:
            return pooled
        out = np.exp(pooled - pooled.max(axis=1, keepdims=True))
        return out / out.sum(axis=1, keepdims=True)
