"""Log-mel + delta + delta-delta features: the config, the librosa reference and the batched torch path.

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
  from :func:`fstag.audio.load_clip` (decode/trim/resample bit-identical to librosa's). Measured max
  (mean) absolute differences to the librosa chain from the file, over the 75 clips of a demo data
  set: log-mel 4e-3 dB (8e-6 dB), delta 6e-4 (1e-6), delta-delta 4e-4 (7e-7); on the same waveforms
  of 1 sample to 30 s in one padded batch: log-mel 7e-4 dB (5e-6). The largest differences sit near
  the 80 dB floor of quiet clips, where float32 STFT rounding weighs most. tests/test_features.py
  asserts log-mel < 0.02 dB max / 1e-3 dB mean and deltas < 0.01 max / 1e-4 mean.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from fstag.audio import AudioError, load_clip

if TYPE_CHECKING:
    import torch

AMIN = 1e-10  # librosa.power_to_db defaults
TOP_DB = 80.0
FLOAT16_MAX = float(np.finfo(np.float16).max)
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
            from fstag.config import to_plain

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


def is_silent(features) -> bool:
    """True when a (3, n_mels, frames) feature array (float32, or float16 from the cache) is silence:
    its log-mel channel never rises above the -100 dB floor."""
    return bool(float(np.asarray(features[0]).max()) <= SILENT_DB)


# --------------------------------------------------------------------------------------------------
# Long files: features in chunks of frames, bounded memory
# --------------------------------------------------------------------------------------------------


def _stream_mel(path: str | os.PathLike, cfg: FeatureConfig, ex: "TorchFeatureExtractor", chunk_frames: int) -> Iterator["torch.Tensor"]:
    """(n_mels, k) mel power chunks of a file's frames (those of the whole-file computation: centred,
    zero-padded), from :func:`fstag.audio.stream_clip`'s waveform blocks."""
    import torch

    from fstag.audio import stream_clip

    n_fft, hop, half = cfg.n_fft, cfg.hop_length, cfg.n_fft // 2
    buf, buf_start, t0, n = np.zeros(half, dtype=np.float32), -half, 0, 0

    def mel(t_end: int) -> torch.Tensor:  # frames [t0, t_end): samples [t*hop - half, t*hop - half + n_fft)
        seg = buf[t0 * hop - half - buf_start : (t_end - 1) * hop - half + n_fft - buf_start]
        return ex._mel(torch.from_numpy(np.ascontiguousarray(seg))[None, :].to(ex.device), center=False)[0]

    for block in stream_clip(path, cfg):
        n += block.shape[0]
        buf = np.concatenate([buf, block])
        avail = (buf_start + buf.shape[0] + half - n_fft) // hop + 1
        while avail - t0 >= chunk_frames:
            yield mel(t0 + chunk_frames)
            t0 += chunk_frames
        cut = t0 * hop - half - buf_start
        buf, buf_start = buf[cut:], buf_start + cut
    if n == 0:
        raise AudioError("empty audio (0 samples)")
    total = cfg.n_frames(n)
    buf = np.concatenate([buf, np.zeros(half + hop, dtype=np.float32)])
    while t0 < total:
        t_end = min(total, t0 + chunk_frames)
        yield mel(t_end)
        t0 = t_end


def iter_long_features(path: str | os.PathLike, cfg: FeatureConfig, chunk_frames: int = 3000,
                       device: str = "cpu") -> Iterator[np.ndarray]:
    """A file's features as consecutive float32 (3, n_mels, k) chunks of ``chunk_frames`` frames (the
    last one fewer than ``chunk_frames + delta_width``) whose concatenation equals the whole-file features up to float32 rounding.

    Memory is a few chunks whatever the file's length: the waveform is streamed
    (:func:`fstag.audio.stream_clip`), the STFT runs a chunk at a time, the deltas see ``delta_width``
    frames of context on each side. The file is read three times: the trim decision, the clip's peak
    log-mel (its -80 dB floor is relative to the whole clip), then the features.
    """
    import torch

    with torch.inference_mode():
        ex = TorchFeatureExtractor(cfg, device)
        peak = torch.tensor(-math.inf, device=ex.device)
        for m in _stream_mel(path, cfg, ex, chunk_frames):
            peak = torch.maximum(peak, 10.0 * torch.log10(m.clamp(min=AMIN)).max())
        ctx = cfg.delta_width
        pending, p_start, emitted = None, 0, 0

        def features(mel: torch.Tensor, lo: int, hi: int) -> np.ndarray:  # frames [lo, hi) of mel, one clip
            out = ex._stack(mel[None], torch.tensor([mel.shape[-1]], device=ex.device), peak[None])[0]
            return np.ascontiguousarray(out[..., lo:hi].cpu().numpy())

        for m in _stream_mel(path, cfg, ex, chunk_frames):
            pending = m if pending is None else torch.cat([pending, m], dim=-1)
            while p_start + pending.shape[-1] >= emitted + chunk_frames + ctx:
                yield features(pending[..., : emitted + chunk_frames + ctx - p_start],
                               emitted - p_start, emitted + chunk_frames - p_start)
                emitted += chunk_frames
                drop = max(0, emitted - ctx - p_start)
                pending, p_start = pending[..., drop:], p_start + drop
        if pending is not None and p_start + pending.shape[-1] > emitted:
            yield features(pending, emitted - p_start, pending.shape[-1])


class LongClip:
    """A file too long to hold its features at once: :meth:`chunks` streams them
    (:func:`iter_long_features`). After a pass, ``silent`` says whether it was silence
    (:func:`is_silent`) and ``error`` why it could not be read (None when it could)."""

    def __init__(self, path: str | os.PathLike, cfg: FeatureConfig, chunk_frames: int = 3000):
        self.path, self.cfg, self.chunk_frames = Path(path), cfg, int(chunk_frames)
        self.silent = False
        self.error: str | None = None

    def chunks(self) -> Iterator[np.ndarray]:
        peak = -math.inf
        try:
            for ch in iter_long_features(self.path, self.cfg, self.chunk_frames):
                peak = max(peak, float(ch[0].max()))
                yield ch
        except AudioError as exc:
            self.error = str(exc)
            return
        self.silent = peak <= SILENT_DB

    def load(self) -> np.ndarray | None:
        """The whole (3, n_mels, frames) features, computed chunk by chunk; None if unreadable."""
        parts = list(self.chunks())
        return None if self.error or not parts else np.concatenate(parts, axis=-1)

    def __repr__(self) -> str:
        return f"LongClip({str(self.path)!r})"


# --------------------------------------------------------------------------------------------------
# Files -> features: decoding threads feeding the batched extractor
# --------------------------------------------------------------------------------------------------


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _load_or_reason(path: Path, cfg: FeatureConfig) -> np.ndarray | str:
    """The clip's waveform, or why it cannot be used (one odd file must not stop a long run)."""
    try:
        return load_clip(path, cfg)
    except AudioError as exc:
        return str(exc)
    except Exception as exc:  # anything else trimming or resampling may raise on a strange file
        return f"{type(exc).__name__}: {exc}"


def _batches(order: list[int], lengths: list[int], batch_size: int, max_samples: int) -> Iterator[list[int]]:
    """Consecutive groups of ``order`` (sorted by length) of at most ``batch_size`` clips and, once
    zero-padded to the longest, at most ``max_samples`` samples (one clip at least)."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) == batch_size or (len(batch) + 1) * lengths[i] > max_samples):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def iter_features(
    paths: Sequence[str | os.PathLike],
    cfg: FeatureConfig,
    *,
    device: str = "cpu",
    num_workers: int | None = None,
    batch_size: int | None = None,
    max_batch_seconds: float = 600.0,
    chunk_size: int = 256,
    dtype: type = np.float32,
) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """``(features, None)`` or ``(None, reason)`` for each path, in order.

    A pool of ``num_workers`` threads (default: all cores) does all the work, a chunk at a time:
    decoding, trimming and resampling each clip of the next chunk (libsndfile and soxr release the
    GIL), and computing the current chunk's features in batches of clips of similar length (sorted,
    so that little padding is computed; at most ``batch_size`` clips and ``max_batch_seconds`` of
    padded audio). ``batch_size=None``: 2 on CPU, 32 on CUDA. On CPU small batches are fastest:
    1000 clips of 7 s took about the same time in batches of 1 or 2, ~8 % longer in batches of 4 and
    ~2x longer in batches of 16 (page faults and cache misses on the large temporaries), while 2
    halves the Python work per clip. Torch releases the GIL too; on CPU its own thread pool is set
    to one thread meanwhile, so the cores are shared by the workers without oversubscription (a
    pool of forked processes measured within noise of these threads, ~5 %, and would not suit
    CUDA). On CUDA the workers' batches queue on the GPU while the other workers decode.
    """
    workers = num_workers or default_workers()
    chunks = [list(paths[i : i + chunk_size]) for i in range(0, len(paths), chunk_size)]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fstag-features")
    pending = [pool.submit(_load_or_reason, Path(p), cfg) for p in chunks[0]] if chunks else []
    torch_threads = None
    try:
        import torch  # only now: importing it (~1.5 s) overlaps with the first chunk's decoding

        torch_threads = torch.get_num_threads()
        extractor = TorchFeatureExtractor(cfg, device)
        batch_size = batch_size or (2 if extractor.device.type == "cpu" else 32)
        max_samples = int(max_batch_seconds * cfg.sample_rate)
        if extractor.device.type == "cpu" and workers > 1:
            torch.set_num_threads(1)
        for k in range(len(chunks)):
            loaded = [f.result() for f in pending]
            if k + 1 < len(chunks):
                pending = [pool.submit(_load_or_reason, Path(p), cfg) for p in chunks[k + 1]]
            ok = [i for i, w in enumerate(loaded) if isinstance(w, np.ndarray)]
            lengths = [w.shape[-1] if isinstance(w, np.ndarray) else 0 for w in loaded]
            ok.sort(key=lengths.__getitem__)
            jobs = [(idx, pool.submit(extractor, [loaded[i] for i in idx], dtype))
                    for idx in _batches(ok, lengths, batch_size, max_samples)]
            feats: list[np.ndarray | None] = [None] * len(loaded)
            for idx, job in jobs:
                for i, arr in zip(idx, job.result()):
                    feats[i] = arr
            for w, f in zip(loaded, feats):
                yield (f, None) if f is not None else (None, w)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)


def compute_features_for_files(
    paths: list[Path], cfg: FeatureConfig, device: str = "cpu", num_workers: int | None = None
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Features (float32 (3, n_mels, frames)) of arbitrary audio files, computed on the fly.

    Returns ``(features, errors)``: ``features[i]`` is None where file ``i`` failed and ``errors[i]``
    says why (None where it succeeded).
    """
    results = list(iter_features(paths, cfg, device=device, num_workers=num_workers))
    return [f for f, _ in results], [e for _, e in results]


def features_for_files(
    paths: list[Path], cfg: FeatureConfig, *, num_workers: int | None = None, long_seconds: float | None = None,
    chunk_frames: int = 3000,
) -> tuple[list[np.ndarray | LongClip | None], list[str | None]]:
    """:func:`compute_features_for_files`, except that a file longer than ``long_seconds`` (its header's
    duration; None: no limit) becomes a :class:`LongClip`, whose features are streamed when used."""
    from fstag.audio import audio_info

    long: set[int] = set()
    if long_seconds:
        for i, p in enumerate(paths):
            try:
                frames, sr = audio_info(p)
            except AudioError:
                continue  # reported by the regular path
            if frames > float(long_seconds) * sr:
                long.add(i)
    short = [i for i in range(len(paths)) if i not in long]
    feats, errors = compute_features_for_files([paths[i] for i in short], cfg, num_workers=num_workers) if short else ([], [])
    clips: list[np.ndarray | LongClip | None] = [None] * len(paths)
    errs: list[str | None] = [None] * len(paths)
    for i, f, e in zip(short, feats, errors):
        clips[i], errs[i] = f, e
    for i in long:
        clips[i] = LongClip(paths[i], cfg, chunk_frames)
    return clips, errs
