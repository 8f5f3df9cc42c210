"""Kaggle submissions: write the top-3 labels per clip, validate a file, score it against test labels.

A submission has the header ``fname,label`` and one row per fname of the dataset's sample_submission.csv,
in that order, whose ``label`` is three distinct known labels separated by spaces, best first.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from fstag.data.layout import read_csv_as_text, read_sample_submission
from fstag.core.io import write_text_atomic
from fstag.evaluate.metrics import map_at_3, top1_accuracy

HEADER = ["fname", "label"]
USAGES = ("Public", "Private", "Ignored")
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


def validate_submission(path: str | os.PathLike, sample_submission_path: str | os.PathLike, labels) -> pd.DataFrame:
    """Check a submission against sample_submission.csv and the label set; return it as a DataFrame.

    Raises :class:`SubmissionError` on a wrong header, a missing, extra, repeated or misplaced fname,
    or a row whose label is not three distinct known labels.
    """
    df = read_submission(path)
    expected = read_sample_submission(sample_submission_path)["fname"].tolist()
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
        raise SubmissionError(f"{path}: does not match {sample_submission_path}: {problem}")
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
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise SubmissionError(f"{path}: cannot be read as CSV: {exc}") from exc
    missing = [c for c in ("fname", "label") if c not in df.columns]
    if missing:
        raise SubmissionError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    out = pd.DataFrame({"fname": df["fname"], "label": df["label"].str.strip()})
    if "usage" in df.columns:
        out["usage"] = df["usage"].str.strip().str.capitalize()
        bad = ~out["usage"].isin(USAGES)
        if bad.any():
            raise SubmissionError(f"{path}: column 'usage' has value {df['usage'][bad].iloc[0]!r}; expected {USAGES}")
    return out


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
    truth = read_test_labels(labels_csv)
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
    if has_usage:
        for part in ("Public", "Private"):
            sel = (scored["usage"] == part).to_numpy()
            if sel.any():
                out[f"map3_{part.lower()}"] = map_at_3(scores[sel], targets[sel])
                out[f"n_{part.lower()}"] = float(sel.sum())
    if flags is not None:
        scored_fnames = scored["fname"].to_numpy()
        flagged = np.zeros(len(scored_fnames), dtype=bool)
        for reason, fnames in flags.items():
            hit = np.isin(scored_fnames, list(fnames))
            out[f"n_{reason}"] = float(hit.sum())
            flagged |= hit
        if (~flagged).any():
            out["map3_unflagged"] = map_at_3(scores[~flagged], targets[~flagged])
    return out
