"""Spectrogram crops and augmentations as plain functions on (C, F, T) tensors.

Randomness comes from an explicit ``torch.Generator`` when given (deterministic predictions), else from
torch's global RNG (seeded per DataLoader worker by Lightning's ``seed_everything(workers=True)``).
"""

from __future__ import annotations

import torch


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high] (inclusive)."""
    if high <= 0:
        return 0
    return int(torch.randint(0, high + 1, (1,), generator=generator))


def silence_canvas(x: torch.Tensor, length: int) -> torch.Tensor:
    """A (C, F, ``length``) canvas that reads as silence for ``x``'s features: the clip's own floor (its
    lowest log-mel value) in channel 0, zero deltas in the others."""
    out = x.new_zeros((*x.shape[:-1], length))
    if x.numel():
        out[0] = x[0].min()
    return out


def crop_or_pad(
    x: torch.Tensor, length: int, *, random: bool, pad_value: float | None = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cut ``x`` (C, F, T) to ``length`` frames: a random (or the first) window of a longer clip, or the
    clip placed at a random (or zero) offset in a ``pad_value`` canvas when shorter (``None``: a
    :func:`silence_canvas`)."""
    t = x.shape[-1]
    if t >= length:
        start = _randint(t - length, generator) if random else 0
        return x[..., start : start + length]
    out = silence_canvas(x, length) if pad_value is None else x.new_full((*x.shape[:-1], length), pad_value)
    offset = _randint(length - t, generator) if random else 0
    out[..., offset : offset + t] = x
    return out


def spec_mask(
    x: torch.Tensor, time_mask: int, freq_mask: int, value: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """SpecAugment on a copy of ``x``: one time mask of up to ``time_mask`` frames and one frequency mask
    of up to ``freq_mask`` bands, filled with ``value``."""
    out = x.clone()
    f, t = x.shape[-2], x.shape[-1]
    w = min(_randint(time_mask, generator), t)
    t0 = _randint(t - w, generator)
    out[..., t0 : t0 + w] = value
    h = min(_randint(freq_mask, generator), f)
    f0 = _randint(f - h, generator)
    out[..., f0 : f0 + h, :] = value
    return out


def specmask_concat(
    x: torch.Tensor, length: int, time_mask: int, freq_mask: int, value: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """For a clip shorter than ``length``: append a spec-masked copy along time (the seed's augmentation
    for short clips). Longer clips are returned unchanged."""
    if x.shape[-1] >= length:
        return x
    return torch.cat([x, spec_mask(x, time_mask, freq_mask, value, generator)], dim=-1)


def mixup_batch(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix a batch with a permutation of itself: returns (mixed x, y_a, y_b, w_a, w_b, lambda) with
    lambda ~ Beta(alpha, alpha); the loss is lambda * L(y_a) + (1 - lambda) * L(y_b)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], w, w[perm], lam


def pad_value_of(loader) -> float | None:
    """``loader.pad_value``: a number, or null/``floor`` for a :func:`silence_canvas`."""
    value = loader.get("pad_value", 0.0)
    return None if value is None or value == "floor" else float(value)


def training_transform(x: torch.Tensor, length: int, aug, pad_value: float | None = 0.0) -> torch.Tensor:
    """The per-clip train-time input: specmask_concat (if ``aug.specmask_concat``), then random crop/pad."""
    if aug.get("specmask_concat"):
        x = specmask_concat(x, length, int(aug["time_mask"]), int(aug["freq_mask"]), float(aug["mask_value"]))
    return crop_or_pad(x, length, random=True, pad_value=pad_value)
