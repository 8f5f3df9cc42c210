"""Batch augmentations on (B, 3, F, T) feature crops, run where the batch is (GPU when there is one).

Plain functions over tensors, each with its own ``torch.Generator``-free randomness (torch's global RNG,
seeded by Lightning), so they can be tested one by one:

- :func:`simulate_recording`: what another recording of the same sound changes, in the feature domain.
  Channel 0 is a log-mel spectrogram in dB (``10 log10`` of mel power), so a microphone's or room's
  linear filtering is exact there as an addition of a per-band dB curve, and power-domain effects
  (a room's reverberation tail, background noise) are computed on ``10 ** (dB / 10)`` and brought back.
  The delta channels are then recomputed from the new log-mel (Savitzky-Golay, as the features).
- :func:`spec_augment`: SpecAugment time and frequency masks on every clip.
- :func:`freq_mixstyle`: Freq-MixStyle (Schmid et al., DCASE 2022): mixes the per-band statistics of
  two clips, i.e. the recording's colouring, while keeping each clip's time structure.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from fstag.data.features import AMIN, TOP_DB, savgol_deriv_kernel


def _uniform(b: int, lo: float, hi: float, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(b, device=device)


def _chosen(b: int, prob: float, device) -> torch.Tensor:
    return torch.rand(b, device=device) < prob


def recompute_deltas(logmel: torch.Tensor, width: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second Savitzky-Golay derivatives of ``logmel`` (B, F, T) along time, edges replicated
    (librosa ``mode='nearest'``), the features' own delta filters."""
    b, f, t = logmel.shape
    half = width // 2
    kernels = torch.tensor(np.stack([savgol_deriv_kernel(width, order) for order in (1, 2)]),
                           dtype=logmel.dtype, device=logmel.device)  # (2, width)
    x = F.pad(logmel.reshape(b * f, 1, t), (half, half), mode="replicate")
    d = F.conv1d(x, kernels[:, None, :])  # correlation, as the features
    d = d.reshape(b, f, 2, t)
    return d[:, :, 0], d[:, :, 1]


def random_eq_curves(b: int, n_mels: int, max_db: float, device, n_bumps: int = 3) -> torch.Tensor:
    """(B, F) smooth random equaliser curves in dB: a tilt plus ``n_bumps`` Gaussian bumps of random
    centre, width and sign, scaled so each curve's largest excursion is up to ``max_db``."""
    pos = torch.linspace(0.0, 1.0, n_mels, device=device)[None, :]
    curve = (torch.rand(b, 1, device=device) * 2 - 1) * (pos - 0.5) * 2
    for _ in range(n_bumps):
        centre = torch.rand(b, 1, device=device)
        width = _uniform(b, 0.05, 0.3, device)[:, None]
        curve = curve + (torch.rand(b, 1, device=device) * 2 - 1) * torch.exp(-0.5 * ((pos - centre) / width) ** 2)
    peak = curve.abs().amax(dim=1, keepdim=True).clamp_min(1e-6)
    return curve / peak * _uniform(b, 0.0, max_db, device)[:, None]


def reverberate(power: torch.Tensor, rt60_s: torch.Tensor, wet: torch.Tensor, frame_rate: float,
                max_frames: int = 200) -> torch.Tensor:
    """Add a late-reverberation tail to mel power (B, F, T): each band's power envelope convolved with
    an exponential decay of ``rt60_s`` seconds (60 dB decay), scaled by ``wet`` relative to the direct
    sound. Higher bands decay faster, as air and walls absorb them more."""
    b, f, t = power.shape
    n = min(max_frames, t)
    lag = torch.arange(n, device=power.device, dtype=power.dtype)[None, None, :] / frame_rate
    band_rt = rt60_s[:, None, None] * torch.linspace(1.0, 0.5, f, device=power.device, dtype=power.dtype)[None, :, None]
    kernel = torch.exp(-13.8155 * lag / band_rt)  # (B, F, n): power falls 60 dB (1e-6) in rt60
    kernel = kernel / kernel.sum(dim=-1, keepdim=True)
    # causal convolution per (clip, band): grouped conv1d over B*F channels with flipped kernels
    x = F.pad(power.reshape(1, b * f, t), (n - 1, 0))
    tail = F.conv1d(x, kernel.reshape(b * f, 1, n).flip(-1), groups=b * f).reshape(b, f, t)
    return power + wet[:, None, None] * tail


def add_noise(power: torch.Tensor, snr_db: torch.Tensor, tilt: torch.Tensor, frame_rate: float) -> torch.Tensor:
    """Add background noise to mel power (B, F, T) at ``snr_db`` below the clip's mean power: a spectral
    slope of ``tilt`` dB over the band range (negative: rumbly, positive: hissy) and a slow random level
    wobble, so it is neither white nor stationary."""
    b, f, t = power.shape
    pos = torch.linspace(-0.5, 0.5, f, device=power.device, dtype=power.dtype)[None, :, None]
    shape = 10.0 ** (tilt[:, None, None] * pos / 10.0)
    shape = shape / shape.mean(dim=1, keepdim=True)
    n_knots = max(2, int(t / frame_rate) + 2)
    wobble_db = torch.randn(b, 1, n_knots, device=power.device, dtype=power.dtype) * 3.0
    wobble = 10.0 ** (F.interpolate(wobble_db, size=t, mode="linear", align_corners=True) / 10.0)
    grain = torch.empty_like(power).exponential_()  # a noise power spectrogram's chi-square grain
    level = power.mean(dim=(1, 2), keepdim=True) * 10.0 ** (-snr_db[:, None, None] / 10.0)
    return power + level * shape * wobble * grain


def shift_mels(logmel: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each clip's log-mel (B, F, T) by ``shift`` bands (fractional, linear interpolation; edges
    replicated): an approximate pitch shift on the mel scale."""
    b, f, t = logmel.shape
    src = torch.arange(f, device=logmel.device, dtype=logmel.dtype)[None, :] - shift[:, None]
    src = src.clamp(0, f - 1)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=f - 1)
    frac = (src - lo.to(src.dtype))[:, :, None]
    gather = lambda idx: torch.gather(logmel, 1, idx[:, :, None].expand(b, f, t))  # noqa: E731
    return gather(lo) * (1 - frac) + gather(hi) * frac


def simulate_recording(x: torch.Tensor, cfg: Mapping[str, Any], frame_rate: float, delta_width: int = 9) -> torch.Tensor:
    """Another recording of the same sounds: per clip, with probability ``cfg.prob``, a random gain
    (+-``gain_db``), microphone/EQ colouring (up to ``eq_db``), a room tail (``reverb_prob``, RT60 in
    ``rt60_s``, wet level in ``wet``), background noise (``noise_prob``, ``snr_db``) and a mel shift
    (up to ``mel_shift`` bands). ``x``: (B, 3, F, T) log-mel dB + deltas; returns the same shape."""
    b, _, f, t = x.shape
    dev = x.device
    on = _chosen(b, float(cfg.get("prob", 1.0)), dev)
    if not bool(on.any()):
        return x
    logmel = x[:, 0].float()
    power = 10.0 ** (logmel / 10.0)
    if float(cfg.get("reverb_prob", 0.0)) > 0:
        rt = cfg.get("rt60_s", [0.2, 1.2])
        use = (_chosen(b, float(cfg["reverb_prob"]), dev) & on).to(power.dtype)
        wet = _uniform(b, *[float(v) for v in cfg.get("wet", [0.1, 1.0])], dev) * use
        power = reverberate(power, _uniform(b, float(rt[0]), float(rt[1]), dev), wet, frame_rate)
    if float(cfg.get("noise_prob", 0.0)) > 0:
        use = _chosen(b, float(cfg["noise_prob"]), dev) & on
        snr = torch.where(use, _uniform(b, *[float(v) for v in cfg.get("snr_db", [5.0, 30.0])], dev),
                          torch.full((b,), 300.0, device=dev))
        power = add_noise(power, snr, _uniform(b, -20.0, 20.0, dev), frame_rate)
    out = 10.0 * torch.log10(power.clamp_min(AMIN))
    gain = _uniform(b, -1.0, 1.0, dev) * float(cfg.get("gain_db", 0.0))
    eq = random_eq_curves(b, f, float(cfg.get("eq_db", 0.0)), dev) if float(cfg.get("eq_db", 0.0)) > 0 else 0.0
    out = out + (gain[:, None, None] + (eq[:, :, None] if torch.is_tensor(eq) else 0.0))
    if float(cfg.get("mel_shift", 0.0)) > 0:
        out = shift_mels(out, _uniform(b, -1.0, 1.0, dev) * float(cfg["mel_shift"]))
    # the features' dynamic range: at most TOP_DB below the crop's peak
    out = torch.maximum(out, out.amax(dim=(1, 2), keepdim=True) - TOP_DB)
    d1, d2 = recompute_deltas(out, delta_width)
    new = torch.stack([out, d1, d2], dim=1).to(x.dtype)
    return torch.where(on[:, None, None, None], new, x)


def spec_augment(x: torch.Tensor, time_masks: int, time_width: int, freq_masks: int, freq_width: int,
                 value: float = 0.0) -> torch.Tensor:
    """SpecAugment on every clip of (B, C, F, T): ``time_masks`` masks of up to ``time_width`` frames
    and ``freq_masks`` masks of up to ``freq_width`` bands, all channels, filled with ``value``."""
    b, _, f, t = x.shape
    keep = torch.ones(b, 1, f, t, dtype=torch.bool, device=x.device)
    for n, width, size, axis in ((time_masks, time_width, t, 3), (freq_masks, freq_width, f, 2)):
        pos = torch.arange(size, device=x.device)[None, :]
        for _ in range(int(n)):
            w = torch.randint(0, int(width) + 1, (b, 1), device=x.device).clamp(max=size)
            start = (torch.rand(b, 1, device=x.device) * (size - w + 1)).long()
            hit = (pos >= start) & (pos < start + w)  # (B, size)
            keep &= ~(hit[:, None, None, :] if axis == 3 else hit[:, None, :, None])
    return torch.where(keep, x, torch.full_like(x, value))


def freq_mixstyle(x: torch.Tensor, prob: float, alpha: float, eps: float = 1e-6) -> torch.Tensor:
    """Freq-MixStyle: with probability ``prob`` per batch, each clip's per-band mean and std over time
    are replaced by a Beta(alpha, alpha) mix of its own and a random other clip's."""
    if prob <= 0 or float(torch.rand(())) > prob:
        return x
    b = x.shape[0]
    mu = x.mean(dim=3, keepdim=True)
    sig = (x.var(dim=3, keepdim=True) + eps).sqrt()
    normed = (x - mu) / sig
    lam = torch.distributions.Beta(alpha, alpha).sample((b, 1, 1, 1)).to(x.device, x.dtype)
    perm = torch.randperm(b, device=x.device)
    return normed * (lam * sig + (1 - lam) * sig[perm]) + lam * mu + (1 - lam) * mu[perm]


def frame_rate_of(features: Mapping[str, Any]) -> float:
    """Feature frames per second (sample_rate / hop_length)."""
    return float(features.get("sample_rate", 22050)) / float(features.get("hop_length", 220))


__all__ = [
    "add_noise", "freq_mixstyle", "frame_rate_of", "random_eq_curves", "recompute_deltas", "reverberate",
    "shift_mels", "simulate_recording", "spec_augment",
]
