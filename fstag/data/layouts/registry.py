"""The layouts by name (``data.layout``), as timm's registry holds its models: each layout module registers
its class with :func:`register_layout` (the package imports them all, so importing any part of
``fstag.data.layouts`` fills the registry); :func:`open_layout` reads a ``data`` config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

LAYOUTS: dict[str, type] = {}
DEFAULT_LAYOUT = "kaggle2018"  # data configs written before layouts had a name


def register_layout(cls: type) -> type:
    """Class decorator: ``LAYOUTS[cls.name] = cls``."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls.__name__}: a layout needs a name")
    LAYOUTS[cls.name] = cls
    return cls


def layout_class(name: str | None) -> type:
    """The layout class called ``name`` (None: :data:`DEFAULT_LAYOUT`); an unknown name lists the known."""
    key = str(name or DEFAULT_LAYOUT)
    if key not in LAYOUTS:
        from fstag.data.layouts.base import DatasetError

        raise DatasetError(f"data.layout={key!r}: choose one of {', '.join(sorted(LAYOUTS))}")
    return LAYOUTS[key]


def open_layout(data: Mapping[str, Any] | Any, root: str | Path | None = None):
    """The layout of a ``data`` config (``data.layout``, ``data.root`` and its other keys as options)."""
    from fstag.core.config import to_plain

    plain = dict(to_plain(data) or {})
    cls = layout_class(plain.get("layout"))
    return cls(root=Path(str(root if root is not None else plain["root"])), options=plain)
