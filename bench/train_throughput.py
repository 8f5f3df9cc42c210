"""Training throughput of the real pipeline against the model's own limit, in one process.

    python bench/train_throughput.py [--archs resnext101_32x4d,resnet50] [--batches 128,512] [--steps 50]
                                     [--inputs loader,resident] [--compile off,on]
                                     [--memory-format contiguous,channels_last] [--tiny]

For each arch x batch size x compile x memory format it measures samples/s of
  (a) the limit (model-only): forward + backward + SGD step on random tensors already on the device, same
      precision (bf16 autocast on GPU) and memory format (``--memory-format``; default channels_last on a
      GPU, as gpu.channels_last, contiguous on CPU, as cpu.channels_last=false);
  (b) the real pipeline, by input path (``--inputs``): ``loader``, the feature store -> CropDataset (crop/pad,
      specmask_concat) -> DataLoader (workers, pinned memory), or ``resident`` (``loader.resident=true``:
      the clips on the device, crops cut there in batch, fstag/train/resident_data.py), then the Lightning
      training_step with mixup, via pl.Trainer;
and prints (b)/(a). ``--compile on``: the backbone torch.compile'd (gpu.compile=true) in (a) and (b); its
compilation happens in the warm-up steps and is printed as the warm-up's extra seconds. The feature store is an in-memory stand-in with FSDKaggle2018-like clip lengths
(float16, 3x64xT), so the figure isolates the training path from disk speed.
An arch with a conf/arch/<arch>.yaml is built from it (cnn_small with its kwargs), any other as a timm name,
never with pretrained weights. The module's optimiser, schedule and mixup are conf/'s (``optimizer=sgd scheduler=seed``, the seed's
recipe), composed by Hydra and built by ``hydra.utils.instantiate`` as train.py builds them.
On a CPU-only machine the defaults shrink to the small CNN. ``--tiny``: the same path on CPU with the small
CNN, batch 8, 3 timed steps over 64 clips, both input paths, no compile (seconds; a smoke test, not a
measurement).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import TINY_NOTE, compose_train, machine  # noqa: E402
from fstag.core.config import to_plain  # noqa: E402
from fstag.models.module import TaggingModule  # noqa: E402
from fstag.train.datamodule import FoldDataModule, Rows  # noqa: E402
from fstag.train.resident_data import ResidentDataModule  # noqa: E402

# the seed's recipe: the config groups train.py composes by default
RECIPE = ["optimizer=sgd", "scheduler=seed"]


class MemoryStore:
    """FeatureStore stand-in: float16 (3, 64, T) clips with lengths drawn like FSDKaggle2018's
    (0.3-30 s, median ~3 s at 100 frames/s)."""

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        lengths = np.clip(rng.lognormal(np.log(300), 0.9, n), 30, 3000).astype(int)
        self.clips = [rng.standard_normal((3, 64, t)).astype(np.float16) for t in lengths]
        self.fnames = [f"{i:08x}.wav" for i in range(n)]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.clips[i]

    def __len__(self) -> int:
        return len(self.clips)


def _arch_group(arch: str) -> list[str]:
    """The arch overrides: conf/arch/<arch>.yaml when there is one (its kwargs, e.g. cnn_small's pool), else
    a timm name."""
    from fstag.core.config import CONFIG_DIR

    return [f"arch={arch}"] if (Path(CONFIG_DIR) / "arch" / f"{arch}.yaml").is_file() else ["arch=resnet50", f"arch.name={arch}"]


def _module(arch: str, n_classes: int, device: torch.device, channels_last: bool) -> TaggingModule:
    cfg = compose_train([*RECIPE, *_arch_group(arch)])  # one composition: the arch, optimiser, schedule, mixup
    module = TaggingModule(
        # no pretrained weights, the seed's input BatchNorm
        arch={**to_plain(cfg.arch), "pretrained": False, "pretrained_path": None, "input_norm": "bn"},
        labels=[f"c{i}" for i in range(n_classes)],
        optimizer=to_plain(cfg.optimizer), scheduler=to_plain(cfg.scheduler), mixup=to_plain(cfg.mixup),
        gpu={"channels_last": channels_last}, cpu={"channels_last": channels_last},
    )
    return module.to(memory_format=torch.channels_last) if channels_last else module


def limit_samples_per_s(arch: str, batch: int, steps: int, warmup: int, device: torch.device,
                        compile: bool = False, channels_last: bool | None = None) -> float:
    """Model-only samples/s; ``channels_last`` None: as train.py by default (on a GPU, not on the CPU)."""
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    module = _module(arch, 41, device, channels_last).to(device)
    if compile:
        module.compile_model()
    opt = torch.optim.SGD(module.parameters(), lr=0.009, momentum=0.9)
    x = torch.randn(batch, 3, 64, 150, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 41, (batch,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


class _StepTimer(pl.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.t0, self.t1, self.n = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.t0 is not None:
            self.n += batch[0].shape[0]

    def on_train_epoch_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t1 = time.perf_counter()


def pipeline_samples_per_s(arch: str, batch: int, steps: int, warmup: int, device: torch.device,
                           store: MemoryStore, num_workers: int | None, resident: bool = False,
                           compile: bool = False, channels_last: bool = False) -> float:
    n = (warmup + steps) * batch
    idx = np.arange(n) % len(store)
    rows = Rows(index=idx, targets=np.arange(n) % 41, weights=np.ones(n, dtype=np.float32))
    aug = {"name": "specmask_concat", "specmask_concat": True, "time_mask": 30, "freq_mask": 15, "mask_value": 0.0}
    loader = {"batch_size": batch, "num_workers": num_workers, "crop_frames": 150, "pad_value": 0.0, "pin_memory": None}
    dm = (ResidentDataModule if resident else FoldDataModule)(store, rows, rows, loader, aug, on_gpu=device.type == "cuda")
    module = _module(arch, 41, device, channels_last)
    if compile:
        module.compile_model()
    timer = _StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
        precision="bf16-mixed" if device.type == "cuda" else "32-true", max_epochs=1, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    return timer.n / (timer.t1 - timer.t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--archs", default=None)
    ap.add_argument("--batches", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: fstag's)")
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--inputs", default="loader,resident", help="input paths of the pipeline: loader, resident or both")
    ap.add_argument("--compile", default="off", help="off, on or off,on: the backbone torch.compile'd (gpu.compile)")
    ap.add_argument("--memory-format", default=None,
                    help="contiguous, channels_last or both (default: channels_last on a GPU, contiguous on CPU)")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: CPU, cnn_small, batch 8, 3 steps, 64 clips")
    a = ap.parse_args(argv)
    if a.tiny:
        a.device, a.archs, a.batches, a.steps, a.warmup, a.clips = "cpu", a.archs or "cnn_small", a.batches or "8", a.steps or 3, 1, 64
    device = torch.device(a.device)
    gpu = device.type == "cuda"
    archs = (a.archs or ("resnext101_32x4d,resnet50" if gpu else "cnn_small")).split(",")
    batches = [int(b) for b in (a.batches or ("128,512" if gpu else "32")).split(",")]
    inputs = a.inputs.split(",")
    compiles = [c == "on" for c in a.compile.split(",")]
    formats = (a.memory_format or ("channels_last" if gpu else "contiguous")).split(",")
    for name, values, allowed in (("--inputs", inputs, ("loader", "resident")), ("--compile", a.compile.split(","), ("off", "on")),
                                  ("--memory-format", formats, ("contiguous", "channels_last"))):
        if not values or any(v not in allowed for v in values):
            ap.error(f"{name}={','.join(values)}: choose from {', '.join(allowed)}")
    steps = a.steps or (50 if gpu else 10)
    if gpu:
        torch.backends.cudnn.benchmark = True
    store = MemoryStore(a.clips)
    if a.tiny:
        print(TINY_NOTE)
    print(f"machine: {machine(device)}")
    print(f"recipe: {' '.join(RECIPE)} (conf/), {steps} timed steps after {a.warmup} warm-up")
    print(f"{'arch':<18} {'batch':>5} {'compile':>7} {'format':>13} {'input':>8} {'limit/s':>10} {'pipeline/s':>11} {'ratio':>7}")
    for arch in archs:
        for b in batches:
            for comp in compiles:
                for fmt in formats:
                    cl = fmt == "channels_last"
                    lim = limit_samples_per_s(arch, b, steps, a.warmup, device, comp, cl)
                    for path in inputs:
                        real = pipeline_samples_per_s(arch, b, steps, a.warmup, device, store, a.num_workers,
                                                      resident=path == "resident", compile=comp, channels_last=cl)
                        print(f"{arch:<18} {b:>5} {'on' if comp else 'off':>7} {fmt:>13} {path:>8} {lim:>10.1f} "
                              f"{real:>11.1f} {real / lim:>7.1%}", flush=True)


if __name__ == "__main__":
    main()
