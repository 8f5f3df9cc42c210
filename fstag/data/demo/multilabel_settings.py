"""The multi-label generator's settings: :class:`MultilabelDemoSettings`, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from fstag.data.demo.settings import DemoSettings, checked_labels, settings_from_mapping


@dataclass(frozen=True)
class MultilabelDemoSettings:
    """Generator settings of the multi-label demo; the keys of the ``demo:`` block of
    conf/data/demo_multilabel.yaml.

    Each clip mixes 1 to ``max_sources`` sources of different labels (the number drawn with the weights
    ``source_shares``); each source is rendered as the single-label demo renders a clip of its label
    (:func:`fstag.data.demo.render.render_clip`, with the duration settings below), then the sources overlap
    in time (``overlap_share`` of the mixtures) or follow one another, each at its own level
    (``level_db`` below the loudest).
    """

    n_curated: int = 400  # train_curated.csv rows: every label set right
    n_noisy: int = 200  # train_noisy.csv rows: ``noisy_wrong_share`` of them with a wrong label set
    n_test: int = 120  # test/ clips (sample_submission.csv rows), including the unscored ones
    max_sources: int = 3  # sources per clip: 1 .. max_sources
    source_shares: tuple[float, ...] | None = None  # weights of 1, 2, ... max_sources sources; None: equal
    overlap_share: float = 0.5  # mixtures whose sources overlap in time; the others play in sequence
    level_db: float = 12.0  # each source's peak lies 0 .. level_db dB below the loudest possible
    noisy_wrong_share: float = 0.3  # noisy rows whose listed labels are wrong: one dropped, added or swapped
    seed: int = 0
    labels: tuple[str, ...] | None = None  # None: every label of DEFAULT_LABELS
    sample_rate: int = 44100
    min_duration: float = 0.3  # seconds, each source (margins included); a sequence is the sources' sum
    max_duration: float = 8.0
    median_duration: float = 2.5  # log-normal, truncated to [min, max], as the single-label demo's clips
    duration_sigma: float = 0.9
    max_margin: float = 0.5  # silence before and after each source, each up to this many seconds
    snr_db: tuple[float, float] = (15.0, 40.0)  # each source's background noise below it
    ignored_share: float = 0.1  # test clips listed as usage=Ignored (not scored)
    public_share: float = 1 / 3  # of the scored test clips, the share on the public leaderboard
    workers: int | None = None  # processes; None: one per available CPU core

    def __post_init__(self) -> None:
        labels = checked_labels(self.labels)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "snr_db", tuple(float(x) for x in self.snr_db))
        if not 1 <= self.max_sources <= len(labels):
            raise ValueError(f"need 1 <= max_sources <= {len(labels)} (the number of labels), got {self.max_sources}")
        shares = (1.0,) * self.max_sources if self.source_shares is None else tuple(float(x) for x in self.source_shares)
        if len(shares) != self.max_sources or min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"source_shares needs {self.max_sources} non-negative weights (1 .. max_sources "
                             f"sources) with a positive sum, got {self.source_shares}")
        object.__setattr__(self, "source_shares", tuple(x / sum(shares) for x in shares))
        if self.n_curated < len(labels) or self.n_test < 1 or self.n_noisy < 0:
            raise ValueError(f"need n_curated >= {len(labels)} (every label in a curated clip), n_test >= 1 and "
                             f"n_noisy >= 0; got {self.n_curated}, {self.n_test}, {self.n_noisy}")
        if not 0 < self.min_duration <= self.max_duration:
            raise ValueError(f"need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        if self.level_db < 0:
            raise ValueError(f"level_db must be >= 0, got {self.level_db}")
        for name in ("overlap_share", "noisy_wrong_share", "ignored_share", "public_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def source_settings(self) -> DemoSettings:
        """The single-label settings each source is rendered with (:func:`~fstag.data.demo.render.render_clip`)."""
        return DemoSettings(n_train=len(self.labels), n_test=1, n_shifted=0, seed=self.seed, labels=self.labels,
                            sample_rate=self.sample_rate, min_duration=self.min_duration,
                            max_duration=self.max_duration, median_duration=self.median_duration,
                            duration_sigma=self.duration_sigma, max_margin=self.max_margin, snr_db=self.snr_db)

    @classmethod
    def from_mapping(cls, settings: Mapping) -> "MultilabelDemoSettings":
        """Build from a plain mapping (e.g. the resolved ``demo:`` block); unknown keys are refused."""
        return settings_from_mapping(cls, settings, "multi-label demo")
