"""Log-mel + delta + delta-delta features: the librosa reference and the batched torch path
(their settings: :class:`fstag.data.feature_config.FeatureConfig`).

Per clip (the seed's recipe; every number comes from conf/features/): decode at the native rate ->
mono -> ``librosa.effects.trim(top_db)`` -> resample to ``sample_rate`` (soxr HQ) ->
``melspectrogram(n_fft, hop_length, n_mels, fmin, fmax)`` (centred frames, zero padding, periodic
Hann, power 2, Slaney mel scale and norm) -> ``power_to_db`` (ref 1, amin 1e-10, top_db 80) ->
``delta(width)`` and ``delta(width, order=2)`` -> a float32 array of shape (3, n_mels, frames) with
frames = 1 + samples // hop_length.

``delta_of='power'`` reproduces a quirk of the seed: its first delta was taken of the power mel
spectrogram, not of the log-mel (the delta-delta is of the log-mel either way).

librosa's delta (Savitzky-Golay, ``mode='interp'``) refuses clips shorter than ``delta_width``
frames; for those both implementations use ``mode='nearest'`` (edge frames repeated).

Two implementations that agree:

- :func:`librosa_features` / :func:`reference_features_from_file`: the reference, librosa calls only.
- :class:`TorchFeatureExtractor`: what the pipeline runs, batched, on CPU or CUDA; the waveforms come
  from :func:`fstag.data.audio.load_clip` (decode/trim/resample bit-identical to librosa's). Measured max
  (mean) absolute differences to the librosa chain from the file, over the 75 clips of a demo data
  set: log-mel 4e-3 dB (8e-6 dB), delta 6e-4 (1e-6), delta-delta 4e-4 (7e-7); on the same waveforms
  of 1 sample to 30 s in one padded batch: log-mel 7e-4 dB (5e-6). The largest differences sit near
  the 80 dB floor of quiet clips, where float32 STFT rounding weighs most. tests/test_features.py
  asserts log-mel < 0.02 dB max / 1e-3 dB mean and deltas < 0.01 max / 1e-4 mean.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING, Sequence

import numpy as np

from fstag.data.feature_config import FeatureConfig

if TYPE_CHECKING:
    import torch

AMIN = 1e-10  # librosa.power_to_db defaults
TOP_DB = 80.0
FLOAT16_MAX = float(np.finfo(np.float16).max)
# --------------------------------------------------------------------------------------------------
# The reference: librosa only
# --------------------------------------------------------------------------------------------------


def librosa_logmel_deltas(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(3, n_mels, frames) float32 from a waveform already trimmed and at ``cfg.sample_rate``."""
    import librosa

    with warnings.catch_warnings():  # clips shorter than n_fft are fine (zero-padded frames)
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        mel = librosa.feature.melspectrogram(
            y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            fmin=cfg.fmin, fmax=cfg.fmax,
        )
    logmel = librosa.power_to_db(mel)
    mode = "interp" if logmel.shape[-1] >= cfg.delta_width else "nearest"
    d1 = librosa.feature.delta(mel if cfg.delta_of == "power" else logmel, width=cfg.delta_width, mode=mode)
    d2 = librosa.feature.delta(logmel, width=cfg.delta_width, order=2, mode=mode)
    return np.stack([logmel, d1, d2]).astype(np.float32)


def librosa_features(y: np.ndarray, sr: int, cfg: FeatureConfig) -> np.ndarray:
    """The seed's features of raw mono audio ``y`` at rate ``sr``: trim, resample, log-mel, deltas."""
    import librosa

    trimmed, _ = librosa.effects.trim(y, top_db=cfg.trim_top_db)
    if trimmed.shape[-1] == 0:
        trimmed = y
    return librosa_logmel_deltas(librosa.resample(trimmed, orig_sr=sr, target_sr=cfg.sample_rate), cfg)


def reference_features_from_file(path: str | os.PathLike, cfg: FeatureConfig) -> np.ndarray:
    """The seed's way for one file: ``librosa.load(sr=None)`` then :func:`librosa_features`."""
    import librosa

    y, sr = librosa.load(path, sr=None)
    return librosa_features(y, sr, cfg)


# --------------------------------------------------------------------------------------------------
# The pipeline: batched torch on CPU or CUDA
# --------------------------------------------------------------------------------------------------


def savgol_deriv_kernel(width: int, order: int) -> np.ndarray:
    """``scipy.signal.savgol_coeffs(width, polyorder=order, deriv=order, use='conv')``, reversed for
    correlation: the least-squares ``order``-th derivative at the window centre.
    Computed with numpy to spare the pipeline scipy.signal's import time; the tests check equality."""
    half = width // 2
    vander = np.vander(np.arange(-half, half + 1, dtype=np.float64), order + 1, increasing=True)
    return np.linalg.pinv(vander)[order] * math.factorial(order)


class TorchFeatureExtractor:
    """Features of a batch of waveforms (at ``cfg.sample_rate``, already trimmed) on ``device``.

    The waveforms are zero-padded into one batch; with centred, zero-padded framing the first
    ``1 + len // hop`` frames of each clip are exactly its own frames, and everything after them is
    cut off. ``power_to_db``'s top_db floor is taken per clip, over its own frames. Deltas are a
    correlation with Savitzky-Golay kernels (as shifted adds: cheaper than conv1d here); with ``deriv == polyorder`` the ``mode='interp'`` edge
    values equal the value at the first/last full window, so the edges repeat those; clips shorter
    than the window use edge-replicated input (``mode='nearest'``). The power spectrum is
    ``re**2 + im**2`` (torch's complex ``abs`` is several times slower on CPU; the difference to
    librosa's ``abs(S)**2`` is float32 rounding). See the module docstring for measured tolerances.

    torch is imported on first use (here and in :func:`iter_features`), so that importing this module
    stays cheap and decoding can start while torch loads (~1.5 s).
    """

    def __init__(self, cfg: FeatureConfig, device: str | torch.device = "cpu"):
        import torch
        import torchaudio.functional as AF

        self.cfg = cfg
        self.device = torch.device(device)
        self.window = torch.hann_window(cfg.n_fft, periodic=True, device=self.device)
        fbank = AF.melscale_fbanks(
            n_freqs=cfg.n_fft // 2 + 1, f_min=cfg.fmin, f_max=cfg.f_max, n_mels=cfg.n_mels,
            sample_rate=cfg.sample_rate, norm="slaney", mel_scale="slaney",
        )
        self.fbank = fbank.to(self.device)  # (n_freqs, n_mels)
        self.kernels = [savgol_deriv_kernel(cfg.delta_width, order).tolist() for order in (1, 2)]

    def _deltas(self, x: torch.Tensor, frames: torch.Tensor, kernels: list[list[float]]) -> list[torch.Tensor]:
        """Savitzky-Golay derivatives along the last axis of ``x`` (B, M, T), per clip of ``frames``."""
        import torch

        batch, n_mels, n_time = x.shape
        half = self.cfg.delta_width // 2
        last = (frames - 1)[:, None]
        src = torch.minimum(torch.arange(-half, n_time + half, device=x.device).clamp(min=0)[None, :], last)
        extended = torch.gather(x, 2, src[:, None, :].expand(batch, n_mels, -1))  # edges replicated
        t = torch.arange(n_time, device=x.device)[None, :]
        interp_idx = torch.minimum(t.clamp(min=half), last - half)
        idx = torch.where(frames[:, None] >= self.cfg.delta_width, interp_idx, t)[:, None, :].expand(batch, n_mels, -1)
        out = []
        for kernel in kernels:
            nearest = extended[..., :n_time] * kernel[0]
            for j in range(1, len(kernel)):
                nearest.add_(extended[..., j : j + n_time], alpha=kernel[j])
            out.append(torch.gather(nearest, 2, idx))
        return out

    def __call__(self, waves: Sequence[np.ndarray], dtype: type = np.float32) -> list[np.ndarray]:
        """One C-contiguous (3, n_mels, frames_i) array per waveform, in ``dtype`` (float32 or float16;
        float16 values are clipped to its range, which only the power-mel delta can exceed)."""
        import torch

        with torch.inference_mode():
            return self._compute(waves, dtype)

    def _compute(self, waves: Sequence[np.ndarray], dtype: type) -> list[np.ndarray]:
        import torch

        cfg = self.cfg
        lengths = [int(w.shape[-1]) for w in waves]
        if min(lengths) == 0:
            raise ValueError("empty waveform")
        if len(waves) == 1:
            batch = np.asarray(waves[0], dtype=np.float32)[None, :]
        else:
            batch = np.zeros((len(waves), max(lengths)), dtype=np.float32)
            for row, w in zip(batch, waves):
                row[: w.shape[-1]] = w
        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        frames_np = np.array([cfg.n_frames(n) for n in lengths], dtype=np.int64)
        frames = torch.from_numpy(frames_np).to(self.device)

        mel = self._mel(x, center=True)
        out = self._stack(mel, frames)
        if dtype == np.float16:
            out = out.clamp(-FLOAT16_MAX, FLOAT16_MAX).half()
        out_np = out.cpu().numpy()
        return [np.ascontiguousarray(out_np[i, :, :, :n]) for i, n in enumerate(frames_np)]


    def _mel(self, x: torch.Tensor, center: bool) -> torch.Tensor:
        """(B, M, T) mel power of waveforms (B, n): centred zero-padded frames, or (``center=False``)
        the frames that fit inside ``x``."""
        import torch

        cfg = self.cfg
        spec = torch.stft(x, cfg.n_fft, cfg.hop_length, window=self.window, center=center,
                          pad_mode="constant", return_complex=True)
        # torch.stft's (B, F, T) result is a view of frame-major memory: work on (B, T, F), where the
        # power is two contiguous passes and the mel filterbank one (B*T, F) x (F, M) product.
        parts = torch.view_as_real(spec.transpose(1, 2))
        del spec
        power = parts[..., 0].square().add_(parts[..., 1].square())
        del parts
        return torch.matmul(power, self.fbank).transpose(1, 2)  # (B, M, T)

    def _stack(self, mel: torch.Tensor, frames: torch.Tensor, peak: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, M, T) log-mel (floored at ``peak - TOP_DB``; default: each clip's own peak) + deltas."""
        import torch

        cfg = self.cfg
        logmel = 10.0 * torch.log10(mel.clamp(min=AMIN))
        if peak is None:
            valid = torch.arange(mel.shape[-1], device=self.device)[None, :] < frames[:, None]
            peak = logmel.masked_fill(~valid[:, None, :], -math.inf).amax(dim=(1, 2))
        logmel = torch.maximum(logmel, (peak - TOP_DB)[:, None, None])
        if cfg.delta_of == "power":
            d1, d2 = self._deltas(mel, frames, self.kernels[:1]) + self._deltas(logmel, frames, self.kernels[1:])
        else:
            d1, d2 = self._deltas(logmel, frames, self.kernels)
        return torch.stack([logmel, d1, d2], dim=1)


# --------------------------------------------------------------------------------------------------
# Silence
# --------------------------------------------------------------------------------------------------

# The log-mel floor: power_to_db's amin (1e-10) is -100 dB. A clip whose log-mel never rises above it
# holds no sound (digital silence, or noise under -100 dB in every mel band at every frame). Trimming is
# relative to the clip's loudest frame, so it keeps such a clip whole; the model would still pick a label.
SILENT_DB = 10.0 * math.log10(AMIN) + 0.01
SILENT_REASON = "silent (no sound above the -100 dB log-mel floor)"  # what a flagged silent clip's row says


def is_silent(features) -> bool:
    """True when a (3, n_mels, frames) feature array (float32, or float16 from the cache) is silence:
    its log-mel channel never rises above the -100 dB floor."""
    return bool(float(np.asarray(features[0]).max()) <= SILENT_DB)
