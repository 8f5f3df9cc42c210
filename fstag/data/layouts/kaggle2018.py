"""``data.layout=kaggle2018``: the FSDKaggle2018 (Kaggle) layout, single-label; also the built-in demo's.

    <root>/train.csv               fname,label[,manually_verified]
           sample_submission.csv   fname,label  (the test clips, in the submission's order)
           audio_train/<fname>     audio_test/<fname>
           test_post_competition_scoring_clips.csv | test_post_competition.csv | test_labels.csv
                                   optional: fname,label[,usage] for local scoring

The label vocabulary is the sorted distinct labels of train.csv (never hard-coded).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fstag.data.layouts.base import DatasetError, Layout, parse_verified, read_checked_csv
from fstag.data.layouts.registry import register_layout

TRAIN_CSV = "train.csv"
SAMPLE_SUBMISSION_CSV = "sample_submission.csv"
AUDIO_DIRS = {"train": "audio_train", "test": "audio_test"}
# Labels files for the test split that blend.py scores against, in order of preference.
TEST_LABEL_FILES = ("test_post_competition_scoring_clips.csv", "test_post_competition.csv", "test_labels.csv")


def read_train_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Columns: fname, label, manually_verified (bool; True where the column is absent)."""
    path = Path(path)
    df = read_checked_csv(path, ("fname", "label"))
    empty = df["label"].str.strip() == ""
    if empty.any():
        raise DatasetError(f"{path}: row {int(empty.values.argmax()) + 2}: column 'label' is empty")
    if "manually_verified" in df.columns:
        df["manually_verified"] = parse_verified(df["manually_verified"], path)
    else:
        df["manually_verified"] = True
    return df[["fname", "label", "manually_verified"]].reset_index(drop=True)


def read_sample_submission(path: str | os.PathLike) -> pd.DataFrame:
    return read_checked_csv(Path(path), ("fname",))[["fname"]].reset_index(drop=True)


def labels_from_train(train: pd.DataFrame) -> list[str]:
    """The label vocabulary: the sorted distinct labels of train.csv (never hard-coded)."""
    return sorted(train["label"].unique().tolist())


@register_layout
class DatasetLayout(Layout):
    """Paths of one dataset folder in the Kaggle layout."""

    name = "kaggle2018"
    task = "single_label"
    tree = "train.csv, sample_submission.csv, audio_train/, audio_test/"

    @property
    def train_csv(self) -> Path:
        return self.root / TRAIN_CSV

    @property
    def sample_submission_csv(self) -> Path:
        return self.root / SAMPLE_SUBMISSION_CSV

    @property
    def sample_submission(self) -> Path | None:
        return self.sample_submission_csv

    def audio_dir(self, split: str) -> Path:
        try:
            return self.root / AUDIO_DIRS[split]
        except KeyError:
            raise DatasetError(f"unknown split {split!r}; expected one of {sorted(AUDIO_DIRS)}") from None

    def audio_path(self, split: str, fname: str) -> Path:
        return self.audio_dir(split) / fname

    def label_files(self) -> list[Path]:
        return [self.train_csv]

    def train_table(self) -> pd.DataFrame:
        return read_train_csv(self.train_csv).assign(source="train")

    def labels(self) -> list[str]:
        return labels_from_train(read_train_csv(self.train_csv))

    def test_fnames(self) -> list[str]:
        return read_sample_submission(self.sample_submission_csv)["fname"].tolist()

    def test_labels_csv(self) -> Path | None:
        for name in TEST_LABEL_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def test_labels_file(self) -> Path | None:
        return self.test_labels_csv()

    def test_labels(self) -> pd.DataFrame | None:
        path = self.test_labels_csv()
        if path is None:
            return None
        from fstag.data.layouts.test_labels import read_test_labels

        return read_test_labels(path)
