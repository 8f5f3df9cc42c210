"""Ranking metrics and probability averaging, as plain numpy/torch functions (torch imported only by
:func:`map_at_3_torch`: a served ONNX model blends without torch).

Single-label (one class index per row): :func:`map_at_3`, :func:`top1_accuracy`. Multi-label (a 0/1 matrix
of labels per row): :func:`lwlrap` (FSDKaggle2019's label-weighted label-ranking average precision) and
:func:`mean_average_precision` (FSD50K's and AudioSet's macro mAP), with :func:`class_average_precision`
per label, from scikit-learn. :func:`task_scores` gives a task's scores by their names
(:mod:`fstag.core.task`), :func:`combine_probs` a task's way of combining probabilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

EPS = 1e-7


def map_at_3(probs, targets) -> float:
    """Kaggle MAP@3 for single-label rows: 1, 1/2, 1/3 when the true label ranks 1st, 2nd, 3rd, else 0.

    ``probs``: (N, C) scores; ``targets``: (N,) integer class indices. Ties are broken by class index
    (lower first), as ``argsort`` of the negated scores with a stable sort does.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets).astype(np.int64)
    if probs.ndim != 2 or probs.shape[0] != targets.shape[0]:
        raise ValueError(f"probs {probs.shape} and targets {targets.shape} do not match")
    if len(targets) == 0:
        return float("nan")
    top3 = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    hits = top3 == targets[:, None]
    weights = np.array([1.0, 1.0 / 2, 1.0 / 3])[: top3.shape[1]]
    return float((hits * weights).sum(axis=1).mean())


def top1_accuracy(probs, targets) -> float:
    probs = np.asarray(probs)
    targets = np.asarray(targets)
    if len(targets) == 0:
        return float("nan")
    return float((probs.argmax(axis=1) == targets).mean())


def map_at_3_torch(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MAP@3 on tensors (same definition as :func:`map_at_3`), for use inside a training step."""
    import torch

    k = min(3, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hits = (top == targets[:, None]).float()
    weights = 1.0 / torch.arange(1, k + 1, device=scores.device, dtype=torch.float32)
    return (hits * weights).sum(dim=1).mean()


def _member_weights(weights, ndim: int, m: int, axis: int) -> np.ndarray:
    """``weights`` (default equal) checked, normalised to sum 1 and shaped to broadcast along ``axis``."""
    w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (m,) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {m} non-negative numbers with a positive sum, got {w}")
    shape = [1] * ndim
    shape[axis] = m
    return (w / w.sum()).reshape(shape)


def geometric_mean(prob_stack, weights=None, axis: int = 0, renormalise: bool = True) -> np.ndarray:
    """Weighted geometric mean of probability arrays along ``axis``, renormalised to sum to 1 per row
    (single-label); ``renormalise=False``: each label's own geometric mean (multi-label probabilities).

    ``prob_stack``: (M, N, C) (or any shape with the members on ``axis``); ``weights`` default to equal.
    """
    p = np.clip(np.asarray(prob_stack, dtype=np.float64), EPS, 1.0)
    log_mean = (np.log(p) * _member_weights(weights, p.ndim, p.shape[axis], axis)).sum(axis=axis)
    if not renormalise:
        return np.exp(log_mean)
    out = np.exp(log_mean - log_mean.max(axis=-1, keepdims=True))
    return out / out.sum(axis=-1, keepdims=True)


def arithmetic_mean(prob_stack, weights=None, axis: int = 0, renormalise: bool = True) -> np.ndarray:
    """Weighted arithmetic mean along ``axis``, renormalised per row unless ``renormalise=False``."""
    p = np.asarray(prob_stack, dtype=np.float64)
    out = (p * _member_weights(weights, p.ndim, p.shape[axis], axis)).sum(axis=axis)
    return out / out.sum(axis=-1, keepdims=True) if renormalise else out


COMBINE_METHODS = ("gmean", "mean")


def combine_probs(task, prob_stack, weights=None, method: str = "gmean", axis: int = 0) -> np.ndarray:
    """Members' (or passes') probabilities combined as ``task`` (:class:`fstag.core.task.Task`) says:
    ``gmean`` or ``mean``, renormalised per row for a single-label task, per label for a multi-label one."""
    if method not in COMBINE_METHODS:
        raise ValueError(f"combining method {method!r}: expected one of {COMBINE_METHODS}")
    fn = geometric_mean if method == "gmean" else arithmetic_mean
    return fn(prob_stack, weights, axis=axis, renormalise=task.renormalise)


# multi-label ------------------------------------------------------------------------------------------
def _multi_label_inputs(probs, targets) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if probs.ndim != 2 or targets.shape != probs.shape:
        raise ValueError(f"probs {probs.shape} and targets {targets.shape}: need two (N, C) arrays")
    return probs, (targets > 0.5).astype(np.int64) if targets.dtype.kind == "f" else (targets > 0).astype(np.int64)


def lwlrap(probs, targets) -> float:
    """Label-weighted label-ranking average precision (FSDKaggle2019's metric): for every (clip, true label)
    pair, the share of the labels ranked at or above it that are true; averaged over all pairs, so every
    true label counts once. scikit-learn's ``label_ranking_average_precision_score`` with each clip weighted
    by its number of true labels (clips without one weigh nothing). NaN without any true label."""
    from sklearn.metrics import label_ranking_average_precision_score

    probs, y = _multi_label_inputs(probs, targets)
    weights = y.sum(axis=1).astype(np.float64)
    if len(y) == 0 or weights.sum() == 0:
        return float("nan")
    return float(label_ranking_average_precision_score(y, probs, sample_weight=weights))


def per_class_lwlrap(probs, targets) -> tuple[np.ndarray, np.ndarray]:
    """``(lwlrap, weight)`` per label (C,): each label's mean precision over its (clip, true label) pairs
    (NaN without a pair) and its share of all pairs; ``nansum(lwlrap * weight)`` is :func:`lwlrap`. Ties
    count against a label, as scikit-learn's ranking does (a label's rank is the number of labels scored at
    least as high)."""
    probs, y = _multi_label_inputs(probs, targets)
    n, c = probs.shape
    sums, pairs = np.zeros(c), y.sum(axis=0).astype(np.float64)
    for i in np.flatnonzero(y.sum(axis=1)):
        s = probs[i]
        pos = np.flatnonzero(y[i])
        at_or_above = s[None, :] >= s[pos][:, None]          # (positives, C)
        rank = at_or_above.sum(axis=1)
        hits = (at_or_above & (y[i] > 0)[None, :]).sum(axis=1)
        sums[pos] += hits / rank
    total = pairs.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(pairs > 0, sums / pairs, np.nan)
    return per_class, (pairs / total if total else np.zeros(c))


def class_average_precision(probs, targets) -> np.ndarray:
    """(C,) average precision of each label over the rows (scikit-learn's ``average_precision_score``);
    NaN for a label without a positive row."""
    from sklearn.metrics import average_precision_score

    probs, y = _multi_label_inputs(probs, targets)
    out = np.full(probs.shape[1], np.nan)
    for c in np.flatnonzero(y.sum(axis=0)):
        out[c] = average_precision_score(y[:, c], probs[:, c])
    return out


def mean_average_precision(probs, targets) -> float:
    """Macro mAP (FSD50K's and AudioSet's): the mean of :func:`class_average_precision` over the labels that
    have at least one positive row (NaN when none has)."""
    ap = class_average_precision(probs, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def task_scores(task, probs, targets) -> dict[str, float]:
    """``task``'s scores by name: ``{"map3", "acc1"}`` (single-label) or ``{"lwlrap", "map"}`` (multi-label)."""
    if task.multi_label:
        return {"lwlrap": lwlrap(probs, targets), "map": mean_average_precision(probs, targets)}
    return {"map3": map_at_3(probs, targets), "acc1": top1_accuracy(probs, targets)}
