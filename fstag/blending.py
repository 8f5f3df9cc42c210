"""Blend maths: align member predictions by file name, combine them, fit member weights on OOF rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fstag.metrics import arithmetic_mean, geometric_mean, map_at_3, top1_accuracy
from fstag.run_dir import Predictions

METHODS = {"gmean": geometric_mean, "mean": arithmetic_mean}
# Raw weight values tried for one member at a time by :func:`fit_weights` (the others held fixed).
WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


class BlendError(ValueError):
    """Member predictions cannot be blended (missing rows, no shared OOF rows, bad weights)."""


def combine(prob_stack, weights=None, method: str = "gmean") -> np.ndarray:
    """Blend (M, N, C) member probabilities into (N, C): weighted geometric (``gmean``) or arithmetic mean."""
    if method not in METHODS:
        raise BlendError(f"unknown blend method {method!r}; expected one of {sorted(METHODS)}")
    return METHODS[method](prob_stack, weights, axis=0)


def align(preds: Predictions, fnames: list[str], what: str) -> np.ndarray:
    """Rows of ``preds.probs`` in the order of ``fnames``; raise naming the first missing file names."""
    index = {f: i for i, f in enumerate(preds.fnames)}
    missing = [f for f in fnames if f not in index]
    if missing:
        raise BlendError(
            f"{what}: no prediction for {len(missing)} of {len(fnames)} file names, e.g. {missing[:5]}"
        )
    return preds.probs[[index[f] for f in fnames]]


@dataclass
class SharedOOF:
    """The OOF rows every member predicts: ``probs`` (M, N, C), ``targets`` (N,), in ``fnames`` order."""

    fnames: list[str]
    probs: np.ndarray
    targets: np.ndarray


def shared_oof(oofs: list[Predictions], keys: list[str]) -> SharedOOF:
    """Restrict the members' OOF predictions to the file names all of them hold (first member's order).

    Raises :class:`BlendError` when a member has no targets or the members disagree on a target.
    """
    for oof, key in zip(oofs, keys):
        if oof.targets is None:
            raise BlendError(f"member {key}: oof.npz holds no 'targets'")
    common = set(oofs[0].fnames).intersection(*(o.fnames for o in oofs[1:]))
    fnames = [f for f in oofs[0].fnames if f in common]
    probs, targets = [], []
    for oof in oofs:
        index = {f: i for i, f in enumerate(oof.fnames)}
        rows = np.asarray([index[f] for f in fnames], dtype=np.int64)
        probs.append(oof.probs[rows])
        targets.append(oof.targets[rows])
    for t, key in zip(targets[1:], keys[1:]):
        if not np.array_equal(t, targets[0]):
            bad = fnames[int(np.argmax(t != targets[0]))]
            raise BlendError(f"members {keys[0]} and {key} disagree on the OOF target of {bad!r}")
    return SharedOOF(fnames, np.stack(probs), targets[0])


@dataclass(frozen=True)
class Families:
    """Members grouped by what they are (``arch/aug/variant/stage``) regardless of fold.

    A 5-fold sweep gives each family one member per fold; each member's OOF rows are its own fold, so a
    family's OOF predictions cover every fold it was trained on, and families share those rows even
    though single members do not. OOF weights are fitted per family and spread over its members.
    """

    keys: list[str]
    of_member: list[int]

    def member_weights(self, family_weights) -> list[float]:
        """Each family's weight split equally over its members (summing to 1 overall)."""
        fw = normalise(family_weights)
        counts = np.bincount(self.of_member, minlength=len(self.keys))
        return [float(fw[f] / counts[f]) for f in self.of_member]

    def family_weights(self, member_weights) -> np.ndarray:
        """The total weight of each family (what its OOF predictions get in the blend)."""
        return np.bincount(self.of_member, weights=normalise(member_weights), minlength=len(self.keys))


def group_families(infos: list[dict]) -> Families:
    """Families of members from their run.json contents, in first-seen order."""
    keys: list[str] = []
    of_member = []
    for info in infos:
        key = f"{info.get('arch')}/{info.get('aug')}/{info.get('variant', 'default')}/{info.get('stage', 'train')}"
        if key not in keys:
            keys.append(key)
        of_member.append(keys.index(key))
    return Families(keys, of_member)


def family_oof(oofs: list[Predictions], families: Families, member_keys: list[str]) -> list[Predictions]:
    """Per family, its members' OOF predictions concatenated (members of one family cover disjoint folds)."""
    out = []
    for f, fkey in enumerate(families.keys):
        parts = [(oofs[m], member_keys[m]) for m, fm in enumerate(families.of_member) if fm == f]
        seen: dict[str, str] = {}
        for oof, key in parts:
            if oof.targets is None:
                raise BlendError(f"member {key}: oof.npz holds no 'targets'")
            for fname in oof.fnames:
                if fname in seen:
                    raise BlendError(
                        f"members {seen[fname]} and {key} of family {fkey} both hold OOF row {fname!r}: "
                        "blend one member per fold of each arch/aug/variant/stage"
                    )
                seen[fname] = key
        out.append(Predictions(
            fnames=[f for oof, _ in parts for f in oof.fnames],
            probs=np.concatenate([oof.probs for oof, _ in parts]),
            targets=np.concatenate([oof.targets for oof, _ in parts]),
        ))
    return out


def scores(probs, targets) -> dict[str, float]:
    """MAP@3 and top-1 accuracy of (N, C) probabilities against integer targets."""
    return {"map3": map_at_3(probs, targets), "acc1": top1_accuracy(probs, targets)}


def normalise(weights) -> np.ndarray:
    """Non-negative weights scaled to sum to 1."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise BlendError(f"weights must be non-negative numbers with a positive sum, got {list(weights)}")
    return w / w.sum()


def fit_weights(prob_stack, targets, method: str = "gmean", max_rounds: int = 10) -> np.ndarray:
    """Member weights (summing to 1) that maximise the MAP@3 of the blended (M, N, C) OOF probabilities.

    Coordinate ascent from equal weights: each member's raw weight is tried at every value of
    :data:`WEIGHT_GRID` and a change is kept only when it strictly raises MAP@3, so the result is never
    worse than equal weights on these rows. Deterministic: fixed grid, fixed order, stable tie-breaking.
    """
    prob_stack = np.asarray(prob_stack, dtype=np.float64)
    if prob_stack.shape[1] == 0:
        raise BlendError("cannot fit weights on zero OOF rows")
    raw = np.ones(prob_stack.shape[0])
    best_w = normalise(raw)
    best = map_at_3(combine(prob_stack, best_w, method), targets)
    for _ in range(max_rounds):
        improved = False
        for i in range(len(raw)):
            for value in WEIGHT_GRID:
                trial = raw.copy()
                trial[i] = value
                if value == raw[i] or trial.sum() <= 0:
                    continue
                w = normalise(trial)
                score = map_at_3(combine(prob_stack, w, method), targets)
                if score > best:
                    raw, best_w, best, improved = trial, w, score, True
        if not improved:
            break
    return best_w
