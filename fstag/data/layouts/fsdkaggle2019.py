"""``data.layout=fsdkaggle2019``: the FSDKaggle2019 (Kaggle) layout, multi-label; also the multi-label demo's.

    <root>/train_curated.csv       fname,labels  (labels comma-joined, quoted when several)
           train_curated/<fname>
           train_noisy.csv         optional: fname,labels, with train_noisy/<fname>
           test/<fname>
           sample_submission.csv   fname,<label>,...: the test clips, in the submission's order; its columns
                                   after ``fname`` ARE the label vocabulary and its order
           test_post_competition.csv   optional: fname,labels[,usage] for local scoring

Curated rows are ``manually_verified`` (source ``curated``) and make the folds; noisy rows are not verified
(source ``noisy``) and only ever train (``in_folds`` false: never validated on, as the 2019 winners did).
``data.sources.noisy.use: false`` leaves them out of training (the split is the same either way, so runs
with and without them blend). The vocabulary is read, never hard-coded: the multi-label demo writes this
layout with labels of its own.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import ClassVar, Sequence

import pandas as pd

from fstag.data.layouts.base import DatasetError, Layout, check_label_cells, read_checked_csv
from fstag.data.layouts.registry import register_layout

CURATED_CSV = "train_curated.csv"
NOISY_CSV = "train_noisy.csv"
SAMPLE_SUBMISSION_CSV = "sample_submission.csv"
TEST_LABELS_CSV = "test_post_competition.csv"
AUDIO_DIRS = {"curated": "train_curated", "noisy": "train_noisy", "test": "test"}


def read_header(path: Path) -> list[str]:
    """The first row of a CSV as written (pandas renames repeated columns; this does not)."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    with open(path, newline="", encoding="utf-8") as f:
        try:
            return [c.strip() for c in next(csv.reader(f))]
        except StopIteration:
            raise DatasetError(f"{path}: the file is empty; expected a header row") from None


def vocabulary_from_header(path: Path) -> list[str]:
    """A sample submission's label columns (every column but ``fname``), in order, checked: at least one,
    none empty or repeated, none holding the label separator."""
    header = read_header(path)
    if "fname" not in header:
        raise DatasetError(f"{path}: row 1: no 'fname' column; found {header[:6]}")
    labels = [c for c in header if c != "fname"]
    if not labels:
        raise DatasetError(f"{path}: row 1: no label columns after 'fname' (its columns are the label vocabulary)")
    seen: set[str] = set()
    for j, lab in enumerate(labels, start=2):
        if not lab:
            raise DatasetError(f"{path}: row 1: column {j} has an empty name; every column after 'fname' is a label")
        if "," in lab:
            raise DatasetError(f"{path}: row 1: label {lab!r} holds a comma, which separates a clip's labels")
        if lab in seen:
            raise DatasetError(f"{path}: row 1: label {lab!r} is a column twice")
        seen.add(lab)
    return labels


def read_labelled_csv(path: Path, vocabulary: list[str] | None, column: str = "labels") -> pd.DataFrame:
    """``fname`` and ``label`` (the ``column`` cells, checked and normalised) of a train CSV."""
    df = read_checked_csv(path, ("fname", column))
    cells = check_label_cells(df[column], path, vocabulary, multi_label=True, column=column)
    return pd.DataFrame({"fname": df["fname"].tolist(), "label": cells})


def check_listed_audio(listed: Sequence[tuple[Path, int, str, Path]], hint: str = "") -> None:
    """Each ``(csv, row, fname, audio file)``: the audio file exists; else a :class:`DatasetError` naming
    the first missing file's CSV and row, and how many more are missing."""
    missing = [item for item in listed if not item[3].is_file()]
    if not missing:
        return
    csv_path, row, fname, audio = missing[0]
    more = f"; {len(missing) - 1} more listed clip(s) are missing too" if len(missing) > 1 else ""
    folder = audio.parent
    where = f"{folder} holds {sum(1 for _ in folder.iterdir())} entries" if folder.is_dir() else f"{folder} does not exist"
    raise DatasetError(f"{csv_path}: row {row}: fname {fname!r}: its audio file {audio} is missing ({where}){more}"
                       f"{hint}")


@register_layout
class Kaggle2019Layout(Layout):
    """FSDKaggle2019's folder (see the module docstring)."""

    name = "fsdkaggle2019"
    task = "multi_label"
    tree = ("train_curated.csv, train_curated/, sample_submission.csv, test/ "
            "(optional: train_noisy.csv + train_noisy/, test_post_competition.csv)")
    sources: ClassVar[tuple[str, ...]] = ("curated", "noisy")  # the sources its rows may come from

    # files ---------------------------------------------------------------------------------------------
    @property
    def curated_csv(self) -> Path:
        return self.root / CURATED_CSV

    @property
    def noisy_csv(self) -> Path:
        return self.root / NOISY_CSV

    @property
    def sample_submission(self) -> Path | None:
        return self.root / SAMPLE_SUBMISSION_CSV

    def audio_dir(self, part: str) -> Path:
        if part not in AUDIO_DIRS:
            raise DatasetError(f"unknown part {part!r}; expected one of {sorted(AUDIO_DIRS)}")
        return self.root / AUDIO_DIRS[part]

    def has_noisy(self) -> bool:
        return self.noisy_csv.is_file()

    def label_files(self) -> list[Path]:
        """train_curated.csv, train_noisy.csv (when present) and sample_submission.csv (the vocabulary)."""
        return [self.curated_csv, *([self.noisy_csv] if self.has_noisy() else []), self.root / SAMPLE_SUBMISSION_CSV]

    # the questions -------------------------------------------------------------------------------------
    def labels(self) -> list[str]:
        return vocabulary_from_header(self.root / SAMPLE_SUBMISSION_CSV)

    def train_table(self) -> pd.DataFrame:
        vocabulary = self.labels()
        curated = read_labelled_csv(self.curated_csv, vocabulary).assign(
            manually_verified=True, source="curated", in_folds=True)
        if not self.has_noisy():
            return curated
        noisy = read_labelled_csv(self.noisy_csv, vocabulary).assign(
            manually_verified=False, source="noisy", in_folds=False)
        both = set(curated["fname"]) & set(noisy["fname"])
        if both:
            fname = next(f for f in curated["fname"] if f in both)
            rc = int(curated.index[curated["fname"] == fname][0]) + 2
            rn = int(noisy.index[noisy["fname"] == fname][0]) + 2
            raise DatasetError(f"fname {fname!r} is listed in both {self.curated_csv} (row {rc}) and {self.noisy_csv} "
                               f"(row {rn}); a clip is curated or noisy ({len(both)} fname(s) are in both)")
        return pd.concat([curated, noisy], ignore_index=True)

    def test_fnames(self) -> list[str]:
        return read_checked_csv(self.root / SAMPLE_SUBMISSION_CSV, ("fname",))["fname"].tolist()

    def audio_path(self, split: str, fname: str) -> Path:
        if split == "test":
            return self.audio_dir("test") / fname
        if split != "train":
            raise DatasetError(f"unknown split {split!r}; expected train or test")
        # a train clip's folder follows its CSV (fnames are distinct across both: train_table checks)
        noisy = self.has_noisy() and fname in self._noisy_fnames()
        return self.audio_dir("noisy" if noisy else "curated") / fname

    def _noisy_fnames(self) -> set[str]:
        # read once per layout object: audio_path is asked once per clip
        cache = self.__dict__.get("_noisy_cache")
        stamp = os.stat(self.noisy_csv).st_mtime_ns
        if cache is None or cache[0] != stamp:
            cache = (stamp, set(read_checked_csv(self.noisy_csv, ("fname",))["fname"]))
            object.__setattr__(self, "_noisy_cache", cache)
        return cache[1]

    def test_labels_file(self) -> Path | None:
        path = self.root / TEST_LABELS_CSV
        return path if path.is_file() else None

    def test_labels(self) -> pd.DataFrame | None:
        """``fname``, ``label`` (checked against the vocabulary; rows of usage Ignored unchecked) and
        ``usage`` when the file has it; a scored fname that is not a test clip is an error naming its row."""
        path = self.test_labels_file()
        if path is None:
            return None
        from fstag.data.layouts.test_labels import read_test_labels

        truth = read_test_labels(path, label_column="labels")
        vocabulary, tests = self.labels(), set(self.test_fnames())
        scored = truth["usage"] != "Ignored" if "usage" in truth.columns else pd.Series(True, index=truth.index)
        cells = truth["label"].tolist()
        for i in truth.index[scored]:
            cells[i] = check_label_cells(truth["label"].iloc[[i]], path, vocabulary, True, "labels", first_row=i + 2)[0]
            if truth["fname"].iloc[i] not in tests:
                raise DatasetError(f"{path}: row {i + 2}: fname {truth['fname'].iloc[i]!r} is not a test clip of "
                                   f"{self.root / SAMPLE_SUBMISSION_CSV} ({len(tests)} clips)")
        return truth.assign(label=cells)

    def check_audio(self) -> None:
        """Every listed clip's audio file exists (preprocess.py asks before computing features); else one
        :class:`DatasetError` naming the CSV and row of the first missing one."""
        listed = [(self.curated_csv, i, f, self.audio_dir("curated") / f)
                  for i, f in enumerate(read_checked_csv(self.curated_csv, ("fname",))["fname"], start=2)]
        if self.has_noisy():
            listed += [(self.noisy_csv, i, f, self.audio_dir("noisy") / f)
                       for i, f in enumerate(read_checked_csv(self.noisy_csv, ("fname",))["fname"], start=2)]
        listed += [(self.root / SAMPLE_SUBMISSION_CSV, i, f, self.audio_dir("test") / f)
                   for i, f in enumerate(self.test_fnames(), start=2)]
        check_listed_audio(listed, hint=f" (without the noisy clips' audio, move {NOISY_CSV} out of {self.root})"
                           if self.has_noisy() and not self.audio_dir("noisy").is_dir() else "")
