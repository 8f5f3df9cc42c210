"""Planning the multi-label demo: each clip's name, sources (labels, in the order they are mixed), listed
labels, the noisy part's wrong label sets and the test clips' leaderboard usage."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fstag.core.task import join_labels
from fstag.data.demo.multilabel_settings import MultilabelDemoSettings
from fstag.data.demo.names import ML_CURATED, ML_NOISY, ML_PLAN_CODE, ML_TEST
from fstag.data.demo.plan import _balanced_labels, _pick, _unique_fnames

CORRUPTIONS = ("dropped", "added", "swapped")  # how a noisy row's listed labels differ from its sources'
SOURCE_SEPARATOR = ";"  # the truth file's per-source columns


def _label_sets(rng: np.random.Generator, cfg: MultilabelDemoSettings, n: int) -> list[tuple[str, ...]]:
    """``n`` source lists: 1..max_sources distinct labels each (weights ``source_shares``), the first
    label of each list spread as evenly as possible over the labels, the others drawn uniformly."""
    counts = rng.choice(np.arange(1, cfg.max_sources + 1), size=n, p=np.array(cfg.source_shares))
    first = _balanced_labels(rng, cfg.labels, n)
    sets = []
    for head, k in zip(first, counts.tolist()):
        others = [x for x in cfg.labels if x != head]
        extra = rng.choice(np.array(others, dtype=object), size=k - 1, replace=False).tolist() if k > 1 else []
        sets.append((str(head), *map(str, extra)))
    return sets


def _in_order(labels: set[str] | list[str] | tuple[str, ...], vocabulary: tuple[str, ...]) -> str:
    """A label cell: the labels in the vocabulary's sorted order, comma-joined."""
    return join_labels(sorted(labels, key=sorted(vocabulary).index))


def _corrupt(rng: np.random.Generator, true: tuple[str, ...], vocabulary: tuple[str, ...]) -> tuple[str, set[str]]:
    """A wrong label set for a clip of sources ``true``: one label dropped (when it has two or more), one
    added or one swapped for another (when the vocabulary has a label it lacks); the kind drawn uniformly."""
    kinds = [k for k, ok in zip(CORRUPTIONS, (len(true) > 1, len(true) < len(vocabulary), len(true) < len(vocabulary)))
             if ok]
    kind = kinds[int(rng.integers(len(kinds)))]
    listed = set(true)
    absent = [x for x in vocabulary if x not in listed]
    if kind in ("dropped", "swapped"):
        listed.remove(true[int(rng.integers(len(true)))])
    if kind in ("added", "swapped"):
        listed.add(absent[int(rng.integers(len(absent)))])
    return kind, listed


def plan_multilabel(cfg: MultilabelDemoSettings) -> pd.DataFrame:
    """One row per clip: ``split`` (curated, noisy, test), ``index``, ``fname``, ``sources`` (the labels
    mixed, in order, ``;``-joined), ``true_labels`` and ``labels`` (what the public files list; both
    comma-joined in the vocabulary's sorted order), ``n_sources``, ``corruption`` (the noisy rows' wrong
    label sets: dropped / added / swapped, else empty) and ``usage`` (test: Public / Private / Ignored).

    ``labels`` differs from ``true_labels`` only on ``round(noisy_wrong_share * n_noisy)`` noisy rows.
    """
    rng = np.random.default_rng([cfg.seed, ML_PLAN_CODE])
    sizes = {ML_CURATED: cfg.n_curated, ML_NOISY: cfg.n_noisy, ML_TEST: cfg.n_test}
    fnames = iter(_unique_fnames(rng, sum(sizes.values())))
    parts = []
    for split, n in sizes.items():
        sources = _label_sets(rng, cfg, n)
        true = [_in_order(s, cfg.labels) for s in sources]
        listed, corruption = list(true), [""] * n
        if split == ML_NOISY:
            for i in sorted(_pick(rng, np.arange(n), cfg.noisy_wrong_share).tolist()):
                corruption[i], wrong = _corrupt(rng, sources[i], cfg.labels)
                listed[i] = _in_order(wrong, cfg.labels)
        usage = [""] * n
        if split == ML_TEST:
            n_ignored = min(int(round(cfg.ignored_share * n)), n - 1)
            order = rng.permutation(n)
            usage = np.array(["Private"] * n, dtype=object)
            usage[order[:n_ignored]] = "Ignored"
            usage[_pick(rng, order[n_ignored:], cfg.public_share)] = "Public"
            usage = usage.tolist()
        parts.append(pd.DataFrame({
            "split": split, "index": np.arange(n), "fname": [next(fnames) for _ in range(n)],
            "sources": [SOURCE_SEPARATOR.join(s) for s in sources], "true_labels": true, "labels": listed,
            "n_sources": [len(s) for s in sources], "corruption": corruption, "usage": usage,
        }))
    return pd.concat(parts, ignore_index=True)
