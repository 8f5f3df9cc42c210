"""The generator's settings: :class:`DemoSettings`, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

from fstag.data.demo.voices import DEFAULT_LABELS, VOICES


def checked_labels(labels) -> tuple[str, ...]:
    """A demo's labels (None: every label of DEFAULT_LABELS), checked: each one voiced, at least 2, no repeats."""
    labels = DEFAULT_LABELS if labels is None else tuple(str(x) for x in labels)
    unknown = [x for x in labels if x not in VOICES]
    if unknown:
        raise ValueError(f"demo labels {unknown} cannot be voiced; choose from {sorted(VOICES)}")
    if len(set(labels)) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"demo labels must be at least 2 distinct names, got {list(labels)}")
    return labels


def settings_from_mapping(cls, settings: Mapping, what: str):
    """``cls(**settings)`` for a settings dataclass, refusing unknown keys by name (``what``: which demo)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"unknown {what} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**dict(settings))


@dataclass(frozen=True)
class DemoSettings:
    """Generator settings; the keys of the ``demo:`` block of conf/data/demo.yaml.

    The defaults (~29 training clips per label, 180 test clips) keep the whole demo job (generation,
    features, a tiny CNN over 2 folds, predictions) near ten minutes on 2 CPU cores.
    """

    n_train: int = 600
    n_test: int = 180
    n_shifted: int = 168  # shifted test clips (8 per label for 21 labels), balanced; 0: no shifted split
    seed: int = 0
    labels: tuple[str, ...] | None = None  # None: every label of DEFAULT_LABELS
    sample_rate: int = 44100
    min_duration: float = 0.3  # seconds, whole file
    max_duration: float = 30.0
    median_duration: float = 2.5  # durations are log-normal, truncated to [min, max]: skewed short
    duration_sigma: float = 0.9
    max_margin: float = 1.0  # silence before and after the sound, each up to this many seconds
    snr_db: tuple[float, float] = (15.0, 40.0)
    unverified_share: float = 0.4  # train rows with manually_verified=0
    wrong_label_share: float = 0.3  # of the unverified rows, the share listed under another label
    ignored_share: float = 0.1  # test clips in sample_submission that are not scored
    public_share: float = 1 / 3  # of the scored test clips, the share on the public leaderboard
    workers: int | None = None  # processes; None: one per available CPU core

    def __post_init__(self) -> None:
        labels = checked_labels(self.labels)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "snr_db", tuple(float(x) for x in self.snr_db))
        if self.n_train < len(labels) or self.n_test < 1:
            raise ValueError(f"need n_train >= {len(labels)} (one clip per label) and n_test >= 1")
        if self.n_shifted < 0:
            raise ValueError(f"need n_shifted >= 0, got {self.n_shifted}")
        if not 0 < self.min_duration <= self.max_duration:
            raise ValueError(f"need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        for name in ("unverified_share", "wrong_label_share", "ignored_share", "public_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, settings: Mapping) -> "DemoSettings":
        """Build from a plain mapping (e.g. the resolved ``demo:`` block); unknown keys are refused."""
        return settings_from_mapping(cls, settings, "demo")
