"""Blend maths: align member predictions by file name, combine them, fit member weights on OOF rows.

Every function takes the members' task (:mod:`fstag.core.task`; single-label by default): single-label
probabilities are combined and renormalised per row and weights are fitted on MAP@3; multi-label ones are
combined per label without renormalisation and weights are fitted on lwlrap."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

from fstag.core.task import SINGLE_LABEL, Task, get_task
from fstag.evaluate.metrics import EPS, arithmetic_mean, geometric_mean, lwlrap, map_at_3, task_scores
from fstag.runs.run_dir import Predictions

SINGLE = get_task(SINGLE_LABEL)

METHODS = {"gmean": geometric_mean, "mean": arithmetic_mean}
# Raw weight values tried for one member at a time by :func:`fit_weights` (the others held fixed).
WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


class BlendError(ValueError):
    """Member predictions cannot be blended (missing rows, no shared OOF rows, bad weights)."""


def combine(prob_stack, weights=None, method: str = "gmean", task: Task = SINGLE) -> np.ndarray:
    """Blend (M, N, C) member probabilities into (N, C): weighted geometric (``gmean``) or arithmetic mean,
    renormalised per row for a single-label task, per label (not renormalised) for a multi-label one."""
    if method not in METHODS:
        raise BlendError(f"unknown blend method {method!r}; expected one of {sorted(METHODS)}")
    return METHODS[method](prob_stack, weights, axis=0, renormalise=task.renormalise)


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
    """The OOF rows every member predicts: ``probs`` (M, N, C), ``targets`` ((N,) class indices or an (N, C)
    0/1 matrix), in ``fnames`` order."""

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
    """Members grouped by what they are (``arch/aug/variant``) regardless of fold and stage.

    A 5-fold sweep gives each family one member per fold; each member's OOF rows are its own fold, so a
    family's OOF predictions cover every fold it was trained on, and families share those rows even
    though single members do not. OOF weights are fitted per family and split equally over its members.
    A retrain_val member (``fold_<k>_r``) carries a copy of its parent's OOF, so OOF rows cannot weigh it
    against its parent: it joins its parent's family and takes an equal share of the family's weight.
    ``oof_from[m]`` is False for such a member when the family holds a train member of the same fold
    (the family's OOF rows of that fold come from the train member).
    """

    keys: list[str]
    of_member: list[int]
    oof_from: list[bool] | None = None
    retrain: list[bool] | None = None

    def member_weights(self, family_weights) -> list[float]:
        """Each family's weight split equally over its members (summing to 1 overall)."""
        fw = normalise(family_weights)
        counts = np.bincount(self.of_member, minlength=len(self.keys))
        return [float(fw[f] / counts[f]) for f in self.of_member]

    def family_weights(self, member_weights) -> np.ndarray:
        """The total weight of each family (what its OOF predictions get in the blend)."""
        return np.bincount(self.of_member, weights=normalise(member_weights), minlength=len(self.keys))

    def size(self, member: int) -> int:
        """How many members share ``member``'s family weight."""
        return int(np.sum(np.asarray(self.of_member) == self.of_member[member]))


def family_key(info: dict) -> str:
    """``<arch>/<aug>/<variant>``: the family of a member from its run.json contents (stage left out).

    A retrain_val member belongs to its parent's family: the variant of the train run it copied its OOF
    from (``oof_source``, ``.../<variant>/fold_<k>``), which leaves out the ``retrain.*`` keys of its own.
    """
    variant = info.get("variant", "default")
    if info.get("stage") == "retrain_val" and "variant" in info and info.get("oof_source"):
        variant = PurePath(str(info["oof_source"])).parent.name
    return f"{info.get('arch')}/{info.get('aug')}/{variant}"


def group_families(infos: list[dict]) -> Families:
    """Families of members from their run.json contents, in first-seen order."""
    keys: list[str] = []
    of_member = []
    for info in infos:
        key = family_key(info)
        if key not in keys:
            keys.append(key)
        of_member.append(keys.index(key))
    retrain = [info.get("stage", "train") == "retrain_val" for info in infos]
    trained = {(of_member[m], infos[m].get("fold")) for m in range(len(infos)) if not retrain[m]}
    oof_from = [not retrain[m] or (of_member[m], infos[m].get("fold")) not in trained for m in range(len(infos))]
    return Families(keys, of_member, oof_from, retrain)


def family_oof(oofs: list[Predictions], families: Families, member_keys: list[str]) -> list[Predictions]:
    """Per family, its members' OOF predictions concatenated (members of one family cover disjoint folds;
    a retrain_val member's copy of its parent's OOF is skipped when the parent is a member too)."""
    use = families.oof_from or [True] * len(oofs)
    out = []
    for f, fkey in enumerate(families.keys):
        parts = [(oofs[m], member_keys[m]) for m, fm in enumerate(families.of_member) if fm == f and use[m]]
        seen: dict[str, str] = {}
        for oof, key in parts:
            if oof.targets is None:
                raise BlendError(f"member {key}: oof.npz holds no 'targets'")
            for fname in oof.fnames:
                if fname in seen:
                    raise BlendError(
                        f"members {seen[fname]} and {key} of family {fkey} both hold OOF row {fname!r}: "
                        "blend one member per fold and stage of each arch/aug/variant"
                    )
                seen[fname] = key
        out.append(Predictions(
            fnames=[f for oof, _ in parts for f in oof.fnames],
            probs=np.concatenate([oof.probs for oof, _ in parts]),
            targets=np.concatenate([oof.targets for oof, _ in parts]),
        ))
    return out


def scores(probs, targets, task: Task = SINGLE) -> dict[str, float]:
    """The task's scores of (N, C) probabilities: MAP@3 and top-1 (single-label), lwlrap and mAP (multi-label)."""
    return task_scores(task, probs, targets)


def normalise(weights) -> np.ndarray:
    """Non-negative weights scaled to sum to 1."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise BlendError(f"weights must be non-negative numbers with a positive sum, got {list(weights)}")
    return w / w.sum()


class _Scorer:
    """The task's primary score of weighted blends of fixed (M, N, C) probabilities, so that equal scores
    compare equal: MAP@3 as an exact integer (MAP@3 x 6N); lwlrap rounded to 12 digits. The members' logs
    (gmean) are taken once; the weighted sum ranks each row's labels (single-label) and each label's
    rows within a row (lwlrap) exactly as :func:`combine` does."""

    def __init__(self, prob_stack, targets, method: str, task: Task = SINGLE):
        if method not in METHODS:
            raise BlendError(f"unknown blend method {method!r}; expected one of {sorted(METHODS)}")
        p = np.asarray(prob_stack, dtype=np.float64)
        self.base = np.log(np.clip(p, EPS, 1.0)) if method == "gmean" else p
        self.task = task
        self.targets = np.asarray(targets) if task.multi_label else np.asarray(targets, dtype=np.int64)

    def __call__(self, weights) -> int | float:
        blended = np.tensordot(normalise(weights), self.base, axes=1)  # ranks rows like combine()
        if self.task.multi_label:
            return round(lwlrap(blended, self.targets), 12)
        return int(round(map_at_3(blended, self.targets) * 6 * len(self.targets)))


def _inequality(raw) -> float:
    """Squared distance of the normalised weights from equal weights (0 = equal)."""
    w = normalise(raw)
    return float(np.sum((w - 1.0 / len(w)) ** 2))


def fit_weights(prob_stack, targets, method: str = "gmean", max_rounds: int = 10, task: Task = SINGLE) -> np.ndarray:
    """Member weights (summing to 1) that maximise the task's primary score (MAP@3; multi-label: lwlrap) of
    the blended (M, N, C) OOF probabilities.

    Coordinate ascent from equal weights: each member's raw weight is tried at every value of
    :data:`WEIGHT_GRID` (the others held fixed) and the best is kept by (MAP@3, closeness to equal
    weights): among equal scores the most equal weighting wins, so a member is zeroed only when that
    strictly raises MAP@3, never by the grid's order. Never worse than equal weights on these rows.
    """
    prob_stack = np.asarray(prob_stack, dtype=np.float64)
    if prob_stack.shape[1] == 0:
        raise BlendError("cannot fit weights on zero OOF rows")
    score = _Scorer(prob_stack, targets, method, task)
    raw = np.ones(prob_stack.shape[0])
    best = (score(raw), -_inequality(raw))
    for _ in range(max_rounds):
        improved = False
        for i in range(len(raw)):
            pick = raw
            for value in WEIGHT_GRID:
                trial = raw.copy()
                trial[i] = value
                if value == raw[i] or trial.sum() <= 0:
                    continue
                key = (score(trial), -_inequality(trial))
                if key > best:
                    best, pick = key, trial
            if pick is not raw:
                raw, improved = pick, True
        if not improved:
            break
    return normalise(raw)


# The least number of verified shared OOF rows for fitting weights on verified rows only (default of
# ``blend.oof.min_verified``); with fewer, all shared rows are used.
MIN_VERIFIED_ROWS = 300


@dataclass(frozen=True)
class WeightFit:
    """OOF-fitted weights and how well they score: ``in_sample`` on the rows they were fitted on,
    ``cv`` out of sample (K-fold over those rows: fitted on K-1 parts, scored on the held-out part),
    ``equal`` for equal weights on the same rows."""

    weights: np.ndarray
    in_sample: float
    cv: float
    equal: float
    n_rows: int
    verified_only: bool
    folds: int


def kfold_parts(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint, seeded random parts of ``range(n)`` (fewer when n < folds)."""
    k = max(1, min(int(folds), n))
    order = np.random.default_rng(int(seed)).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def fit_weights_cv(prob_stack, targets, method: str = "gmean", verified=None, min_verified: int = MIN_VERIFIED_ROWS,
                   folds: int = 5, seed: int = 0, task: Task = SINGLE) -> WeightFit:
    """:func:`fit_weights` on the OOF rows, with its out-of-sample score (the task's primary score) by K-fold
    cross-validation.

    The rows are the verified ones when ``verified`` (a boolean per row) marks at least ``min_verified``
    of them, else all. The returned weights are fitted on all those rows.
    """
    prob_stack = np.asarray(prob_stack, dtype=np.float64)
    targets = np.asarray(targets) if task.multi_label else np.asarray(targets, dtype=np.int64)
    primary = lambda probs, t: task_scores(task, probs, t)[task.primary]  # noqa: E731
    verified_only = verified is not None and int(np.sum(verified)) >= max(int(min_verified), 1)
    if verified_only:
        keep = np.asarray(verified, dtype=bool)
        prob_stack, targets = prob_stack[:, keep], targets[keep]
    n = len(targets)
    weights = fit_weights(prob_stack, targets, method, task=task)
    parts = kfold_parts(n, folds, seed)
    cv = float("nan")
    if len(parts) >= 2:
        held = np.empty(prob_stack.shape[1:])
        for part in parts:
            rest = np.setdiff1d(np.arange(n), part)
            held[part] = combine(prob_stack[:, part], fit_weights(prob_stack[:, rest], targets[rest], method, task=task),
                                 method, task)
        cv = primary(held, targets)
    return WeightFit(
        weights=weights,
        in_sample=primary(combine(prob_stack, weights, method, task), targets),
        cv=cv,
        equal=primary(combine(prob_stack, None, method, task), targets),
        n_rows=n,
        verified_only=verified_only,
        folds=len(parts),
    )
