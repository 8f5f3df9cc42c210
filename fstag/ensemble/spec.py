"""The ``blend`` config group, checked into a :class:`BlendSpec` before any run is read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fstag.ensemble.blending import METHODS, MIN_VERIFIED_ROWS, BlendError, normalise
from fstag.runs.selectors import is_selector

CALIBRATIONS = ("none", "prior", "temperature")


@dataclass(frozen=True)
class BlendSpec:
    """The ``blend`` config group, checked: member specs, weights (None = equal, a list, or ``"oof"``)."""

    name: str
    members: list[str]
    weights: list[float] | str | None
    method: str
    calibration: str
    test_share: Any
    submission: Path
    cv_folds: int = 5
    cv_seed: int = 0
    min_verified: int = MIN_VERIFIED_ROWS


def parse_blend(blend: Mapping[str, Any]) -> BlendSpec:
    """Check the plain ``blend`` mapping; per-member ``{run, weight}`` entries become a weights list."""
    members, member_weights = [], []
    entries = blend.get("members") or []
    if isinstance(entries, str):  # one selector or name: blend.members=sweep:lr
        entries = [entries]
    for i, entry in enumerate(entries):
        if isinstance(entry, Mapping):
            if "run" not in entry:
                raise BlendError(f"blend.members[{i}]: a mapping needs a 'run' key, got {dict(entry)}")
            members.append(str(entry["run"]))
            member_weights.append(entry.get("weight"))
        else:
            members.append(str(entry))
            member_weights.append(None)
    weights = blend.get("weights")
    if any(w is not None for w in member_weights):
        if weights is not None:
            raise BlendError(f"blend.weights={weights!r} and per-member weights are both given; use one")
        weights = [1.0 if w is None else w for w in member_weights]
    if isinstance(weights, str) and weights != "oof":
        raise BlendError(f"blend.weights must be null, a list of numbers or 'oof', got {weights!r}")
    if isinstance(weights, list):
        picked = [m for m in members if is_selector(m)]
        if picked:
            raise BlendError(f"blend.weights is a list, but member(s) {picked} are selectors whose job count is known "
                             "only when they are resolved; use blend.weights=oof or null, or name the members")
        if len(weights) != len(members):
            raise BlendError(f"blend.weights has {len(weights)} numbers for {len(members)} members")
        normalise(weights)  # raises on negative, non-finite or all-zero weights
        weights = [float(w) for w in weights]
    method = str(blend.get("method") or "gmean")
    if method not in METHODS:
        raise BlendError(f"blend.method must be one of {sorted(METHODS)}, got {method!r}")
    calibration = str(blend.get("calibration") or "none")
    if calibration not in CALIBRATIONS:
        raise BlendError(f"blend.calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    oof = blend.get("oof") or {}
    unknown = sorted(set(oof) - {"folds", "seed", "min_verified"})
    if unknown:
        raise BlendError(f"blend.oof has unknown key(s) {unknown}; expected folds, seed, min_verified")
    try:
        cv_folds, cv_seed = int(oof.get("folds", 5)), int(oof.get("seed", 0))
        min_verified = int(oof.get("min_verified", MIN_VERIFIED_ROWS))
    except (TypeError, ValueError):
        raise BlendError(f"blend.oof.folds, .seed and .min_verified must be integers, got {dict(oof)}") from None
    if cv_folds < 2 or min_verified < 0:
        raise BlendError(f"blend.oof.folds must be at least 2 and blend.oof.min_verified at least 0, got {dict(oof)}")
    return BlendSpec(
        name=str(blend["name"]),
        members=members,
        weights=weights,
        method=method,
        calibration=calibration,
        test_share=(blend.get("prior") or {}).get("test_share"),
        submission=Path(blend["submission"]),
        cv_folds=cv_folds,
        cv_seed=cv_seed,
        min_verified=min_verified,
    )
