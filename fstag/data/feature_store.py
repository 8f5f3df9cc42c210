"""The feature cache on disk: one folder per feature config, one float16 file per split.

Layout of ``<data.features_dir>/<feature_key>/`` (see :func:`fstag.data.features.feature_key`)::

    features.yaml         the feature config (and its key)
    train.f16             every clip's (3, n_mels, frames) float16 array, C order, one after another
    train.index.csv       fname,offset,n_frames  (offset in float16 elements; stored order)
    test.f16, test.index.csv
    report.csv            fname,split,reason for every file that was skipped

``<split>.index.csv`` is written last: a split is complete exactly when it exists. While a split is
being computed its data grows in ``<split>.f16.part`` and ``<split>.progress.csv`` (the index so far,
plus the skipped files with their reasons) is rewritten atomically after the data it lists has been
flushed to disk, so an interrupted run resumes from its last commit (the part file is cut back to
the committed size).

Reading: :class:`FeatureStore` (what training and prediction use).
Writing: :class:`SplitWriter` (what preprocessing uses).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from fstag.core.io import write_text_atomic

if TYPE_CHECKING:
    from fstag.data.feature_config import FeatureConfig

FEATURES_YAML = "features.yaml"
REPORT_CSV = "report.csv"
INDEX_COLUMNS = ["fname", "offset", "n_frames"]
PROGRESS_COLUMNS = INDEX_COLUMNS + ["reason"]
REPORT_COLUMNS = ["fname", "split", "reason"]
CHANNELS = 3
DTYPE = np.float16


class FeatureStoreError(FileNotFoundError):
    """The feature cache (or one split of it) is missing, incomplete or inconsistent; names the path."""


def feature_dir(features_dir: str | os.PathLike, cfg: "FeatureConfig") -> Path:
    """Where the features of ``cfg`` live: ``<features_dir>/<feature_key(cfg)>``."""
    from fstag.data.feature_config import feature_key

    return Path(features_dir) / feature_key(cfg)


def data_path(directory: Path, split: str) -> Path:
    return directory / f"{split}.f16"


def index_path(directory: Path, split: str) -> Path:
    return directory / f"{split}.index.csv"


def part_path(directory: Path, split: str) -> Path:
    return directory / f"{split}.f16.part"


def progress_path(directory: Path, split: str) -> Path:
    return directory / f"{split}.progress.csv"


def _read_rows(path: Path, columns: list[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != columns:
            raise FeatureStoreError(f"{path}: expected columns {columns}, found {reader.fieldnames}")
        return list(reader)


def _write_rows(path: Path, columns: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def read_n_mels(directory: Path) -> int:
    path = directory / FEATURES_YAML
    if not path.is_file():
        raise FeatureStoreError(f"{path}: not found (no features computed here; run preprocess.py)")
    return int(yaml.safe_load(path.read_text())["n_mels"])


def write_features_yaml(directory: Path, cfg: "FeatureConfig", key: str) -> None:
    """Record the feature config in ``directory`` (once; the folder name is its hash)."""
    path = directory / FEATURES_YAML
    if not path.is_file():
        write_text_atomic(path, yaml.safe_dump({"key": key, **cfg.to_dict()}, sort_keys=False))


def read_report(directory: Path) -> list[dict[str, str]]:
    """Rows (fname, split, reason) of ``report.csv``; empty when there is none."""
    path = directory / REPORT_CSV
    return _read_rows(path, REPORT_COLUMNS) if path.is_file() else []


def is_complete(directory: Path, split: str) -> bool:
    return index_path(directory, split).is_file() and data_path(directory, split).is_file()


class FeatureStore:
    """Read-only access to one split of the cache: ``store[i]`` is clip ``i``'s (3, n_mels, frames)
    float16 array, a view into a memory map that each process opens on first access (so a store can
    be handed to forked or spawned DataLoader workers)."""

    def __init__(self, path: Path, n_mels: int, fnames: list[str], offsets: np.ndarray, lengths: np.ndarray):
        self.path = path
        self.n_mels = n_mels
        self.fnames = fnames
        self.offsets = offsets
        self.lengths = lengths
        self._pos = {f: i for i, f in enumerate(fnames)}
        self._mmap: np.ndarray | None = None
        self._pid: int | None = None

    @classmethod
    def open(cls, directory: str | Path, split: str) -> "FeatureStore":
        """Open split ``split`` of the cache folder ``directory`` (a :func:`feature_dir`)."""
        directory = Path(directory)
        n_mels = read_n_mels(directory)
        idx, data = index_path(directory, split), data_path(directory, split)
        if not idx.is_file() or not data.is_file():
            missing = idx if not idx.is_file() else data
            raise FeatureStoreError(f"{missing}: not found (split {split!r} not computed or incomplete; run preprocess.py)")
        rows = _read_rows(idx, INDEX_COLUMNS)
        fnames = [r["fname"] for r in rows]
        offsets = np.array([int(r["offset"]) for r in rows], dtype=np.int64)
        lengths = np.array([int(r["n_frames"]) for r in rows], dtype=np.int64)
        expected = int(offsets[-1] + CHANNELS * n_mels * lengths[-1]) if rows else 0
        size = data.stat().st_size
        if size != expected * np.dtype(DTYPE).itemsize:
            raise FeatureStoreError(f"{data}: {size} bytes, but {idx} describes {expected} float16 values; "
                                    f"delete {directory} and run preprocess.py again")
        return cls(data, n_mels, fnames, offsets, lengths)

    def __len__(self) -> int:
        return len(self.fnames)

    def _data(self) -> np.ndarray:
        if self._mmap is None or self._pid != os.getpid():
            self._mmap = np.memmap(self.path, dtype=DTYPE, mode="r")
            self._pid = os.getpid()
        return self._mmap

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range: {self.path} holds {len(self)} clips")
        off, n = int(self.offsets[i]), int(self.lengths[i])
        return self._data()[off : off + CHANNELS * self.n_mels * n].reshape(CHANNELS, self.n_mels, n)

    def index_of(self, fname: str) -> int:
        try:
            return self._pos[fname]
        except KeyError:
            raise KeyError(f"{fname!r} has no features in {self.path}") from None

    def __contains__(self, fname: object) -> bool:
        return fname in self._pos

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_mmap": None, "_pid": None}


class SplitWriter:
    """Appends clips to one split of the cache, commits progress, and publishes the split when done.

    ``handled`` holds every fname already stored or skipped (from earlier, interrupted runs too).
    """

    def __init__(self, directory: str | Path, split: str):
        self.directory = Path(directory)
        self.split = split
        self.rows: list[list] = []  # progress rows: fname, offset, n_frames, reason ('' when stored)
        self.end = 0  # float16 elements committed or written
        self._resume()
        self.handled = {r[0] for r in self.rows}
        self._fh = open(part_path(self.directory, split), "r+b" if self.end else "wb")
        self._fh.truncate(self.end * np.dtype(DTYPE).itemsize)
        self._fh.seek(0, os.SEEK_END)

    def _resume(self) -> None:
        """Load committed progress; reopen a complete split (to add clips); drop uncommitted data."""
        d, split = self.directory, self.split
        part, progress, data = part_path(d, split), progress_path(d, split), data_path(d, split)
        if index_path(d, split).is_file():
            rows = [[r["fname"], int(r["offset"]), int(r["n_frames"]), ""] for r in _read_rows(index_path(d, split), INDEX_COLUMNS)]
            rows += [[r["fname"], 0, 0, r["reason"]] for r in read_report(d) if r["split"] == split]
            _write_rows(progress, PROGRESS_COLUMNS, rows)
            index_path(d, split).unlink()
        if not progress.is_file():
            part.unlink(missing_ok=True)
            data.unlink(missing_ok=True)
            return
        if not part.exists() and data.exists():  # interrupted while publishing
            os.replace(data, part)
        rows = [[r["fname"], int(r["offset"]), int(r["n_frames"]), r["reason"]] for r in _read_rows(progress, PROGRESS_COLUMNS)]
        n_mels = read_n_mels(d)
        end = max((off + CHANNELS * n_mels * n for _, off, n, reason in rows if not reason), default=0)
        if not part.exists() or part.stat().st_size < end * np.dtype(DTYPE).itemsize:
            raise FeatureStoreError(f"{part}: shorter than {progress} says; delete {d} to recompute")
        self.rows, self.end = rows, end

    @property
    def n_stored(self) -> int:
        return sum(1 for r in self.rows if not r[3])

    def add(self, fname: str, features: np.ndarray) -> None:
        """Append one clip's float16 (3, n_mels, frames) array."""
        arr = np.ascontiguousarray(features, dtype=DTYPE)
        self._fh.write(arr.data)
        self.rows.append([fname, self.end, arr.shape[-1], ""])
        self.end += arr.size
        self.handled.add(fname)

    def skip(self, fname: str, reason: str) -> None:
        self.rows.append([fname, 0, 0, reason])
        self.handled.add(fname)

    def commit(self) -> None:
        """Make everything added so far durable, then record it in the progress file."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        _write_rows(progress_path(self.directory, self.split), PROGRESS_COLUMNS, self.rows)

    def finish(self) -> None:
        """Publish the split: data file, this split's rows of report.csv, then the index (last)."""
        d, split = self.directory, self.split
        self.commit()
        self._fh.close()
        os.replace(part_path(d, split), data_path(d, split))
        report = [[r["fname"], r["split"], r["reason"]] for r in read_report(d) if r["split"] != split]
        report += [[f, split, reason] for f, _, _, reason in self.rows if reason]
        _write_rows(d / REPORT_CSV, REPORT_COLUMNS, report)
        _write_rows(index_path(d, split), INDEX_COLUMNS, [r[:3] for r in self.rows if not r[3]])
        progress_path(d, split).unlink(missing_ok=True)

    def close(self) -> None:
        """Stop without publishing (what was committed stays for the next run)."""
        self._fh.close()
