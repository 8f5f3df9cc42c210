"""Hydra/OmegaConf glue shared by the entry points: resolvers and config conversion helpers."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _abspath(path: str) -> str:
    return str(Path(os.path.expanduser(str(path))).resolve())


def _n_jobs() -> int:
    from fstag.launchers import n_jobs

    return n_jobs()


def register_resolvers() -> None:
    """``${fstag.abspath:<path>}`` makes a path absolute against the current working directory;
    ``${fstag.n_jobs:}`` is the joblib launcher's default parallelism (fstag.launchers)."""
    if not OmegaConf.has_resolver("fstag.abspath"):
        OmegaConf.register_new_resolver("fstag.abspath", _abspath)
    if not OmegaConf.has_resolver("fstag.n_jobs"):
        OmegaConf.register_new_resolver("fstag.n_jobs", _n_jobs)
    from fstag.job_identity import register_resolver  # ${fstag.variant:<stage>}

    register_resolver()


register_resolvers()

# conf/hydra/launcher/{joblib,submitit_local,submitit_slurm}.yaml replace the launcher plugins' configs of
# the same names with fstag's defaults (so `hydra/launcher=submitit_slurm` works as typed); each names its
# `_target_` and every key, so Hydra 1.3's matching with the plugin's schema only validates them. Its
# deprecation notice about that matching would be printed on every launch.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/(joblib|submitit_local|submitit_slurm)' is validated against ConfigStore schema",
    category=UserWarning)


def to_plain(cfg: Any) -> Any:
    """Resolved plain containers (dict/list/str/...) from an OmegaConf node; other values unchanged."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def flatten(d: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out
