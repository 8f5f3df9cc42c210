"""Planning: which clip gets which name, label, verification flag and leaderboard usage."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from fstag.data.demo.names import _SPLIT_CODES, IGNORED_LABEL, SHIFTED_SPLIT
from fstag.data.demo.settings import DemoSettings


def _unique_fnames(rng: np.random.Generator, n: int, taken: Iterable[str] = ()) -> list[str]:
    """``n`` distinct Kaggle-style names: 8 hex digits + ``.wav``, none of them in ``taken``."""
    names: list[str] = []
    seen: set[int] = {int(name[:8], 16) for name in taken}
    while len(names) < n:
        for value in rng.integers(0, 2**32, size=n - len(names), dtype=np.uint64).tolist():
            if value not in seen:
                seen.add(value)
                names.append(f"{value:08x}.wav")
    return names[:n]


def _balanced_labels(rng: np.random.Generator, labels: tuple[str, ...], n: int) -> np.ndarray:
    """``n`` labels, as even as possible over ``labels``, in random order."""
    return rng.permutation(np.resize(np.array(labels, dtype=object), n))


def _pick(rng: np.random.Generator, candidates: np.ndarray, share: float) -> np.ndarray:
    """A random subset of ``candidates`` (indices) of size ``round(share * len)``."""
    return rng.permutation(candidates)[: int(round(share * len(candidates)))]


def plan_dataset(settings: DemoSettings) -> pd.DataFrame:
    """One row per clip: split, index, fname, true label, listed label, verification, usage.

    ``label`` is what the public files list (train.csv, test_post_competition.csv, test_shifted.csv);
    ``true_label`` is what the audio holds. They differ only for the mislabelled unverified train rows
    (and for the unscored test clips, listed as ``None`` like the release). The shifted rows come from
    their own seed stream, so they leave the train and test rows unchanged.
    """
    rng = np.random.default_rng([settings.seed, 0])
    n_train, n_test = settings.n_train, settings.n_test
    fnames = _unique_fnames(rng, n_train + n_test)

    true_train = _balanced_labels(rng, settings.labels, n_train)
    listed_train = true_train.copy()
    verified = np.ones(n_train, dtype=bool)
    unverified = _pick(rng, np.arange(n_train), settings.unverified_share)
    verified[unverified] = False
    for i in _pick(rng, unverified, settings.wrong_label_share):
        others = [x for x in settings.labels if x != true_train[i]]
        listed_train[i] = others[rng.integers(len(others))]

    n_ignored = min(int(round(settings.ignored_share * n_test)), n_test - 1)
    usage = np.array(["Private"] * n_test, dtype=object)
    order = rng.permutation(n_test)
    usage[order[:n_ignored]] = "Ignored"
    scored = order[n_ignored:]
    usage[_pick(rng, scored, settings.public_share)] = "Public"
    true_test = np.empty(n_test, dtype=object)
    true_test[scored] = _balanced_labels(rng, settings.labels, len(scored))
    true_test[order[:n_ignored]] = rng.choice(np.array(settings.labels, dtype=object), n_ignored)
    listed_test = np.where(usage == "Ignored", IGNORED_LABEL, true_test)

    train = pd.DataFrame(
        {"split": "train", "index": np.arange(n_train), "fname": fnames[:n_train], "true_label": true_train,
         "label": listed_train, "manually_verified": verified.astype(int), "usage": ""}
    )
    test = pd.DataFrame(
        {"split": "test", "index": np.arange(n_test), "fname": fnames[n_train:], "true_label": true_test,
         "label": listed_test, "manually_verified": 1, "usage": usage}
    )
    parts = [train, test]
    if settings.n_shifted:
        shifted_rng = np.random.default_rng([settings.seed, 0, _SPLIT_CODES[SHIFTED_SPLIT]])
        true_shifted = _balanced_labels(shifted_rng, settings.labels, settings.n_shifted)
        parts.append(pd.DataFrame(
            {"split": SHIFTED_SPLIT, "index": np.arange(settings.n_shifted),
             "fname": _unique_fnames(shifted_rng, settings.n_shifted, taken=fnames), "true_label": true_shifted,
             "label": true_shifted, "manually_verified": 1, "usage": ""}
        ))
    return pd.concat(parts, ignore_index=True)
