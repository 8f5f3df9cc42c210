"""Benchmarks (docs/benchmarks.md has their figures). Every script runs with ``--tiny``: the same code path
on tiny inputs on CPU in seconds to a minute, which tests/test_benches.py runs so that a refactor that
breaks a bench fails the suite.

Helpers the scripts share, light to import (the standard library only, until called): the machine line
of a report, the note a tiny run prints, conf/train.yaml composed by Hydra."""

from __future__ import annotations

import os
import platform

TINY_NOTE = "TINY RUN (--tiny: a smoke test on tiny inputs; do not quote these numbers)"


def machine(device="cpu") -> str:
    """CPU model and cores, the GPU (when ``device`` is a CUDA device and one is there), torch and Lightning
    versions (Lightning's from its package metadata: printing it does not cost its import)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" and torch.cuda.is_available() else "no GPU"
    try:
        lightning = version("pytorch-lightning")
    except PackageNotFoundError:
        lightning = "not installed"
    return f"{cpu} x{os.cpu_count()} cores; {gpu}; torch {torch.__version__}, lightning {lightning}"


def compose_train(overrides: list[str]):
    """conf/train.yaml composed with ``overrides`` by Hydra's compose API (as the tests compose it); read a
    group from it with ``fstag.core.config.to_plain(cfg.<group>)``, which resolves only that part."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fstag.core.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[str(o) for o in overrides])
