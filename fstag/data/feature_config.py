"""The feature settings (the ``features`` config group) and the key that names their cache folder."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class FeatureConfig:
    """The feature parameters (the ``features`` config group); values are normalised to int/float."""

    name: str = "logmel64"
    trim_top_db: float = 60.0
    sample_rate: int = 22050
    n_fft: int = 1764
    hop_length: int = 220
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    delta_width: int = 9
    delta_of: str = "log"  # 'log' | 'power'

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("sample_rate", "n_fft", "hop_length", "n_mels", "delta_width"):
                value = int(value)
            elif f.name in ("trim_top_db", "fmin") or (f.name == "fmax" and value is not None):
                value = float(value)
            object.__setattr__(self, f.name, value)
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"features.name {self.name!r} must be a plain name (letters, digits, _ . -)")
        if min(self.sample_rate, self.n_fft, self.hop_length, self.n_mels) <= 0:
            raise ValueError("features.sample_rate, n_fft, hop_length and n_mels must be positive")
        if self.delta_width < 3 or self.delta_width % 2 != 1:
            raise ValueError(f"features.delta_width must be an odd integer >= 3, got {self.delta_width}")
        if self.delta_of not in ("log", "power"):
            raise ValueError(f"features.delta_of must be 'log' or 'power', got {self.delta_of!r}")
        if not 0.0 <= self.fmin < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"features: need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.f_max}")

    @classmethod
    def from_cfg(cls, mapping: Mapping[str, Any]) -> "FeatureConfig":
        """From the ``features`` group (a dict or DictConfig); unknown keys are refused."""
        if not isinstance(mapping, dict):
            from fstag.core.config import to_plain

            mapping = to_plain(mapping)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown feature setting(s) {unknown}; known: {sorted(known)}")
        return cls(**mapping)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def f_max(self) -> float:
        return self.sample_rate / 2 if self.fmax is None else self.fmax

    def n_frames(self, n_samples: int) -> int:
        """Frames of a waveform of ``n_samples`` samples (centred framing)."""
        return 1 + n_samples // self.hop_length


def feature_key(cfg: FeatureConfig) -> str:
    """``<name>-<10 hex digits>``: the name plus a stable hash of every value (keys the feature cache)."""
    blob = json.dumps(cfg.to_dict(), sort_keys=True).encode()
    return f"{cfg.name}-{hashlib.sha256(blob).hexdigest()[:10]}"
