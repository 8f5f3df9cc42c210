"""What a prediction pass over a clip is, torch-free (shared by :mod:`.predictor` and :mod:`.numpy_predictor`): the
modes, the ways windows combine, and the seed of each TTA crop's generator."""

from __future__ import annotations

import hashlib

MODES = ("crops", "windows")
WINDOW_REDUCES = ("mean", "max")


def clip_seed(seed: int, pass_idx: int, key: str | int) -> int:
    """A 63-bit generator seed from (seed, pass, clip key): blake2b of the three, stable across runs."""
    blob = f"{int(seed)}\x1f{int(pass_idx)}\x1f{key}".encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little") & (2**63 - 1)
