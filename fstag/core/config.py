"""Config helpers shared by every package: where conf/ lives, plain containers from OmegaConf nodes,
flattened keys. (The ``${fstag.*}`` resolvers of conf/ are registered by :mod:`fstag.runs.resolvers`.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")  # <repo>/conf


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
