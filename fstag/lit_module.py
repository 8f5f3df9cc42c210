"""The LightningModule: weighted cross-entropy with mixup, SGD with the seed's schedule, val_acc1/val_map3."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from fstag.augment import mixup_batch
from fstag.metrics import map_at_3_torch
from fstag.models import build_model


def lr_factor(epoch: int, cosine_t_max: int, milestones, gamma: float) -> float:
    """The seed's schedule: cosine annealing (period ``cosine_t_max`` epochs, as torch's
    CosineAnnealingLR with eta_min=0) times ``gamma`` per milestone passed."""
    cos = 0.5 * (1.0 + math.cos(math.pi * epoch / cosine_t_max)) if cosine_t_max else 1.0
    steps = sum(1 for m in milestones if epoch >= m)
    return cos * gamma**steps


class TaggingModule(pl.LightningModule):
    """``hparams``: plain containers only (``arch``, ``optimizer``, ``scheduler``, ``mixup``, ``gpu``,
    ``labels``), so checkpoints reload with torch's default ``weights_only=True``."""

    def __init__(self, arch: dict, labels: list[str], optimizer: dict, scheduler: dict, mixup: dict, gpu: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.labels = list(labels)
        self.model = build_model(arch, num_classes=len(labels))
        self._val_logits: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.hparams.gpu or {}).get("channels_last") and x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    @staticmethod
    def _weighted_ce(logits, y, w):
        return (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum().clamp_min(1e-8)

    def training_step(self, batch, batch_idx):
        x, y, w = batch
        w = w.float()
        mix = self.hparams.mixup
        if mix.get("enabled") and float(torch.rand(())) < float(mix["prob"]):
            x, ya, yb, wa, wb, lam = mixup_batch(x, y, w, float(mix["alpha"]))
            logits = self(x)
            loss = lam * self._weighted_ce(logits, ya, wa) + (1 - lam) * self._weighted_ce(logits, yb, wb)
        else:
            logits = self(x)
            loss = self._weighted_ce(logits, y, w)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        logits = self(x).float()
        self._val_logits.append(logits.detach())
        self._val_targets.append(y.detach())

    def on_validation_epoch_end(self):
        if not self._val_logits:
            return
        logits = torch.cat(self._val_logits)
        targets = torch.cat(self._val_targets)
        self._val_logits.clear()
        self._val_targets.clear()
        # sample-averaged top-1 accuracy (not torchmetrics' per-class default) and Kaggle MAP@3
        self.log("val_loss", F.cross_entropy(logits, targets), prog_bar=False)
        self.log("val_acc1", (logits.argmax(1) == targets).float().mean(), prog_bar=True)
        self.log("val_map3", map_at_3_torch(logits, targets), prog_bar=True)

    def configure_optimizers(self) -> Any:
        o, s = self.hparams.optimizer, self.hparams.scheduler
        opt = torch.optim.SGD(
            self.parameters(), lr=float(o["lr"]), momentum=float(o["momentum"]),
            weight_decay=float(o["weight_decay"]), nesterov=bool(o.get("nesterov", False)),
        )
        t_max, milestones, gamma = int(s["cosine_t_max"]), list(s["step_milestones"]), float(s["step_gamma"])

        def schedule(epoch: int) -> float:
            return lr_factor(epoch, t_max, milestones, gamma)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
