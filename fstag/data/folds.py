"""A seeded, stratified K-fold split of a data set's train table, saved once next to the features and reused
by every run and stage (so a retrain_val job sees exactly its parent's validation fold).

``folds.method``:

- ``stratified`` (the default): scikit-learn's ``StratifiedKFold`` by label for a single-label task; for a
  multi-label task the ``iterative-stratification`` package's ``MultilabelStratifiedKFold`` (Sechidis et
  al.'s iterative stratification), which keeps every label in every fold where its count allows;
- ``given``: the layout's own validation split (FSD50K's ``split`` column): fold 0 is its validation rows,
  and the only fold (``fold=0``, or ``fold=given``).

Rows a layout marks ``in_folds=False`` (FSDKaggle2019's noisy clips) are never validated on: fold -1.

The split is part of a run's identity: :func:`fold_split` describes it (``fold_split`` in run.json), and
runs of different splits are never combined (retrain_val, blend), since one's training rows would be the
other's validation rows."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from fstag.core.io import write_text_atomic

log = logging.getLogger(__name__)


def _train_digest(train: pd.DataFrame) -> str:
    h = hashlib.sha1()
    for fname, label in zip(train["fname"], train["label"]):
        h.update(f"{fname}\t{label}\n".encode())
    return h.hexdigest()[:10]


METHODS = ("stratified", "given")
GIVEN_FOLD = "given"  # fold=given: the layout's own validation split (fold 0)


class FoldsError(ValueError):
    """A fold setting does not fit the data (a method, a fold out of range); the message names the key."""


def fold_index(fold, method: str = "stratified", n_splits: int | None = None) -> int:
    """The fold number of a ``fold=`` value: an integer, or ``given`` (fold 0 of ``folds.method=given``)."""
    if str(fold) == GIVEN_FOLD:
        if method != "given":
            raise FoldsError(f"fold=given needs folds.method=given (a layout with its own validation split, such "
                             f"as data=fsd50k); folds.method={method}: fold=0..{(n_splits or 5) - 1}")
        return 0
    try:
        k = int(fold)
    except (TypeError, ValueError):
        raise FoldsError(f"fold={fold!r}: a fold number 0..{(n_splits or 5) - 1}, or given") from None
    if method == "given" and k != 0:
        raise FoldsError(f"fold={k}: with folds.method=given the data set has one validation split, fold=0 (or fold=given)")
    if n_splits is not None and method != "given" and not 0 <= k < int(n_splits):
        raise FoldsError(f"fold={k} is out of range: folds.n_splits={n_splits}")
    return k


def assign_folds(train: pd.DataFrame, n_splits: int = 5, seed: int = 2018, multi_label: bool = False) -> np.ndarray:
    """Fold index (0..n_splits-1) of each row, stratified by label, deterministic for ``seed``.

    Labels with fewer rows than folds are spread over as many folds as they have rows. ``multi_label``:
    ``label`` holds comma-joined labels, stratified by iterative stratification over the label matrix.
    """
    if len(train) < n_splits:
        raise FoldsError(f"the train table has {len(train)} rows; need at least folds.n_splits={n_splits}")
    folds = np.full(len(train), -1, dtype=np.int64)
    import warnings

    if multi_label:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        from fstag.core.task import split_labels

        cells = [split_labels(c) for c in train["label"]]
        vocab = sorted({lab for c in cells for lab in c})
        index = {lab: j for j, lab in enumerate(vocab)}
        y = np.zeros((len(train), len(vocab)), dtype=np.int64)
        for i, c in enumerate(cells):
            y[i, [index[lab] for lab in c]] = 1
        splitter, target = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed), y
    else:
        splitter, target = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed), train["label"].to_numpy()
    with warnings.catch_warnings():  # "least populated class has only N members": handled by design
        warnings.simplefilter("ignore", UserWarning)
        try:
            for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(train)), target)):
                folds[val_idx] = k
        except ValueError as exc:  # e.g. every label has fewer rows than folds
            counts = train["label"].value_counts()
            raise FoldsError(f"folds.n_splits={n_splits} cannot split these {len(train)} rows by label ({exc}); the "
                             f"largest label has {int(counts.max())} rows: lower folds.n_splits or add clips") from None
    return folds


def _cache_name(n_splits: int, seed: int, digest: str, multi_label: bool) -> str:
    return f"folds_{'ml_' if multi_label else ''}n{n_splits}_seed{seed}_{digest}.csv"


def load_or_create_folds(train: pd.DataFrame, cache_dir: str | Path, n_splits: int = 5, seed: int = 2018,
                         multi_label: bool = False, method: str = "stratified") -> pd.DataFrame:
    """``train`` with a ``fold`` column; the split is read from (or written to) a CSV in ``cache_dir``
    whose name carries the settings and a digest of the train table, so a changed table gets a new split.
    ``method=given`` keeps the table's own ``fold`` column; rows with ``in_folds`` false get fold -1."""
    if method not in METHODS:
        raise FoldsError(f"folds.method={method!r}: choose one of {', '.join(METHODS)}")
    if method == "given":
        if "fold" not in train.columns:
            raise FoldsError("folds.method=given: this data layout has no validation split of its own; "
                             "use folds.method=stratified")
        return train.assign(fold=train["fold"].astype(np.int64).to_numpy())
    in_folds = train["in_folds"].to_numpy(dtype=bool) if "in_folds" in train.columns else np.ones(len(train), bool)
    if not in_folds.all():  # the rows that only train: fold -1; the split is of the others
        part = load_or_create_folds(train[in_folds].drop(columns="in_folds").reset_index(drop=True), cache_dir,
                                    n_splits, seed, multi_label, method)
        folds = np.full(len(train), -1, dtype=np.int64)
        folds[in_folds] = part["fold"].to_numpy()
        return train.assign(fold=folds)
    path = Path(cache_dir) / _cache_name(n_splits, seed, _train_digest(train), multi_label)
    if path.is_file():
        saved = pd.read_csv(path, dtype={"fname": str, "fold": np.int64}, keep_default_na=False)
        if saved["fname"].tolist() == train["fname"].tolist():
            return train.assign(fold=saved["fold"].to_numpy())
        log.warning("%s does not match train.csv; recomputing the split", path)
    folds = assign_folds(train, n_splits, seed, multi_label)
    out = pd.DataFrame({"fname": train["fname"], "label": train["label"], "fold": folds})
    write_text_atomic(path, out.to_csv(index=False))
    log.info("wrote the %d-fold split to %s", n_splits, path)
    return train.assign(fold=folds)


def fold_split(folded: pd.DataFrame, n_splits: int, seed: int, train_csv_sha256: str | None,
               method: str = "stratified") -> dict:
    """The identity of a split, as saved in run.json: ``n_splits``, ``seed``, ``train_csv_sha256`` (the
    digest of the layout's label files: train.csv's sha256 for the Kaggle layout, or None), ``method`` (only
    when not ``stratified``) and ``digest``: sha256 (16 hex) of the assignment itself, every
    ``fname<TAB>fold`` row of ``folded`` (the train table with its ``fold`` column) in order. Two runs share
    a split exactly when their digests are equal."""
    h = hashlib.sha256()
    for fname, fold in zip(folded["fname"], folded["fold"]):
        h.update(f"{fname}\t{int(fold)}\n".encode())
    out = {"n_splits": int(n_splits), "seed": int(seed), "train_csv_sha256": train_csv_sha256,
           "digest": h.hexdigest()[:16]}
    if method != "stratified":
        out["method"] = method
    return out


def describe_split(split: dict | None) -> str:
    """A short readable form of a :func:`fold_split` record for error messages."""
    if not split:
        return "no recorded split"
    sha = split.get("train_csv_sha256")
    return (f"split {split.get('digest')} (n_splits={split.get('n_splits')}, seed={split.get('seed')}, "
            f"train.csv sha256 {str(sha)[:12] if sha else 'unknown'})")


def same_split(a: dict | None, b: dict | None) -> bool:
    """Whether two recorded splits are the same (True when either run predates the record)."""
    return not a or not b or a.get("digest") == b.get("digest")


def split_of(layout, cache_dir: str | Path, n_splits: int, seed: int, multi_label: bool = False,
             method: str = "stratified", table: pd.DataFrame | None = None) -> dict:
    """The :func:`fold_split` record of the split that :func:`load_or_create_folds` gives for this layout's
    train table (``table`` when already read) and settings (read from its cache, or created and cached)."""
    table = layout.train_table() if table is None else table
    folded = load_or_create_folds(table, cache_dir, int(n_splits), int(seed), multi_label, method)
    return fold_split(folded, n_splits, seed, layout.digest(), method)
