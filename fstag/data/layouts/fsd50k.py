"""``data.layout=fsd50k``: the FSD50K release (Zenodo), multi-label, with its own validation split.

    <root>/FSD50K.ground_truth/dev.csv         fname,labels,mids,split  (split: train | val)
                               eval.csv        fname,labels,mids        (the test split and its labels)
                               vocabulary.csv  index,label,mid, no header: the vocabulary and its order
           FSD50K.dev_audio/<fname>.wav        FSD50K.eval_audio/<fname>.wav

fnames are the clips' Freesound ids without the extension, kept as the keys (of the feature cache and the
predictions). The train table is dev.csv with ``fold`` 0 for its ``val`` rows and 1 for its ``train`` rows:
``folds.method=given`` (conf/data/fsd50k.yaml) makes ``fold=0`` (or ``fold=given``) that split. eval.csv is
the test split and its labels (:meth:`test_labels`); there is no sample submission. Every row's labels are
manually verified (source ``dev``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pandas as pd

from fstag.data.layouts.base import DatasetError, Layout, check_label_cells, read_checked_csv, read_csv_as_text
from fstag.data.layouts.fsdkaggle2019 import check_listed_audio
from fstag.data.layouts.registry import register_layout

GROUND_TRUTH = "FSD50K.ground_truth"
DEV_CSV, EVAL_CSV, VOCABULARY_CSV = "dev.csv", "eval.csv", "vocabulary.csv"
AUDIO_DIRS = {"train": "FSD50K.dev_audio", "test": "FSD50K.eval_audio"}
AUDIO_SUFFIX = ".wav"
SPLIT_FOLDS = {"val": 0, "train": 1}  # dev.csv's split -> the train table's given fold


def read_vocabulary(path: Path) -> list[str]:
    """vocabulary.csv's labels (its second column) in its row order, checked: present, distinct, no comma.
    The file has no header, so row 1 is its first label."""
    df = read_csv_as_text(path, header=False)
    if df.shape[1] < 2:
        raise DatasetError(f"{path}: expected rows index,label,mid (no header); found {df.shape[1]} column(s)")
    labels, seen = [], {}
    for i, lab in enumerate(df[1].str.strip(), start=1):
        if not lab:
            raise DatasetError(f"{path}: row {i}: the label (column 2) is empty")
        if "," in lab:
            raise DatasetError(f"{path}: row {i}: label {lab!r} holds a comma, which separates a clip's labels")
        if lab in seen:
            raise DatasetError(f"{path}: row {i}: label {lab!r} is listed twice (rows {seen[lab]} and {i})")
        seen[lab] = i
        labels.append(lab)
    if not labels:
        raise DatasetError(f"{path}: no labels")
    return labels


@register_layout
class FSD50KLayout(Layout):
    """The FSD50K folder (see the module docstring)."""

    name = "fsd50k"
    task = "multi_label"
    tree = (f"{GROUND_TRUTH}/{DEV_CSV}, {GROUND_TRUTH}/{EVAL_CSV}, {GROUND_TRUTH}/{VOCABULARY_CSV}, "
            f"{AUDIO_DIRS['train']}/, {AUDIO_DIRS['test']}/")
    sources: ClassVar[tuple[str, ...]] = ("dev",)

    @property
    def dev_csv(self) -> Path:
        return self.root / GROUND_TRUTH / DEV_CSV

    @property
    def eval_csv(self) -> Path:
        return self.root / GROUND_TRUTH / EVAL_CSV

    @property
    def vocabulary_csv(self) -> Path:
        return self.root / GROUND_TRUTH / VOCABULARY_CSV

    def label_files(self) -> list[Path]:
        """dev.csv (the clips, labels and split) and vocabulary.csv (the label order)."""
        return [self.dev_csv, self.vocabulary_csv]

    def labels(self) -> list[str]:
        return read_vocabulary(self.vocabulary_csv)

    def train_table(self) -> pd.DataFrame:
        df = read_checked_csv(self.dev_csv, ("fname", "labels", "split"))
        cells = check_label_cells(df["labels"], self.dev_csv, self.labels(), multi_label=True)
        split = df["split"].str.strip()
        bad = ~split.isin(list(SPLIT_FOLDS))
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise DatasetError(f"{self.dev_csv}: row {i + 2}: column 'split' is {df['split'].iloc[i]!r}; "
                               f"expected one of {list(SPLIT_FOLDS)}")
        if not (split == "val").any():
            raise DatasetError(f"{self.dev_csv}: no row has split 'val'; the given split needs validation rows")
        return pd.DataFrame({"fname": df["fname"].tolist(), "label": cells, "manually_verified": True,
                             "source": "dev", "fold": split.map(SPLIT_FOLDS).astype("int64").to_numpy()})

    def test_fnames(self) -> list[str]:
        """eval.csv's clips (empty when the folder has no eval.csv)."""
        if not self.eval_csv.is_file():
            return []
        return read_checked_csv(self.eval_csv, ("fname",))["fname"].tolist()

    def audio_path(self, split: str, fname: str) -> Path:
        if split not in AUDIO_DIRS:
            raise DatasetError(f"unknown split {split!r}; expected one of {sorted(AUDIO_DIRS)}")
        return self.root / AUDIO_DIRS[split] / f"{fname}{AUDIO_SUFFIX}"

    def test_labels_file(self) -> Path | None:
        return self.eval_csv if self.eval_csv.is_file() else None

    def test_labels(self) -> pd.DataFrame | None:
        """eval.csv's ``fname`` and ``label`` (comma-joined, checked against the vocabulary)."""
        if not self.eval_csv.is_file():
            return None
        df = read_checked_csv(self.eval_csv, ("fname", "labels"))
        cells = check_label_cells(df["labels"], self.eval_csv, self.labels(), multi_label=True)
        return pd.DataFrame({"fname": df["fname"].tolist(), "label": cells})

    def check_audio(self) -> None:
        """Every clip of dev.csv and eval.csv has its audio file (preprocess.py asks before computing
        features); else one :class:`DatasetError` naming the CSV and row of the first missing one."""
        listed = [(self.dev_csv, i, f, self.audio_path("train", f))
                  for i, f in enumerate(read_checked_csv(self.dev_csv, ("fname",))["fname"], start=2)]
        listed += [(self.eval_csv, i, f, self.audio_path("test", f)) for i, f in enumerate(self.test_fnames(), start=2)]
        check_listed_audio(listed)
