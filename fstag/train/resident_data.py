"""The device-resident input path of training (``loader.resident``): the fold's clips live on the training
device (:class:`fstag.train.resident_store.ResidentStore`) and each batch is cut there in one gather, so
no DataLoader worker, pinned copy or per-epoch worker restart is on the critical path. SpecAugment,
mixup and the other batch augmentations already run on the batch's device, in the LightningModule.

It gives the CPU path's batches (:class:`fstag.train.datamodule.FoldDataModule`, num_workers=0), to the bit,
for the same seed: a :class:`DrawDataset` is the CPU path's dataset without the clips. It is read through
a DataLoader of the same sampler, batch size and drop_last in the main process; it draws each clip's crop
and specmask_concat parameters (:func:`fstag.models.augment.draw_clip`) from torch's global RNG in the
same order as the CPU path's ``CropDataset``, so the crops, the masks and every later draw from that RNG
(the module's mixup pairs and lambda) are the same. A batch travels to the device as one small int64
table (:data:`COLUMNS`); ``on_after_batch_transfer`` turns it into the CPU path's
``(x, y, weight, row, verified)`` there.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fstag.models.augment import draw_clip, pad_value_of
from fstag.train.datamodule import FoldDataModule, Rows
from fstag.train.resident_store import ResidentStore, clip_frames, nbytes_of, resident_choice, use_resident

log = logging.getLogger(__name__)

COLUMNS = ("row", "concat", "w", "t0", "h", "f0", "shift")  # a batch's table, one line per clip


def _as_batch(table: torch.Tensor, train: bool) -> dict[str, Any]:
    """The DataLoader's collate function (:meth:`DrawDataset.__getitems__` already makes the table): the
    batch names its split on the host, so turning it into inputs never waits for the device."""
    return {"draws": table, "train": train}


class DrawDataset(Dataset):
    """Row ``i`` of a split as one line of :data:`COLUMNS`: training rows draw their clip's parameters
    (global RNG, the CPU path's order), validation rows take the first window."""

    def __init__(self, frames: np.ndarray, n_mels: int, length: int, train: bool, aug: Mapping[str, Any]):
        self.frames, self.n_mels, self.length, self.train, self.aug = frames, n_mels, length, train, dict(aug)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        out = torch.zeros(len(indices), len(COLUMNS), dtype=torch.int64)
        for j, i in enumerate(indices):
            i = int(i)
            if self.train:
                d = draw_clip(int(self.frames[i]), self.n_mels, self.length, self.aug)
                out[j] = torch.tensor((i, int(d.concat), *d.mask, d.shift))
            else:
                out[j, 0] = i
        return out

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]


class _RowTensors:
    """A split's rows on the device: their clips' places in the resident store, targets, weights, verified."""

    def __init__(self, rows: Rows, resident: ResidentStore):
        dev = resident.device
        self.slot = torch.from_numpy(resident.slot(rows.index)).to(dev)
        multi = np.asarray(rows.targets).ndim == 2  # a multi-label task's 0/1 matrix: float, as the CPU path collates it
        self.targets = torch.as_tensor(rows.targets, dtype=torch.float32 if multi else torch.int64).to(dev)
        self.weights = torch.as_tensor(rows.weights, dtype=torch.float64).to(dev)  # the CPU path collates floats as float64
        verified = np.ones(len(rows), bool) if rows.verified is None else rows.verified
        self.verified = torch.as_tensor(verified, dtype=torch.bool).to(dev)


class ResidentDataModule(FoldDataModule):
    """:class:`FoldDataModule` with the clips on the training device (placed in :meth:`setup`, on the
    Trainer's device, or by :meth:`place`)."""

    def __init__(self, store, train_rows: Rows, val_rows: Rows, loader: Mapping[str, Any], aug: Mapping[str, Any],
                 on_gpu: bool):
        super().__init__(store, train_rows, val_rows, loader, aug, on_gpu)
        self.num_workers, self.pin_memory = 0, False
        self.resident: ResidentStore | None = None
        self._split: dict[bool, _RowTensors] = {}

    def place(self, device: torch.device) -> None:
        if self.resident is not None and self.resident.device == torch.device(device):
            return
        self.resident = ResidentStore(self.store, np.concatenate([self.train_rows.index, self.val_rows.index]), device)
        self._split = {True: _RowTensors(self.train_rows, self.resident), False: _RowTensors(self.val_rows, self.resident)}
        log.info("input path: %d clips resident on %s (%.2f GB), batches cut there", len(self.resident.lengths),
                 self.resident.device, self.resident.nbytes / 1e9)

    def setup(self, stage: str | None = None) -> None:
        self.place(self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu"))

    def _loader(self, rows: Rows, train: bool) -> DataLoader:
        n_mels = self.resident.n_mels if self.resident is not None else int(np.asarray(self.store[int(rows.index[0])]).shape[1])
        ds = DrawDataset(clip_frames(self.store, rows.index), n_mels, int(self.loader["crop_frames"]), train, self.aug)
        bs = int(self.loader["batch_size"])
        # the tables are pinned on a GPU, so their copies never wait for the device's queued work
        return DataLoader(ds, batch_size=bs, shuffle=train, drop_last=train and len(ds) > bs, num_workers=0,
                          collate_fn=partial(_as_batch, train=train), pin_memory=self.on_gpu)

    def batch_of(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """``(x, y, weight, row, verified)`` of a batch of draws, on the resident store's device."""
        table, split = batch["draws"].to(self.resident.device), self._split[bool(batch["train"])]
        row = table[:, 0]
        slots = split.slot[row]
        x = self.resident.crops(slots, table[:, 1], table[:, 2:6], table[:, 6], int(self.loader["crop_frames"]),
                                float(self.aug.get("mask_value", 0.0)), pad_value_of(self.loader))
        return x, split.targets[row], split.weights[row], row, split.verified[row]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.batch_of(batch) if isinstance(batch, dict) and "draws" in batch else batch


def fold_datamodule(store, train_rows: Rows, val_rows: Rows, loader: Mapping[str, Any], aug: Mapping[str, Any],
                    on_gpu: bool) -> FoldDataModule:
    """The job's data module: resident (``loader.resident``: true, or auto on a GPU when the clips fit) or
    the CPU DataLoader path (the default on CPU)."""
    value = loader.get("resident", "auto")
    choice = resident_choice(value)
    if choice == "false" or (choice == "auto" and not on_gpu):
        return FoldDataModule(store, train_rows, val_rows, loader, aug, on_gpu)
    index = np.concatenate([train_rows.index, val_rows.index])
    n_mels = int(np.asarray(store[int(index[0])]).shape[1])
    nbytes = nbytes_of(store, index, n_mels)
    if use_resident(value, torch.device("cuda" if on_gpu else "cpu"), nbytes):
        return ResidentDataModule(store, train_rows, val_rows, loader, aug, on_gpu)
    log.info("loader.resident=auto: the fold's features (%.2f GB) take more than a quarter of the GPU's free memory; "
             "the CPU DataLoader path", nbytes / 1e9)
    return FoldDataModule(store, train_rows, val_rows, loader, aug, on_gpu)
