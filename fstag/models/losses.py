"""Per-sample losses of the task's shape (:mod:`fstag.core.task`), as plain functions of logits and targets:

- single-label: cross-entropy against class indices, with label smoothing (``loss.label_smoothing``);
- multi-label: BCE-with-logits against 0/1 (or mixed) label vectors, averaged over the labels, with binary
  label smoothing (each target ``y`` becomes ``y (1 - e) + e / 2``), or the sigmoid focal loss of Lin et
  al. (``loss.name=focal``, ``loss.focal_gamma``), which down-weights the many easy negatives of a large
  vocabulary.

``loss_fn(task, loss_cfg)`` returns ``f(logits, targets) -> (B,)`` losses; the LightningModule weighs and
averages them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

LOSSES = {"single_label": ("ce",), "multi_label": ("bce", "focal")}


class LossConfigError(ValueError):
    """A ``loss.*`` setting that does not fit the task; the message names the key and the choices."""


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="none", label_smoothing=smoothing)


def smooth_binary(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Binary label smoothing: ``y (1 - e) + e / 2`` (a sure 0/1 becomes e/2 and 1 - e/2)."""
    return targets if not smoothing else targets * (1.0 - smoothing) + 0.5 * smoothing


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """BCE-with-logits per sample, averaged over the labels."""
    t = smooth_binary(targets.float(), smoothing)
    return F.binary_cross_entropy_with_logits(logits.float(), t, reduction="none").mean(dim=1)


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, smoothing: float = 0.0) -> torch.Tensor:
    """The sigmoid focal loss (Lin et al., 2017) per sample, averaged over the labels: BCE scaled by
    ``(1 - p_t) ** gamma``, where ``p_t`` is the probability given to the target (soft targets: the
    target-weighted mix of the two sides)."""
    t = smooth_binary(targets.float(), smoothing)
    x = logits.float()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = torch.sigmoid(x)
    p_t = p * t + (1.0 - p) * (1.0 - t)
    return ((1.0 - p_t).clamp_min(0.0) ** float(gamma) * bce).mean(dim=1)


def loss_name(task, loss_cfg: Mapping[str, Any] | None) -> str:
    """``loss.name`` resolved for the task (``auto``: ``ce`` single-label, ``bce`` multi-label), checked."""
    name = str((loss_cfg or {}).get("name", "auto") or "auto")
    allowed = LOSSES[task.name]
    if name == "auto":
        return allowed[0]
    if name not in allowed:
        raise LossConfigError(f"loss.name={name!r} does not fit task={task.name}: choose auto or one of {', '.join(allowed)}")
    return name


def loss_fn(task, loss_cfg: Mapping[str, Any] | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's per-sample loss ``f(logits, targets) -> (B,)`` as ``loss.*`` configures it."""
    cfg = dict(loss_cfg or {})
    smoothing = float(cfg.get("label_smoothing", 0.0))
    name = loss_name(task, cfg)
    if name == "ce":
        return lambda logits, y: cross_entropy(logits, y, smoothing)
    if name == "bce":
        return lambda logits, y: binary_cross_entropy(logits, y, smoothing)
    gamma = float(cfg.get("focal_gamma", 2.0))
    return lambda logits, y: sigmoid_focal(logits, y, gamma, smoothing)
