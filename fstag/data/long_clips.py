"""Long files: features in chunks of frames with bounded memory (the waveform streamed, the STFT a chunk at
a time, the deltas with their context), equal to the whole-file features; :class:`LongClip` computes them
when a clip is used."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from fstag.data.audio import AudioError
from fstag.data.feature_config import FeatureConfig
from fstag.data.features import AMIN, SILENT_DB, TorchFeatureExtractor

if TYPE_CHECKING:
    import torch


def _stream_mel(path: str | os.PathLike, cfg: FeatureConfig, ex: "TorchFeatureExtractor", chunk_frames: int) -> Iterator["torch.Tensor"]:
    """(n_mels, k) mel power chunks of a file's frames (those of the whole-file computation: centred,
    zero-padded), from :func:`fstag.data.audio.stream_clip`'s waveform blocks."""
    import torch

    from fstag.data.audio import stream_clip

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
    (:func:`fstag.data.audio.stream_clip`), the STFT runs a chunk at a time, the deltas see ``delta_width``
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
