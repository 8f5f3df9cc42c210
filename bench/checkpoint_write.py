"""Checkpoint writes: what the training loop waits for, per writer, against Lightning's own writer.

    python bench/checkpoint_write.py [--archs resnext101_32x4d,resnet50] [--writes 5] [--dir DIR] [--device cuda]
                                     [--tiny]

For each arch, a checkpoint as a train.py job writes it (the TaggingModule's weights and hyper-parameters,
SGD momentum for every parameter, on ``--device``; its size is printed) is written ``--writes`` times into
``--dir`` (default: a temporary folder on the same file system as /tmp; pass the runs folder's disk to measure
that one) by:

- ``lightning``: ``TorchCheckpointIO`` (the whole checkpoint serialised into memory, then copied out): the
  reference, ratio 1;
- ``file``: fstag's ``FileCheckpointIO`` (``torch.save`` into a temporary file, renamed over the target),
  what train.py uses (``checkpoint.async_write=false``, the default);
- ``async``: ``AsyncCheckpointIO`` around it (``checkpoint.async_write=true``): the loop waits
  only for the call (a copy of the tensors on their device), the write goes on in a thread (``drain``: how
  long it went on after the call; the writes are timed one at a time).

Each figure is the median over the writes, in seconds per write, with its ratio to ``lightning``.
``--tiny``: cnn_small, 2 writes, on CPU (a smoke test; its times mean nothing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench import TINY_NOTE, machine  # noqa: E402


def job_checkpoint(arch: str, device) -> dict:
    """The dict a train.py job's last.ckpt holds, near enough: weights, hyper-parameters, SGD momentum."""
    import torch

    from bench.train_throughput import _module

    module = _module(arch, 41, device, channels_last=False).to(device)
    momentum = {i: {"momentum_buffer": torch.randn_like(p)} for i, p in enumerate(module.parameters())}
    return {"epoch": 3, "global_step": 300, "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "optimizer_states": [{"state": momentum, "param_groups": [{"lr": 0.01, "params": list(momentum)}]}]}


def time_writes(io, checkpoint: dict, path: Path, writes: int) -> tuple[float, float]:
    """Medians over ``writes`` writes of the seconds ``io.save_checkpoint`` takes (what the loop waits for) and
    of the wait after it for the write to end (AsyncCheckpointIO's thread; 0 for the others), one at a time."""
    calls, drains = [], []
    for _ in range(writes):
        t0 = time.perf_counter()
        io.save_checkpoint(checkpoint, path)
        t1 = time.perf_counter()
        io.teardown()  # AsyncCheckpointIO: waits for its thread (a new one starts with the next write)
        calls.append(t1 - t0)
        drains.append(time.perf_counter() - t1)
    return statistics.median(calls), statistics.median(drains)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="resnext101_32x4d,resnet50")
    ap.add_argument("--writes", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: cnn_small, 2 writes, CPU")
    a = ap.parse_args(argv)
    if a.tiny:
        a.archs, a.writes, a.device = "cnn_small", 2, "cpu"
        print(TINY_NOTE)
    import torch
    from lightning_fabric.plugins import TorchCheckpointIO
    from pytorch_lightning.plugins.io import AsyncCheckpointIO

    from fstag.train.checkpoint_io import FileCheckpointIO

    device = torch.device(a.device)
    print(f"machine: {machine(device)}")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        print(f"folder: {tmp}; median of {a.writes} writes each")
        print(f"{'arch':<18} {'MB':>7} {'writer':<10} {'s/write':>8} {'ratio':>7} {'drain s':>8}")
        for arch in a.archs.split(","):
            ckpt = job_checkpoint(arch, device)
            path = Path(tmp) / f"{arch}.ckpt"
            ref = None
            for name, io in (("lightning", TorchCheckpointIO()), ("file", FileCheckpointIO()),
                             ("async", AsyncCheckpointIO(FileCheckpointIO()))):
                per_write, drain = time_writes(io, ckpt, path, a.writes)
                ref = ref or per_write
                size = path.stat().st_size / 1e6
                print(f"{arch:<18} {size:>7.1f} {name:<10} {per_write:>8.3f} {per_write / ref:>6.2f}x {drain:>8.3f}", flush=True)
            assert torch.load(path, map_location="cpu", weights_only=False)["epoch"] == 3  # the last write is whole


if __name__ == "__main__":
    main()
