"""The LightningModule: one training step = batch augmentations -> normalisation -> SpecAugment /
Freq-MixStyle -> mixup -> the task's weighted per-sample loss (fstag.models.losses: cross-entropy
single-label, BCE or focal multi-label); the task's validation metrics over the whole validation set
(gathered across processes under DDP): val_acc1 / val_map3, or val_lwlrap / val_map; the optimiser and
schedule built from their config groups (fstag.models.schedules).

A job whose "validation" rows are rows it trained on (stage=retrain_val) sets :attr:`TaggingModule.metric_prefix`
to ``fit``: its metrics are then ``fit_acc1``, ``fit_map3``, ... and never read as held-out scores."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from fstag.core.task import get_task
from fstag.models.augment import mixup_batch
from fstag.models.batch_aug import freq_mixstyle, simulate_recording, spec_augment
from fstag.models.label_noise import LossPruning
from fstag.models.losses import loss_fn
from fstag.evaluate.metrics import lwlrap, map_at_3_torch, mean_average_precision
from fstag.models.backbones import build_model
from fstag.models.schedules import build_optimizer, build_scheduler, lr_factor  # noqa: F401  (lr_factor: re-exported)

COMPILED_PREFIX = "_orig_mod."


def plain_state_dict(state_dict: dict) -> dict:
    """A state dict without torch.compile's ``_orig_mod.`` wrapper prefix (checkpoints of any fstag load)."""
    return {k.replace(COMPILED_PREFIX, ""): v for k, v in state_dict.items()}


def gather_rows(module: pl.LightningModule, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every process's rows of ``tensors`` (first dim), concatenated in rank order; shards may differ in
    length (Lightning's DistributedSampler pads them to equal length by repeating rows)."""
    n = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = module.all_gather(n).flatten().tolist()
    top = max(sizes)
    out = []
    for t in tensors:
        padded = torch.zeros((top, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[: t.shape[0]] = t
        g = module.all_gather(padded)  # (world, top, ...)
        out.append(torch.cat([g[r, :s] for r, s in enumerate(sizes)]))
    return tuple(out)


def unique_rows(rows: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The first occurrence of each row id, in row order (drops the sampler's padding repeats)."""
    order = torch.argsort(rows, stable=True)
    r = rows[order]
    first = torch.ones_like(r, dtype=torch.bool)
    first[1:] = r[1:] != r[:-1]
    keep = order[first]
    return (rows[keep], *(t[keep] for t in tensors))


class TaggingModule(pl.LightningModule):
    """``hparams``: plain containers only, so checkpoints reload with torch's default ``weights_only=True``:
    ``arch``, ``labels``, ``optimizer``, ``scheduler``, ``mixup``, ``gpu``, and (all optional, off when
    absent) ``loss`` (label_smoothing, name, focal_gamma), ``specaug``, ``recording`` (the aug group's
    recording-condition simulation), ``mixstyle``, ``noise`` (label-noise handling), ``band_stats`` (input
    standardisation, carried by the checkpoint), ``frame_rate`` (feature frames per second), ``task``
    (``single_label``, the default of checkpoints made before tasks, or ``multi_label``).

    Set by the train job, not saved: :attr:`metric_prefix` (``val``, or ``fit`` for in-sample rows) and
    :attr:`row_start_epoch` (each training row's first epoch, ``data.sources.*.from_epoch``)."""

    def __init__(self, arch: dict, labels: list[str], optimizer: dict, scheduler: dict, mixup: dict,
                 gpu: dict | None = None, cpu: dict | None = None, loss: dict | None = None, specaug: dict | None = None,
                 recording: dict | None = None, mixstyle: dict | None = None, noise: dict | None = None,
                 band_stats: dict | None = None, frame_rate: float = 100.0, task: str = "single_label"):
        super().__init__()
        self.save_hyperparameters()
        self.labels = list(labels)
        self.task = get_task(task)
        self.loss_of = loss_fn(self.task, loss)
        self.model = build_model(arch, num_classes=len(labels), band_stats=band_stats)
        self.pruning = LossPruning(noise) if (noise or {}).get("name", "none") != "none" else None
        self.metric_prefix = "val"
        self.row_start_epoch: torch.Tensor | None = None
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> "TaggingModule":
        """A trained model from its checkpoint, in eval mode, without network or the files it was first
        built from: the architecture is rebuilt with ``pretrained=false`` (every weight is in the checkpoint)
        and torch.compile's key prefix, if any, is dropped. ``weights_only`` load: no pickled objects."""
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        module = cls(**for_reloading(ckpt["hyper_parameters"]))
        module.load_state_dict(plain_state_dict(ckpt["state_dict"]))
        return module.eval()

    def compile_model(self, backend: str = "inductor") -> None:
        """torch.compile the backbone in place (``nn.Module.compile``): the module's state dict keeps its
        plain names, so checkpoints load without compiling (predict.py, retrain_val, other machines)."""
        self.model.compile(backend=backend)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = plain_state_dict(checkpoint["state_dict"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._classify(self.model.normalize(x))

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone on normalised inputs (channels_last when ``gpu.channels_last`` on a GPU, or
        ``cpu.channels_last`` on the CPU)."""
        if ((self.hparams.gpu if x.is_cuda else self.hparams.get("cpu")) or {}).get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.classify(x)

    def _per_sample_ce(self, logits, y):
        """The task's per-sample loss (cross-entropy single-label; BCE or focal multi-label)."""
        return self.loss_of(logits, y)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from logits as the task makes them: softmax (single-label) or sigmoid per label."""
        return torch.sigmoid(logits.float()) if self.task.multi_label else torch.softmax(logits.float(), dim=1)

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
        if self.row_start_epoch is not None:  # a source that joins later (data.sources.<source>.from_epoch)
            w = w * (self.row_start_epoch.to(rows.device)[rows.long()] <= self.current_epoch).to(w)
        x = self.augment(x)
        mix = self.hparams.mixup
        if mix.get("enabled") and float(torch.rand(())) < float(mix["prob"]):
            x, ya, yb, wa, wb, lam = mixup_batch(x, y, w, float(mix["alpha"]))
            logits = self._classify(x)
            if self.task.multi_label:  # the targets are mixed as the inputs are (PANNs' mixup)
                own = self._per_sample_ce(logits, lam * ya.float() + (1 - lam) * yb.float())
                loss = self._weighted_mean(own, lam * wa + (1 - lam) * wb)
            else:
                own = self._per_sample_ce(logits, ya)
                loss = lam * self._weighted_mean(own, wa) + (1 - lam) * self._weighted_mean(self._per_sample_ce(logits, yb), wb)
        else:
            logits = self._classify(x)
            own = self._per_sample_ce(logits, y)
            loss = self._weighted_mean(own, w)
        if self.pruning is not None:  # every process observes every row's loss, so all drop the same rows
            seen = (rows.long(), own.detach())
            self.pruning.observe(*(gather_rows(self, *seen) if self.trainer.world_size > 1 else seen))
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def on_train_epoch_end(self):
        if self.pruning is not None:
            dropped = self.pruning.update(self.current_epoch)
            self.log("noise_dropped", float(dropped))

    def validation_step(self, batch, batch_idx):
        x, y, rows = batch[0], batch[1], batch[3]
        logits = self(x).float()
        self._val.append((logits.detach(), y.detach(), torch.as_tensor(rows, device=logits.device).long()))

    def validation_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, logits, targets) of the epoch's whole validation set, each row once, in row order: under
        DDP every process's shard is gathered, so the metrics equal a single process's."""
        if not self._val:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        logits, targets, rows = (torch.cat(t) for t in zip(*self._val))
        self._val.clear()
        if self.trainer is not None and self.trainer.world_size > 1:
            logits, targets, rows = gather_rows(self, logits, targets, rows)
        return unique_rows(rows, logits, targets)

    def on_validation_epoch_end(self):
        if not self._val:
            return
        _, logits, targets = self.validation_rows()
        p = self.metric_prefix
        # over all rows: every process computes the same values, so early stopping and checkpoints agree
        # (sync_dist averages the processes' equal values: the same number, and Lightning's reduction)
        if self.task.multi_label:
            probs, y = torch.sigmoid(logits.float()).cpu().numpy(), targets.cpu().numpy()
            self.log(f"{p}_loss", F.binary_cross_entropy_with_logits(logits.float(), targets.float()), sync_dist=True)
            self.log(f"{p}_lwlrap", torch.tensor(lwlrap(probs, y), device=logits.device), prog_bar=True, sync_dist=True)
            self.log(f"{p}_map", torch.tensor(mean_average_precision(probs, y), device=logits.device), prog_bar=True,
                     sync_dist=True)
            return
        # sample-averaged top-1 accuracy (not torchmetrics' per-class default) and Kaggle MAP@3
        self.log(f"{p}_loss", F.cross_entropy(logits, targets), prog_bar=False, sync_dist=True)
        self.log(f"{p}_acc1", (logits.argmax(1) == targets).float().mean(), prog_bar=True, sync_dist=True)
        self.log(f"{p}_map3", map_at_3_torch(logits, targets), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.hparams.optimizer, self.parameters())
        trainer = self.trainer
        total = int(trainer.estimated_stepping_batches) if trainer is not None else 1
        epochs = max(1, int(trainer.max_epochs or 1)) if trainer is not None else 1
        per_epoch = max(1, total // epochs)
        return {"optimizer": opt, "lr_scheduler": build_scheduler(self.hparams.scheduler, opt, total, per_epoch, epochs)}


def without_initial_weights(arch: dict) -> dict:
    """An ``arch`` config that builds the network without ImageNet weights or ``arch.pretrained_path``
    (for a model whose every weight is loaded afterwards)."""
    return {**dict(arch), "pretrained": False, "pretrained_path": None}


def for_reloading(hparams: dict) -> dict:
    """A checkpoint's hyper-parameters for reloading it: never a download nor a read of the initial weights."""
    return {**hparams, "arch": without_initial_weights(hparams["arch"])}
