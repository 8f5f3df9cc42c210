"""What every dataset layout answers (:class:`Layout`), and the CSV checks they share.

A layout reads one data set's folder: which clips it trains on (a *train table*), the label vocabulary and
its order, the test clips, where each clip's audio file is and, when the folder has them, the test labels.
Every package reads a data set through these questions only, so a new layout is one module below
``fstag/data/layouts/`` (registered with :func:`fstag.data.layouts.registry.register_layout`) and one
``conf/data/<name>.yaml`` naming it (``layout: <name>``).

The train table (:meth:`Layout.train_table`) has the columns

- ``fname``: the clip's key, unique, as the feature cache stores it (a relative name, never ``..``);
- ``label``: its label (single-label), or its labels joined by commas (multi-label, as FSDKaggle2019's
  ``labels`` column); never empty;
- ``manually_verified``: whether a person checked the labels (FSDKaggle2018's column; FSDKaggle2019's
  curated clips). Unverified rows follow ``data.use_unverified`` / ``data.unverified_weight`` and
  ``noise=prune``;
- ``source``: which part of the data set the row comes from (``train``, ``curated``, ``noisy``, ``dev``):
  ``data.sources.<source>`` may give its own ``use``, ``weight`` and ``from_epoch``;
- ``fold`` (only for a layout with its own validation split, ``folds.method=given``): 0 for the validation
  rows, 1 for the others;
- ``in_folds`` (optional, default true): false for rows that only ever train (FSDKaggle2019's noisy clips
  are never validated on).

Errors are :class:`DatasetError`, naming the file, the row (1 is the header) and what was expected.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar, Mapping

import pandas as pd

from fstag.core.io import sha256_file

TRAIN_COLUMNS = ("fname", "label", "manually_verified", "source")
SPLITS = ("train", "test")


class DatasetError(ValueError):
    """A dataset folder or one of its CSV files is malformed; the message names the file and key."""


def check_fname(fname: object, source: str | os.PathLike, row: int) -> str:
    """Return ``fname`` if it is a plain relative name; refuse absolute paths and ``..`` parts."""
    if not isinstance(fname, str) or not fname.strip():
        raise DatasetError(f"{source}: row {row}: column 'fname' is empty or not a string: {fname!r}")
    parts = PurePosixPath(fname.replace("\\", "/")).parts
    if (
        os.path.isabs(fname)
        or PureWindowsPath(fname).is_absolute()
        or PurePosixPath(fname.replace("\\", "/")).is_absolute()
        or ".." in parts
    ):
        raise DatasetError(
            f"{source}: row {row}: fname {fname!r} must be a relative name inside the audio folder "
            "(absolute paths and '..' are refused)"
        )
    return fname


def read_csv_as_text(path: str | os.PathLike, error: type[Exception] | None = None, header: bool = True) -> pd.DataFrame:
    """A CSV with every cell as a string (no NaN for empty cells); ``error`` (default
    :class:`DatasetError`) names the file when it is missing or malformed."""
    error = error or DatasetError
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, header=0 if header else None)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise error(f"{path}: cannot be read as CSV: {exc}") from exc


def read_checked_csv(path: Path, required: tuple[str, ...], key: str = "fname") -> pd.DataFrame:
    """A CSV whose ``required`` columns exist and whose ``key`` column holds distinct relative names."""
    df = read_csv_as_text(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    for i, fname in enumerate(df[key], start=2):  # row 1 is the header
        check_fname(fname, path, i)
    dup = df[key][df[key].duplicated()]
    if len(dup):
        raise DatasetError(f"{path}: {key} {dup.iloc[0]!r} appears more than once "
                           f"(rows {', '.join(str(i + 2) for i in df.index[df[key] == dup.iloc[0]][:3])})")
    return df


def parse_verified(values: pd.Series, path: Path) -> pd.Series:
    truthy = {"1", "true", "yes", "1.0"}
    falsy = {"0", "false", "no", "0.0", ""}
    lowered = values.str.strip().str.lower()
    bad = ~lowered.isin(truthy | falsy)
    if bad.any():
        raise DatasetError(
            f"{path}: column 'manually_verified' has value {values[bad].iloc[0]!r}; expected 0/1 or true/false"
        )
    return lowered.isin(truthy)


def check_label_cells(cells: pd.Series, path: Path, vocabulary: list[str] | None, multi_label: bool,
                      column: str = "labels", first_row: int = 2) -> list[str]:
    """Each cell's labels checked: not empty, no label twice in a cell, every label in ``vocabulary`` (when
    given). Returns the cells normalised (labels stripped, in the order given, joined by commas)."""
    from fstag.core.task import join_labels, split_labels

    known = None if vocabulary is None else set(vocabulary)
    out = []
    for i, cell in enumerate(cells, start=first_row):
        labs = split_labels(cell) if multi_label else ([cell.strip()] if cell.strip() else [])
        if not labs:
            raise DatasetError(f"{path}: row {i}: column {column!r} is empty")
        seen = set()
        for lab in labs:
            if lab in seen:
                raise DatasetError(f"{path}: row {i}: label {lab!r} is listed twice in {cell!r}")
            seen.add(lab)
            if known is not None and lab not in known:
                near = sorted(known, key=lambda k: _distance(k.lower(), lab.lower()))[:3]
                raise DatasetError(f"{path}: row {i}: label {lab!r} is not in the vocabulary "
                                   f"({len(known)} labels; the closest: {', '.join(near)})")
        out.append(join_labels(labs))
    return out


def _distance(a: str, b: str) -> int:
    """Levenshtein distance (for naming the labels closest to an unknown one)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def files_digest(paths: list[Path]) -> str:
    """sha256 of one file's bytes (exactly ``sha256sum``), or over several files' names and digests."""
    if len(paths) == 1:
        return sha256_file(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}\t{sha256_file(p)}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Layout(ABC):
    """A data set's folder (``root``) as one layout reads it; ``options`` is the ``data`` config."""

    root: Path
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    name: ClassVar[str] = ""
    task: ClassVar[str] = "single_label"  # the task its labels make (fstag.core.task)
    tree: ClassVar[str] = ""              # the expected folder, for errors and docs

    # what every layout answers -------------------------------------------------------------------------
    @abstractmethod
    def train_table(self) -> pd.DataFrame:
        """The training clips (see the module docstring for the columns), checked."""

    @abstractmethod
    def labels(self) -> list[str]:
        """The label vocabulary, in the order of the model's outputs and the submission's columns."""

    @abstractmethod
    def test_fnames(self) -> list[str]:
        """The test clips' keys, in the submission's order (empty when the data set has no test split)."""

    @abstractmethod
    def audio_path(self, split: str, fname: str) -> Path:
        """The audio file of clip ``fname`` of ``split`` (``train`` or ``test``)."""

    @abstractmethod
    def label_files(self) -> list[Path]:
        """The files that define the train table (their digest is the data's identity)."""

    def is_present(self) -> bool:
        """Whether the folder holds this layout's data set (else a generator may make it)."""
        try:
            return all(p.is_file() for p in self.label_files())
        except DatasetError:
            return False

    def test_labels(self) -> pd.DataFrame | None:
        """The test clips' labels for local scoring: ``fname``, ``label`` (comma-joined for multi-label) and
        optionally ``usage`` (Public / Private / Ignored); None when the folder has none."""
        return None

    def test_labels_file(self) -> Path | None:
        """The file :meth:`test_labels` reads (for messages), or None."""
        return None

    @property
    def sample_submission(self) -> Path | None:
        """The Kaggle template a submission must match (None: the layout has none)."""
        return None

    # derived ------------------------------------------------------------------------------------------
    def split_fnames(self, split: str) -> list[str]:
        """The keys of a split's clips, in the order of its CSV or listing."""
        if split == "train":
            return self.train_table()["fname"].tolist()
        if split == "test":
            return self.test_fnames()
        raise DatasetError(f"unknown split {split!r}; expected one of {list(SPLITS)}")

    def digest(self) -> str:
        """sha256 of :meth:`label_files` (a single file: exactly its ``sha256sum``)."""
        return files_digest(self.label_files())

    def describe(self) -> str:
        return f"data.layout={self.name} at {self.root}" + (f" (expects {self.tree})" if self.tree else "")
