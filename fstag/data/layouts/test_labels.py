"""A test split's labels file for local scoring: ``fname`` and ``label`` (or FSDKaggle2019's ``labels``,
comma-joined for multi-label clips), optionally ``usage`` (Public / Private / Ignored, as Kaggle's releases)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fstag.data.layouts.base import DatasetError, read_csv_as_text

USAGES = ("Public", "Private", "Ignored")


def read_test_labels(path: str | os.PathLike, error: type[Exception] | None = None,
                     label_column: str | None = None) -> pd.DataFrame:
    """Columns ``fname``, ``label`` (stripped) and, when the file has it, ``usage`` (normalised to
    Public/Private/Ignored). The label column is ``label_column``, else ``label``, else ``labels``.
    ``error`` (default :class:`DatasetError`) names the file, column and value."""
    error = error or DatasetError
    path = Path(path)
    df = read_csv_as_text(path, error)
    column = label_column or ("label" if "label" in df.columns else "labels" if "labels" in df.columns else "label")
    missing = [c for c in ("fname", column) if c not in df.columns]
    if missing:
        raise error(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    out = pd.DataFrame({"fname": df["fname"], "label": df[column].str.strip()})
    if "usage" in df.columns:
        out["usage"] = df["usage"].str.strip().str.capitalize()
        bad = ~out["usage"].isin(USAGES)
        if bad.any():
            raise error(f"{path}: column 'usage' has value {df['usage'][bad].iloc[0]!r}; expected {USAGES}")
    return out
