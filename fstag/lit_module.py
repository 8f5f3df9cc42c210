"""The LightningModule: one training step = batch augmentations -> normalisation -> SpecAugment /
Freq-MixStyle -> mixup -> weighted (label-smoothed) cross-entropy; val_acc1 / val_map3; the optimiser and
schedule of the recipe (the seed's SGD + cosine x step, or AdamW + warm-up cosine)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from fstag.augment import mixup_batch
from fstag.batch_aug import freq_mixstyle, simulate_recording, spec_augment
from fstag.label_noise import LossPruning
from fstag.metrics import map_at_3_torch
from fstag.models import build_model
from fstag.schedules import lr_factor, schedule  # noqa: F401  (lr_factor: the seed's, re-exported)

OPTIMIZERS = ("sgd", "adamw")


class TaggingModule(pl.LightningModule):
    """``hparams``: plain containers only, so checkpoints reload with torch's default ``weights_only=True``:
    ``arch``, ``labels``, ``optimizer``, ``scheduler``, ``mixup``, ``gpu``, and (all optional, off when
    absent) ``loss`` (label_smoothing), ``specaug``, ``recording`` (the aug group's recording-condition
    simulation), ``mixstyle``, ``noise`` (label-noise handling), ``band_stats`` (input standardisation,
    carried by the checkpoint), ``frame_rate`` (feature frames per second)."""

    def __init__(self, arch: dict, labels: list[str], optimizer: dict, scheduler: dict, mixup: dict,
                 gpu: dict | None = None, loss: dict | None = None, specaug: dict | None = None,
                 recording: dict | None = None, mixstyle: dict | None = None, noise: dict | None = None,
                 band_stats: dict | None = None, frame_rate: float = 100.0):
        super().__init__()
        self.save_hyperparameters()
        self.labels = list(labels)
        self.model = build_model(arch, num_classes=len(labels), band_stats=band_stats)
        self.pruning = LossPruning(noise) if (noise or {}).get("name", "none") != "none" else None
        self._val_logits: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._classify(self.model.normalize(x))

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone on normalised inputs (channels_last on a GPU when gpu.channels_last)."""
        if (self.hparams.gpu or {}).get("channels_last") and x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.classify(x)

    def _per_sample_ce(self, logits, y):
        smoothing = float((self.hparams.loss or {}).get("label_smoothing", 0.0))
        return F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=smoothing)

    @staticmethod
    def _weighted_mean(per_sample, w):
        return (per_sample * w).sum() / w.sum().clamp_min(1e-8)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """The per-batch augmentations of a training batch of raw features, up to normalised inputs."""
        rec = self.hparams.recording
        if rec and rec.get("enabled", True):
            x = simulate_recording(x, rec, float(self.hparams.frame_rate))
        x = self.model.normalize(x)
        sa = self.hparams.specaug
        if sa and sa.get("enabled"):
            x = spec_augment(x, int(sa["time_masks"]), int(sa["time_width"]), int(sa["freq_masks"]), int(sa["freq_width"]))
        ms = self.hparams.mixstyle
        if ms and ms.get("enabled"):
            x = freq_mixstyle(x, float(ms["prob"]), float(ms["alpha"]))
        return x

    def training_step(self, batch, batch_idx):
        x, y, w, rows, verified = batch
        w = w.float()
        if self.pruning is not None:
            w = w * self.pruning.keep(rows, verified).to(w)
        x = self.augment(x)
        mix = self.hparams.mixup
        if mix.get("enabled") and float(torch.rand(())) < float(mix["prob"]):
            x, ya, yb, wa, wb, lam = mixup_batch(x, y, w, float(mix["alpha"]))
            logits = self._classify(x)
            own = self._per_sample_ce(logits, ya)
            loss = lam * self._weighted_mean(own, wa) + (1 - lam) * self._weighted_mean(self._per_sample_ce(logits, yb), wb)
        else:
            logits = self._classify(x)
            own = self._per_sample_ce(logits, y)
            loss = self._weighted_mean(own, w)
        if self.pruning is not None:
            self.pruning.observe(rows, own.detach())
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return loss

    def on_train_epoch_end(self):
        if self.pruning is not None:
            dropped = self.pruning.update(self.current_epoch)
            self.log("noise_dropped", float(dropped))

    def validation_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
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

    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.hparams.optimizer
        name = str(o.get("name", "sgd"))
        if name == "sgd":
            return torch.optim.SGD(self.parameters(), lr=float(o["lr"]), momentum=float(o["momentum"]),
                                   weight_decay=float(o["weight_decay"]), nesterov=bool(o.get("nesterov", False)))
        if name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=float(o["lr"]), weight_decay=float(o["weight_decay"]),
                                     betas=tuple(float(b) for b in o.get("betas", (0.9, 0.999))))
        raise ValueError(f"optimizer.name={name!r}: choose one of {OPTIMIZERS}")

    def configure_optimizers(self) -> Any:
        opt = self._optimizer()
        total = int(self.trainer.estimated_stepping_batches) if self.trainer is not None else 1
        per_epoch = max(1, total // max(1, int(self.trainer.max_epochs or 1))) if self.trainer is not None else 1
        factor, interval = schedule(self.hparams.scheduler, total, per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}
