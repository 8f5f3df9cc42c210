"""Kaggle submissions: write, validate and score them, in the task's format (:mod:`fstag.core.task`).

- single-label (FSDKaggle2018): the header ``fname,label`` and one row per test clip (sample_submission.csv's
  fnames, in that order), whose ``label`` is three distinct known labels separated by spaces, best first;
  scored by MAP@3 (and top-1);
- multi-label (FSDKaggle2019): the header ``fname,<label>,...`` (sample_submission.csv's columns, in its
  order, when the data set has one; else the label vocabulary's order) and one row per test clip with a
  probability in [0, 1] for each label; scored by lwlrap (and mAP).

Test labels (``fname``, ``label`` comma-joined for multi-label clips, optional ``usage``) come from the
layout (:meth:`fstag.data.layouts.Layout.test_labels`); rows of usage ``Ignored`` are not scored.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from fstag.data.layouts import read_csv_as_text
from fstag.data.layouts.kaggle2018 import read_sample_submission
from fstag.data.layouts.test_labels import USAGES
from fstag.data.layouts.test_labels import read_test_labels as _read_test_labels
from fstag.core.io import write_text_atomic
from fstag.core.task import Task, split_labels
from fstag.evaluate.metrics import map_at_3, task_scores, top1_accuracy

HEADER = ["fname", "label"]
# Boolean arrays a run's test.npz may carry beside its probabilities: clips predicted with uniform
# probabilities because their audio could not be read (missing) or holds no sound (silent).
FLAG_ARRAYS = ("missing", "silent")


class SubmissionError(ValueError):
    """A submission or a test labels file is malformed; the message names the file, row and value."""


def top3_labels(probs, labels: list[str]) -> list[str]:
    """The three most probable labels of each row, space-separated; ties go to the lower class index."""
    top = np.argsort(-np.asarray(probs, dtype=np.float64), axis=1, kind="stable")[:, :3]
    return [" ".join(labels[j] for j in row) for row in top]


def write_submission(path: str | os.PathLike, fnames: list[str], probs, labels: list[str]) -> Path:
    """Write the submission for (N, C) ``probs`` whose rows follow ``fnames``; atomic."""
    if len(labels) < 3:
        raise SubmissionError(f"a submission needs at least 3 labels, got {labels}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(zip(fnames, top3_labels(probs, labels)))
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    df = read_csv_as_text(path, SubmissionError)
    if list(df.columns) != HEADER:
        raise SubmissionError(f"{path}: header must be {','.join(HEADER)}, found {','.join(map(str, df.columns))}")
    return df


def _expected_fnames(template) -> tuple[list[str], str]:
    """The fnames a submission must list, and what they come from: a sample_submission.csv path, or a list."""
    if isinstance(template, (str, os.PathLike)):
        return read_sample_submission(template)["fname"].tolist(), str(template)
    return list(template), "the data set's test clips"


def _check_fnames(path, df: pd.DataFrame, template) -> None:
    expected, source = _expected_fnames(template)
    got = df["fname"].tolist()
    if got != expected:
        dup = df["fname"][df["fname"].duplicated()].tolist()
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        if dup:
            problem = f"fname(s) repeated, e.g. {dup[:5]}"
        elif missing or extra:
            problem = f"{len(missing)} fname(s) missing, e.g. {missing[:5]}; {len(extra)} unknown, e.g. {extra[:5]}"
        else:
            row = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            problem = f"row {row + 2}: fname {got[row]!r}, expected {expected[row]!r} (order differs)"
        raise SubmissionError(f"{path}: does not match {source}: {problem}")


def validate_submission(path: str | os.PathLike, sample_submission_path, labels) -> pd.DataFrame:
    """Check a submission against sample_submission.csv (or a list of the test fnames) and the label set;
    return it as a DataFrame.

    Raises :class:`SubmissionError` on a wrong header, a missing, extra, repeated or misplaced fname,
    or a row whose label is not three distinct known labels.
    """
    df = read_submission(path)
    _check_fnames(path, df, sample_submission_path)
    known = set(labels)
    for i, cell in enumerate(df["label"], start=2):
        parts = cell.split(" ")
        if len(parts) != 3 or len(set(parts)) != 3 or not known.issuperset(parts):
            raise SubmissionError(
                f"{path}: row {i}: label {cell!r} must be three distinct known labels separated by single spaces"
            )
    return df


def read_test_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Columns fname, label and, when the file has it, usage (normalised to Public/Private/Ignored)."""
    return _read_test_labels(path, SubmissionError)


def _truth(labels_csv) -> tuple[pd.DataFrame, str]:
    """Test labels given as a file or as a table (a layout's :meth:`test_labels`), and how to name them."""
    if isinstance(labels_csv, pd.DataFrame):
        return labels_csv, "the test labels"
    return read_test_labels(labels_csv), str(labels_csv)


def _rank_scores(cells: list[str], labels: list[str]) -> np.ndarray:
    """Scores 3, 2, 1 for the first, second, third predicted label of each row (0 elsewhere)."""
    index = {label: j for j, label in enumerate(labels)}
    scores = np.zeros((len(cells), len(labels)))
    for i, cell in enumerate(cells):
        for rank, label in enumerate(cell.split(" ")[:3]):
            scores[i, index[label]] = 3 - rank
    return scores


def read_test_flags(test_npz_paths: Iterable[str | os.PathLike]) -> dict[str, set[str]]:
    """``{"missing": fnames, "silent": fnames}`` over the given test.npz files (a clip flagged in any)."""
    flags: dict[str, set[str]] = {k: set() for k in FLAG_ARRAYS}
    for p in test_npz_paths:
        with np.load(p, allow_pickle=False) as z:
            fnames = np.asarray(z["fnames"]).astype(str)
            for k in FLAG_ARRAYS:
                if k in z.files:
                    flags[k].update(fnames[np.asarray(z[k], dtype=bool)].tolist())
    return flags


def score_submission(path: str | os.PathLike, labels_csv: str | os.PathLike, labels: list[str],
                     flags: Mapping[str, Iterable[str]] | None = None) -> dict[str, float]:
    """MAP@3 and top-1 accuracy of a submission over the scored clips of a test labels file.

    Rows with usage ``Ignored`` are left out. Returns ``map3``, ``acc1`` and ``n_scored``; when the file
    has a usage column also ``map3_public``/``map3_private`` (and their ``n_``) over each part. With
    ``flags`` (:func:`read_test_flags`: clips predicted with uniform probabilities, by reason) also
    ``n_<reason>``, the scored clips so flagged, and ``map3_unflagged`` over the others.
    """
    sub = read_submission(path).set_index("fname")["label"]
    truth, labels_csv = _truth(labels_csv)
    has_usage = "usage" in truth.columns
    scored = truth[truth["usage"] != "Ignored"] if has_usage else truth
    missing = scored["fname"][~scored["fname"].isin(sub.index)].tolist()
    if missing:
        raise SubmissionError(f"{path}: no row for {len(missing)} scored clip(s) of {labels_csv}, e.g. {missing[:5]}")
    unknown = sorted(set(scored["label"]) - set(labels))
    if unknown:
        raise SubmissionError(f"{labels_csv}: label(s) {unknown[:5]} are not among the blend's {len(labels)} labels")
    index = {label: j for j, label in enumerate(labels)}
    scores = _rank_scores(sub.loc[scored["fname"]].tolist(), labels)
    targets = scored["label"].map(index).to_numpy()
    out = {
        "map3": map_at_3(scores, targets),
        "acc1": top1_accuracy(scores, targets),
        "n_scored": float(len(scored)),
    }
    out.update(_breakdown(scored, flags, lambda sel: {"map3": map_at_3(scores[sel], targets[sel])}, "map3"))
    return out


def _breakdown(scored: pd.DataFrame, flags: Mapping[str, Iterable[str]] | None,
               scores_of: Callable[[np.ndarray], dict[str, float]], primary: str) -> dict[str, float]:
    """The scores of the scored clips' parts: ``<metric>_public``/``_private`` and ``n_public``/``n_private`` when
    ``scored`` has a usage column (``scores_of(mask)``: the metrics of the clips in a boolean mask); with ``flags``,
    ``n_<reason>`` (the scored clips each reason flagged) and ``<primary>_unflagged`` over the others."""
    out: dict[str, float] = {}
    if "usage" in scored.columns:
        for part in ("Public", "Private"):
            sel = (scored["usage"] == part).to_numpy()
            if sel.any():
                for k, v in scores_of(sel).items():
                    out[f"{k}_{part.lower()}"] = v
                out[f"n_{part.lower()}"] = float(sel.sum())
    if flags is not None:
        names = scored["fname"].to_numpy()
        flagged = np.zeros(len(names), dtype=bool)
        for reason, fnames in flags.items():
            hit = np.isin(names, list(fnames))
            out[f"n_{reason}"] = float(hit.sum())
            flagged |= hit
        if (~flagged).any():
            out[f"{primary}_unflagged"] = scores_of(~flagged)[primary]
    return out


# multi-label: one probability column per label -------------------------------------------------------------
def submission_columns(labels: list[str], template=None) -> list[str]:
    """The probability columns of a multi-label submission: sample_submission.csv's (``template``), which
    must hold exactly the label vocabulary, else the vocabulary's order."""
    if template is None or not isinstance(template, (str, os.PathLike)):
        return list(labels)
    header = [c for c in read_csv_as_text(template, SubmissionError).columns if c != "fname"]
    if sorted(header) != sorted(labels):
        raise SubmissionError(f"{template}: its label columns ({len(header)}) are not the runs' {len(labels)} labels: "
                              f"missing {sorted(set(labels) - set(header))[:5]}, unknown {sorted(set(header) - set(labels))[:5]}")
    return header


def write_probability_submission(path: str | os.PathLike, fnames: list[str], probs, labels: list[str],
                                 template=None) -> Path:
    """FSDKaggle2019's submission: ``fname`` and one probability column per label, in the template's column
    order (sample_submission.csv) or the labels'; atomic."""
    columns = submission_columns(labels, template)
    index = {lab: j for j, lab in enumerate(labels)}
    p = np.asarray(probs, dtype=np.float64)[:, [index[c] for c in columns]]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["fname", *columns])
    for f, row in zip(fnames, p):
        writer.writerow([f, *(f"{v:.6f}" for v in row)])
    write_text_atomic(path, buf.getvalue())
    return Path(path)


def validate_probability_submission(path: str | os.PathLike, template, labels: list[str]) -> pd.DataFrame:
    """Check a multi-label submission: its header (``fname`` + the template's label columns, in order), its
    fnames (the template's, or the given list, in order) and every cell a probability in [0, 1]."""
    path = Path(path)
    df = read_csv_as_text(path, SubmissionError)
    columns = ["fname", *submission_columns(labels, template)]
    if list(df.columns) != columns:
        raise SubmissionError(f"{path}: header must be fname + {len(columns) - 1} label columns in the template's "
                              f"order, found {list(df.columns)[:6]}{' ...' if len(df.columns) > 6 else ''}")
    _check_fnames(path, df, template)
    for c in columns[1:]:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = ~((values >= 0) & (values <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise SubmissionError(f"{path}: row {i + 2}: column {c!r} is {df[c].iloc[i]!r}, not a probability in [0, 1]")
    return df


def score_probabilities(task: Task, fnames: list[str], probs, labels: list[str], truth,
                        flags: Mapping[str, Iterable[str]] | None = None) -> dict[str, float]:
    """A multi-label blend's test scores: the task's metrics (``lwlrap``, ``map``) over the scored clips of
    ``truth`` (a test labels table or file; usage ``Ignored`` left out), ``n_scored``, per usage
    (``lwlrap_public``, ...) and, with ``flags``, ``n_<reason>`` and ``lwlrap_unflagged``."""
    truth, source = _truth(truth)
    scored = truth[truth["usage"] != "Ignored"] if "usage" in truth.columns else truth
    row = {f: i for i, f in enumerate(fnames)}
    missing = scored["fname"][~scored["fname"].isin(set(row))].tolist()
    if missing:
        raise SubmissionError(f"no prediction for {len(missing)} scored clip(s) of {source}, e.g. {missing[:5]}")
    cells = scored["label"].tolist()
    unknown = sorted({lab for c in cells for lab in split_labels(c)} - set(labels))
    if unknown:
        raise SubmissionError(f"{source}: label(s) {unknown[:5]} are not among the blend's {len(labels)} labels")
    targets = task.encode(cells, labels, source)
    p = np.asarray(probs, dtype=np.float64)[scored["fname"].map(row).to_numpy()]
    out = {**task_scores(task, p, targets), "n_scored": float(len(scored))}
    out.update(_breakdown(scored, flags, lambda sel: task_scores(task, p[sel], targets[sel]), task.primary))
    return out
