"""Spectrogram crops and augmentations as plain functions on (C, F, T) tensors.

Randomness comes from an explicit ``torch.Generator`` when given (deterministic predictions), else from
torch's global RNG (seeded per DataLoader worker by Lightning's ``seed_everything(workers=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def draw_crop(t: int, length: int, generator: torch.Generator | None = None) -> int:
    """The random window of a ``t``-frame clip cut to ``length`` frames, as a *shift*: output frame ``j``
    reads clip frame ``j + shift``: a crop's start (>= 0) when the clip is long enough, else minus the
    offset at which it is placed in the padding canvas."""
    return _randint(t - length, generator) if t >= length else -_randint(length - t, generator)


def crop_at(x: torch.Tensor, length: int, shift: int, pad_value: float | None = 0.0) -> torch.Tensor:
    """``x`` (C, F, T) cut to ``length`` frames at ``shift`` (:func:`draw_crop`): a window of a longer clip,
    or the clip placed at offset ``-shift`` in a ``pad_value`` canvas (``None``: a :func:`silence_canvas`)."""
    t = x.shape[-1]
    if t >= length:
        return x[..., shift : shift + length]
    out = silence_canvas(x, length) if pad_value is None else x.new_full((*x.shape[:-1], length), pad_value)
    out[..., -shift : -shift + t] = x
    return out


def crop_or_pad(
    x: torch.Tensor, length: int, *, random: bool, pad_value: float | None = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cut ``x`` (C, F, T) to ``length`` frames: a random (or the first) window of a longer clip, or the
    clip placed at a random (or zero) offset in a ``pad_value`` canvas when shorter (``None``: a
    :func:`silence_canvas`)."""
    shift = draw_crop(x.shape[-1], length, generator) if random else 0
    return crop_at(x, length, shift, pad_value)


def draw_spec_mask(f: int, t: int, time_mask: int, freq_mask: int,
                   generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """``(w, t0, h, f0)`` of :func:`spec_mask` on an (F, T) clip: frames ``[t0, t0 + w)`` and bands
    ``[f0, f0 + h)``."""
    w = min(_randint(time_mask, generator), t)
    t0 = _randint(t - w, generator)
    h = min(_randint(freq_mask, generator), f)
    f0 = _randint(f - h, generator)
    return w, t0, h, f0


def mask_at(x: torch.Tensor, mask: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    """A copy of ``x`` with the time and frequency masks ``(w, t0, h, f0)`` filled with ``value``."""
    w, t0, h, f0 = mask
    out = x.clone()
    out[..., t0 : t0 + w] = value
    out[..., f0 : f0 + h, :] = value
    return out


def spec_mask(
    x: torch.Tensor, time_mask: int, freq_mask: int, value: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """SpecAugment on a copy of ``x``: one time mask of up to ``time_mask`` frames and one frequency mask
    of up to ``freq_mask`` bands, filled with ``value``."""
    return mask_at(x, draw_spec_mask(x.shape[-2], x.shape[-1], time_mask, freq_mask, generator), value)


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


@dataclass(frozen=True)
class ClipDraw:
    """A training clip's random parameters, drawn by :func:`draw_clip` in :func:`training_transform`'s order."""

    concat: bool                     # specmask_concat: a spec-masked copy appended (a clip shorter than the crop)
    mask: tuple[int, int, int, int]  # (w, t0, h, f0) of that copy's masks (zeros without one)
    shift: int                       # the crop of the (concatenated) clip: :func:`draw_crop`


def draw_clip(n_frames: int, n_mels: int, length: int, aug, generator: torch.Generator | None = None) -> ClipDraw:
    """The random parameters of :func:`training_transform` for a clip of ``n_frames`` x ``n_mels``, from the
    clip's size alone (the device-resident input path draws them without the clip: fstag.train.resident_data)."""
    concat = bool(aug.get("specmask_concat")) and n_frames < length
    mask = draw_spec_mask(n_mels, n_frames, int(aug["time_mask"]), int(aug["freq_mask"]), generator) if concat else (0, 0, 0, 0)
    return ClipDraw(concat, mask, draw_crop(2 * n_frames if concat else n_frames, length, generator))


def apply_clip(x: torch.Tensor, draw: ClipDraw, length: int, aug, pad_value: float | None = 0.0) -> torch.Tensor:
    """:func:`training_transform` with its random parameters given."""
    if draw.concat:
        x = torch.cat([x, mask_at(x, draw.mask, float(aug["mask_value"]))], dim=-1)
    return crop_at(x, length, draw.shift, pad_value)


def training_transform(x: torch.Tensor, length: int, aug, pad_value: float | None = 0.0) -> torch.Tensor:
    """The per-clip train-time input: specmask_concat (if ``aug.specmask_concat``), then random crop/pad."""
    return apply_clip(x, draw_clip(x.shape[-1], x.shape[-2], length, aug), length, aug, pad_value)
