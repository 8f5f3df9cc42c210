"""Learning-rate schedules as multiplicative factors of the base rate (torch ``LambdaLR``).

``scheduler.name``:

- ``seed``: the seed's per-epoch schedule, cosine annealing (period ``cosine_t_max`` epochs, as torch's
  CosineAnnealingLR with eta_min=0) times ``step_gamma`` per passed milestone in ``step_milestones``;
- ``warmup_cosine``: per optimizer step, a linear warm-up over ``warmup_epochs`` then a cosine decay to
  ``final_lr_ratio`` of the base rate at the last step (one-cycle shaped, for AdamW from scratch).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

SCHEDULERS = ("seed", "warmup_cosine")


def lr_factor(epoch: int, cosine_t_max: int, milestones, gamma: float) -> float:
    """The seed's per-epoch factor."""
    cos = 0.5 * (1.0 + math.cos(math.pi * epoch / cosine_t_max)) if cosine_t_max else 1.0
    steps = sum(1 for m in milestones if epoch >= m)
    return cos * gamma**steps


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, final_ratio: float) -> float:
    """Linear warm-up from ~0 to 1 over ``warmup_steps``, then cosine from 1 to ``final_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule(cfg: Mapping[str, Any], total_steps: int, steps_per_epoch: int) -> tuple[Callable[[int], float], str]:
    """(factor function, Lightning interval) for a ``scheduler`` config."""
    name = str(cfg.get("name", "seed"))
    if name == "seed":
        t_max, milestones, gamma = int(cfg["cosine_t_max"]), list(cfg["step_milestones"]), float(cfg["step_gamma"])
        return (lambda epoch: lr_factor(epoch, t_max, milestones, gamma)), "epoch"
    if name == "warmup_cosine":
        warmup = max(1, int(round(float(cfg["warmup_epochs"]) * steps_per_epoch)))
        final = float(cfg["final_lr_ratio"])
        return (lambda step: warmup_cosine_factor(step, total_steps, warmup, final)), "step"
    raise ValueError(f"scheduler.name={name!r}: choose one of {SCHEDULERS}")
