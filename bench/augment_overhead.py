"""Cost of the batch augmentations of experiment=scratch / aug=robust against a plain training step.

    python bench/augment_overhead.py [--arch resnet18] [--batch 32] [--steps 10] [--device cpu|cuda] [--tiny]

Times, in one process on the same random batch, the LightningModule's training step (forward, loss,
backward, optimiser step) with (a) no batch augmentation (the seed's path: input BatchNorm, mixup),
(b) experiment=scratch's (band standardisation, SpecAugment, mixup), (c) (b) plus aug=robust's
recording simulation, and (d) (c) plus Freq-MixStyle; prints each one's time per step and its ratio to (a).
The issue's bound: the augmentations may not slow CPU training by more than 20 %.
The optimiser (``optimizer=adamw optimizer.lr=1e-3``) and the recording simulation (``aug=robust``) are
composed from conf/ and built as train.py builds them (``hydra.utils.instantiate``). ``--tiny``: the
same four steps on CPU with the small CNN, batch 8, 2 timed steps each (seconds; a smoke test).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import TINY_NOTE, compose_train, machine  # noqa: E402
from fstag.core.config import to_plain  # noqa: E402
from fstag.models.module import TaggingModule  # noqa: E402
from fstag.models.schedules import build_optimizer  # noqa: E402

N_MELS = 64
# the instantiated parts, from conf/: AdamW at 1e-3 (weight decay 0.05), the seed's per-epoch schedule
# (not stepped here), and aug=robust for its recording simulation
PARTS = ["optimizer=adamw", "optimizer.lr=1e-3", "scheduler=seed", "aug=robust"]


def _module(arch: str, n_classes: int, scratch: bool, robust: bool, mixstyle: bool) -> TaggingModule:
    cfg = compose_train(PARTS)
    recording = to_plain(cfg.aug.recording) if robust else None
    stats = {"mean": [[-40.0] * N_MELS] * 3, "std": [[15.0] * N_MELS] * 3}
    return TaggingModule(
        arch={"name": arch, "pretrained": False, "in_chans": 3, "input_norm": "band_stats" if scratch else "bn"},
        labels=[f"c{i}" for i in range(n_classes)],
        optimizer=to_plain(cfg.optimizer), scheduler=to_plain(cfg.scheduler),
        mixup={"enabled": True, "prob": 0.5, "alpha": 0.4},
        loss={"label_smoothing": 0.1 if scratch else 0.0},
        specaug={"enabled": scratch, "time_masks": 2, "time_width": 20, "freq_masks": 2, "freq_width": 8},
        recording=recording, mixstyle={"enabled": mixstyle, "prob": 1.0, "alpha": 0.3},
        band_stats=stats if scratch else None,
    )


def seconds_per_step(module: TaggingModule, batch, steps: int, warmup: int = 2) -> float:
    opt = build_optimizer(module.hparams.optimizer, module.parameters())  # what configure_optimizers builds
    module.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        loss = module.training_step(batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if batch[0].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: CPU, cnn_small, batch 8, 2 steps each")
    args = ap.parse_args(argv)
    if args.tiny:
        args.device, args.arch, args.batch, args.steps = "cpu", "cnn_small", 8, 2
    device = torch.device(args.device)
    torch.manual_seed(0)
    b = args.batch
    batch = (torch.randn(b, 3, N_MELS, 150, device=device) * 15 - 40, torch.randint(0, 41, (b,), device=device),
             torch.ones(b, device=device), torch.arange(b, device=device), torch.ones(b, dtype=torch.bool, device=device))
    rows = {}
    for name, flags in (("seed path", (False, False, False)), ("experiment=scratch", (True, False, False)),
                        ("+ aug=robust", (True, True, False)), ("+ mixstyle", (True, True, True))):
        module = _module(args.arch, 41, *flags).to(device)
        module.log = lambda *a, **k: None  # outside a Trainer
        rows[name] = seconds_per_step(module, batch, args.steps)
    if args.tiny:
        print(TINY_NOTE)
    print(f"{machine(device)}; {args.arch}, batch {b}, {args.steps} steps each\n")
    print("| step | s/step | ratio to the seed path |\n|---|---|---|")
    ref = rows["seed path"]
    for name, sec in rows.items():
        print(f"| {name} | {sec:.3f} | {sec / ref:.3f} |")


if __name__ == "__main__":
    main()
