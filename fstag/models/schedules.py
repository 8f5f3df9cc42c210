"""Learning-rate schedules, built from the ``scheduler`` config group with ``hydra.utils.instantiate``.

A scheduler config is a partial of a torch scheduler (or of a function returning one) plus Lightning's
``lr_scheduler`` keys ``interval`` (epoch | step) and ``frequency``. A ``???`` argument is a value only
known at fit time and is filled by ``build_scheduler``: ``total_steps`` / ``T_max`` (the run's optimiser
steps, or epochs when interval=epoch), ``steps_per_epoch``, ``epochs``.

- ``seed_schedule``: the seed's per-epoch schedule, cosine annealing (period ``cosine_t_max`` epochs, as
  torch's CosineAnnealingLR with eta_min=0) times ``step_gamma`` per passed milestone, as a LambdaLR;
- ``warmup_cosine_schedule``: per optimizer step, a linear warm-up over ``warmup_epochs`` then a cosine
  decay to ``final_lr_ratio`` of the base rate at the last step (one-cycle shaped, for AdamW from scratch);
- any torch scheduler (conf/scheduler/onecycle.yaml, cosine.yaml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from omegaconf import OmegaConf

LIGHTNING_KEYS = ("interval", "frequency")
FIT_TIME = "???"


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


@dataclass(frozen=True)
class SeedFactor:
    """``lr_factor`` as a picklable callable (LambdaLR's lr_lambda)."""

    cosine_t_max: int
    milestones: tuple
    gamma: float

    def __call__(self, epoch: int) -> float:
        return lr_factor(epoch, self.cosine_t_max, self.milestones, self.gamma)


@dataclass(frozen=True)
class WarmupCosineFactor:
    total_steps: int
    warmup_steps: int
    final_ratio: float

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.total_steps, self.warmup_steps, self.final_ratio)


def seed_schedule(optimizer: torch.optim.Optimizer, cosine_t_max: int, step_milestones, step_gamma: float):
    """The seed's cosine x step schedule (per epoch) as torch's LambdaLR."""
    factor = SeedFactor(int(cosine_t_max), tuple(int(m) for m in step_milestones), float(step_gamma))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_epochs: float, final_lr_ratio: float,
                           total_steps: int, steps_per_epoch: int):
    """Linear warm-up then cosine decay, per optimiser step, as torch's LambdaLR."""
    warmup = max(1, int(round(float(warmup_epochs) * int(steps_per_epoch))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosineFactor(int(total_steps), warmup, float(final_lr_ratio)))


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: int,
                    steps_per_epoch: int, epochs: int) -> dict:
    """Lightning's ``lr_scheduler`` dict for a ``scheduler`` config and the fit's step counts."""
    from hydra.utils import instantiate

    cfg = dict(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg)
    if "_target_" not in cfg:
        raise ValueError(f"scheduler config has no _target_ (keys: {sorted(cfg)}); choose a group: scheduler=seed|cosine|onecycle|warmup_cosine")
    lightning = {k: cfg.pop(k) for k in LIGHTNING_KEYS if k in cfg}
    interval = str(lightning.setdefault("interval", "epoch"))
    if interval not in ("epoch", "step"):
        raise ValueError(f"scheduler.interval={interval!r}: choose epoch or step")
    fit = {"total_steps": total_steps if interval == "step" else epochs, "steps_per_epoch": steps_per_epoch, "epochs": epochs}
    fit["T_max"] = fit["total_steps"]
    for key, value in cfg.items():
        if value == FIT_TIME:
            if key not in fit:
                raise ValueError(f"scheduler.{key}=??? is not a fit-time value; fstag fills {sorted(fit)}")
            cfg[key] = fit[key]
    scheduler = instantiate({**cfg, "_partial_": True})(optimizer)
    return {"scheduler": scheduler, **lightning}


def build_optimizer(cfg: Mapping[str, Any], params) -> torch.optim.Optimizer:
    """The ``optimizer`` config (a partial of a torch optimiser) applied to ``params``."""
    from hydra.utils import instantiate

    cfg = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    if "_target_" not in cfg:
        raise ValueError(f"optimizer config has no _target_ (keys: {sorted(cfg)}); choose a group: optimizer=sgd|adamw")
    return instantiate({**cfg, "_partial_": True})(params)
