"""Ranking metrics and probability averaging, as plain numpy/torch functions."""

from __future__ import annotations

import numpy as np
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


def geometric_mean(prob_stack, weights=None, axis: int = 0) -> np.ndarray:
    """Weighted geometric mean of probability arrays along ``axis``, renormalised to sum to 1 per row.

    ``prob_stack``: (M, N, C) (or any shape with the members on ``axis``); ``weights`` default to equal.
    """
    p = np.clip(np.asarray(prob_stack, dtype=np.float64), EPS, 1.0)
    log_mean = (np.log(p) * _member_weights(weights, p.ndim, p.shape[axis], axis)).sum(axis=axis)
    out = np.exp(log_mean - log_mean.max(axis=-1, keepdims=True))
    return out / out.sum(axis=-1, keepdims=True)


def arithmetic_mean(prob_stack, weights=None, axis: int = 0) -> np.ndarray:
    p = np.asarray(prob_stack, dtype=np.float64)
    out = (p * _member_weights(weights, p.ndim, p.shape[axis], axis)).sum(axis=axis)
    return out / out.sum(axis=-1, keepdims=True)
