"""A seeded, stratified K-fold split of train.csv, saved once next to the features and reused by every
run and stage (so a retrain_val job sees exactly its parent's validation fold).

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


def assign_folds(train: pd.DataFrame, n_splits: int = 5, seed: int = 2018) -> np.ndarray:
    """Fold index (0..n_splits-1) of each row, stratified by label, deterministic for ``seed``.

    Labels with fewer rows than folds are spread over as many folds as they have rows.
    """
    if len(train) < n_splits:
        raise ValueError(f"train.csv has {len(train)} rows; need at least folds.n_splits={n_splits}")
    folds = np.full(len(train), -1, dtype=np.int64)
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # "least populated class has only N members": handled by design
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, val_idx) in enumerate(skf.split(np.zeros(len(train)), train["label"].to_numpy())):
            folds[val_idx] = k
    return folds


def load_or_create_folds(train: pd.DataFrame, cache_dir: str | Path, n_splits: int = 5, seed: int = 2018) -> pd.DataFrame:
    """``train`` with a ``fold`` column; the split is read from (or written to) a CSV in ``cache_dir``
    whose name carries the settings and a digest of train.csv, so a changed train.csv gets a new split."""
    path = Path(cache_dir) / f"folds_n{n_splits}_seed{seed}_{_train_digest(train)}.csv"
    if path.is_file():
        saved = pd.read_csv(path, dtype={"fname": str, "fold": np.int64}, keep_default_na=False)
        if saved["fname"].tolist() == train["fname"].tolist():
            return train.assign(fold=saved["fold"].to_numpy())
        log.warning("%s does not match train.csv; recomputing the split", path)
    folds = assign_folds(train, n_splits, seed)
    out = pd.DataFrame({"fname": train["fname"], "label": train["label"], "fold": folds})
    write_text_atomic(path, out.to_csv(index=False))
    log.info("wrote the %d-fold split to %s", n_splits, path)
    return train.assign(fold=folds)


def fold_split(folded: pd.DataFrame, n_splits: int, seed: int, train_csv_sha256: str | None) -> dict:
    """The identity of a split, as saved in run.json: ``n_splits``, ``seed``, ``train_csv_sha256`` (the
    digest of train.csv, or None) and ``digest``: sha256 (16 hex) of the assignment itself, every
    ``fname<TAB>fold`` row of ``folded`` (train.csv with its ``fold`` column) in order. Two runs share a
    split exactly when their digests are equal."""
    h = hashlib.sha256()
    for fname, fold in zip(folded["fname"], folded["fold"]):
        h.update(f"{fname}\t{int(fold)}\n".encode())
    return {"n_splits": int(n_splits), "seed": int(seed), "train_csv_sha256": train_csv_sha256,
            "digest": h.hexdigest()[:16]}


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


def split_of(train_csv: str | Path, cache_dir: str | Path, n_splits: int, seed: int) -> dict:
    """The :func:`fold_split` record of the split that :func:`load_or_create_folds` gives for this
    train.csv and settings (read from its cache, or created and cached)."""
    from fstag.data.layout import read_train_csv

    train_csv = Path(train_csv)
    folded = load_or_create_folds(read_train_csv(train_csv), cache_dir, int(n_splits), int(seed))
    sha = hashlib.sha256(train_csv.read_bytes()).hexdigest()
    return fold_split(folded, n_splits, seed, sha)
