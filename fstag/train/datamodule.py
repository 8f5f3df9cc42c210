"""Datasets over the feature cache and the Lightning DataModule of one fold."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from fstag.models.augment import crop_or_pad, pad_value_of, training_transform

log = logging.getLogger(__name__)


@dataclass
class Rows:
    """Rows of one split of a fold: positions in the feature store, targets and loss weights."""

    index: np.ndarray    # int64 positions in the FeatureStore
    targets: np.ndarray  # int64 class ids (N,), or a (N, C) 0/1 uint8 matrix for a multi-label task
    weights: np.ndarray  # float32 loss weights
    verified: np.ndarray | None = None  # bool: manually verified label (None: all verified)
    start_epoch: np.ndarray | None = None  # int64: the first epoch a row trains in (data.sources.*.from_epoch; None: 0)

    def __len__(self) -> int:
        return len(self.index)


class CropDataset(Dataset):
    """(features cropped to ``length`` frames, target, weight, row, verified); random crops + augmentation
    when training, the first window (or left-aligned padding) otherwise."""

    def __init__(self, store, rows: Rows, length: int, train: bool, aug: Mapping[str, Any], pad_value: float | None = 0.0):
        self.store, self.rows, self.length, self.train = store, rows, length, train
        self.aug, self.pad_value = dict(aug), pad_value

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.asarray(self.store[int(self.rows.index[i])], dtype=np.float32))
        if self.train:
            x = training_transform(x, self.length, self.aug, self.pad_value)
        else:
            x = crop_or_pad(x, self.length, random=False, pad_value=self.pad_value)
        verified = True if self.rows.verified is None else bool(self.rows.verified[i])
        return x, target_of(self.rows.targets, i), float(self.rows.weights[i]), i, verified


def target_of(targets: np.ndarray, i: int):
    """Row ``i``'s target as a batch takes it: a class index (int), or a float32 vector of 0/1 per label."""
    if targets.ndim == 1:
        return int(targets[i])
    return torch.from_numpy(np.asarray(targets[i], dtype=np.float32))


def default_num_workers(on_gpu: bool) -> int:
    """0 on CPU (the model dominates and workers would compete for the cores), up to 8 on a GPU."""
    return min(8, os.cpu_count() or 1) if on_gpu else 0


class FoldDataModule(pl.LightningDataModule):
    def __init__(self, store, train_rows: Rows, val_rows: Rows, loader: Mapping[str, Any], aug: Mapping[str, Any], on_gpu: bool):
        super().__init__()
        self.store, self.train_rows, self.val_rows = store, train_rows, val_rows
        self.loader, self.aug, self.on_gpu = dict(loader), dict(aug), on_gpu
        nw = self.loader.get("num_workers")
        self.num_workers = default_num_workers(on_gpu) if nw is None else int(nw)
        pin = self.loader.get("pin_memory")
        self.pin_memory = on_gpu if pin is None else bool(pin)

    def _loader(self, rows: Rows, train: bool) -> DataLoader:
        ds = CropDataset(self.store, rows, int(self.loader["crop_frames"]), train, self.aug, pad_value_of(self.loader))
        return DataLoader(
            ds,
            batch_size=int(self.loader["batch_size"]),
            shuffle=train,
            drop_last=train and len(ds) > int(self.loader["batch_size"]),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_rows, train=False)
