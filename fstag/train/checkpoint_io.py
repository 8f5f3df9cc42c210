"""How a job's checkpoints reach the disk (``checkpoint:`` in conf/train.yaml).

- :class:`FileCheckpointIO`: ``torch.save`` straight into a temporary file beside the target, renamed over
  it (atomic, as Lightning's own writer is). Lightning's ``TorchCheckpointIO`` first serialises the whole
  checkpoint into an in-memory buffer and copies it out through fsspec. On the 2-core CPU machine
  (``python bench/checkpoint_write.py``, docs/benchmarks.md) a write of resnext101_32x4d's 338 MB (weights +
  SGD momentum) took 1.04 s that way against 0.80 s here, resnet50's 189 MB 0.59 s against 0.34 s. Paths on
  other file systems (``s3://``...) keep Lightning's writer.
- ``checkpoint.async_write=true``: Lightning's ``AsyncCheckpointIO`` around it, so the loop waits only for a
  copy of the tensors while a background thread writes; the fit waits for the last write before it
  returns, so ``best.ckpt`` is whole when the job predicts with it. Off by default: on the 2-core CPU a
  resnext101_32x4d epoch took as long either way (3.07 vs 3.10 s), since the copy and the writer's share
  of the cores and of the GIL cost what the wait saved; whether it pays on a GPU, where the loop's thread
  only launches kernels, is for bench/epoch_time.py to say.
- ``checkpoint.best_weights_only``: ``best.ckpt`` holds the weights, hyper-parameters and epoch (what
  predict.py, retrain_val, self-training teachers and the MLflow artifact use), not the optimizer state:
  half the bytes of a ResNeXt's. ``last.ckpt``, which resuming reads, stays whole.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.plugins.io import AsyncCheckpointIO, CheckpointIO, TorchCheckpointIO

from fstag.core.io import write_with


class FileCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, less the in-memory copy of the checkpoint (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(str(path)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        write_with(path, lambda tmp: torch.save(checkpoint, tmp))


def checkpoint_io(settings: dict | None) -> CheckpointIO:
    """The writer of ``checkpoint.*`` settings (None: the default, a FileCheckpointIO that the loop waits for)."""
    settings = settings or {}
    unknown = set(settings) - {"async_write", "best_weights_only"}
    if unknown:
        raise ValueError(f"checkpoint.{sorted(unknown)[0]}: not a setting; checkpoint.* has async_write and best_weights_only")
    io = FileCheckpointIO()
    return AsyncCheckpointIO(io) if settings.get("async_write", False) else io
