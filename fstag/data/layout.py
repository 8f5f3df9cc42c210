"""The Kaggle layout of a dataset folder: train.csv, sample_submission.csv, audio_train/, audio_test/.

Plain functions: read the CSVs, validate file names, derive the label vocabulary (sorted, from train.csv).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd


class DatasetError(ValueError):
    """A dataset folder or one of its CSV files is malformed; the message names the file and key."""


TRAIN_CSV = "train.csv"
SAMPLE_SUBMISSION_CSV = "sample_submission.csv"
AUDIO_DIRS = {"train": "audio_train", "test": "audio_test"}
# Labels files for the test split that blend.py scores against, in order of preference.
TEST_LABEL_FILES = ("test_post_competition_scoring_clips.csv", "test_post_competition.csv", "test_labels.csv")


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


def read_csv_as_text(path: str | os.PathLike, error: type[Exception] | None = None) -> pd.DataFrame:
    """A CSV with every cell as a string (no NaN for empty cells); ``error`` (default
    :class:`DatasetError`) names the file when it is missing or malformed."""
    error = error or DatasetError
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise error(f"{path}: cannot be read as CSV: {exc}") from exc


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    df = read_csv_as_text(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    for i, fname in enumerate(df["fname"], start=2):  # row 1 is the header
        check_fname(fname, path, i)
    dup = df["fname"][df["fname"].duplicated()]
    if len(dup):
        raise DatasetError(f"{path}: fname {dup.iloc[0]!r} appears more than once")
    return df


def _parse_verified(values: pd.Series, path: Path) -> pd.Series:
    truthy = {"1", "true", "yes", "1.0"}
    falsy = {"0", "false", "no", "0.0", ""}
    lowered = values.str.strip().str.lower()
    bad = ~lowered.isin(truthy | falsy)
    if bad.any():
        raise DatasetError(
            f"{path}: column 'manually_verified' has value {values[bad].iloc[0]!r}; expected 0/1 or true/false"
        )
    return lowered.isin(truthy)


def read_train_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Columns: fname, label, manually_verified (bool; True where the column is absent)."""
    path = Path(path)
    df = _read_csv(path, ("fname", "label"))
    empty = df["label"].str.strip() == ""
    if empty.any():
        raise DatasetError(f"{path}: row {int(empty.values.argmax()) + 2}: column 'label' is empty")
    if "manually_verified" in df.columns:
        df["manually_verified"] = _parse_verified(df["manually_verified"], path)
    else:
        df["manually_verified"] = True
    return df[["fname", "label", "manually_verified"]].reset_index(drop=True)


def read_sample_submission(path: str | os.PathLike) -> pd.DataFrame:
    return _read_csv(Path(path), ("fname",))[["fname"]].reset_index(drop=True)


def labels_from_train(train: pd.DataFrame) -> list[str]:
    """The label vocabulary: the sorted distinct labels of train.csv (never hard-coded)."""
    return sorted(train["label"].unique().tolist())


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of one dataset folder in the Kaggle layout."""

    root: Path

    @property
    def train_csv(self) -> Path:
        return self.root / TRAIN_CSV

    @property
    def sample_submission_csv(self) -> Path:
        return self.root / SAMPLE_SUBMISSION_CSV

    def audio_dir(self, split: str) -> Path:
        try:
            return self.root / AUDIO_DIRS[split]
        except KeyError:
            raise DatasetError(f"unknown split {split!r}; expected one of {sorted(AUDIO_DIRS)}") from None

    def split_fnames(self, split: str) -> list[str]:
        """File names of a split, in the order of its CSV (train.csv or sample_submission.csv)."""
        if split == "train":
            return read_train_csv(self.train_csv)["fname"].tolist()
        return read_sample_submission(self.sample_submission_csv)["fname"].tolist()

    def test_labels_csv(self) -> Path | None:
        for name in TEST_LABEL_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return None
