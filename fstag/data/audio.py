"""The waveform half of the features, per clip on the CPU: decode -> mono -> trim silence -> resample.

Each step reproduces what the seed did with librosa (``librosa.load(sr=None)`` ->
``librosa.effects.trim(top_db)`` at the native rate -> ``librosa.resample`` (soxr 'HQ')), without
librosa's overheads, so that worker threads can run it in parallel: libsndfile and soxr release the GIL.

Only numpy, soundfile and soxr are imported here (no torch, no scipy), which keeps start-up cheap.

A file that is in the data set but holds audio only partly (a WAV cut in its data chunk) is decoded as
far as libsndfile reads it, as librosa would; a file cut inside its header is reported unreadable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import soxr

if TYPE_CHECKING:
    from fstag.data.feature_config import FeatureConfig

# librosa.effects.trim's defaults (the seed changed only top_db): RMS over 2048-sample frames every
# 512 samples, centred (zero padding), reference = the loudest frame, amin = 1e-5 (amplitude).
TRIM_FRAME_LENGTH = 2048
TRIM_HOP_LENGTH = 512
_TRIM_AMIN_POWER = 1e-10
_PCM16_SCALE = np.float32(1 / 32768)  # libsndfile's normalisation of 16-bit PCM to float


class AudioError(ValueError):
    """A clip cannot be turned into a waveform; ``str(exc)`` is the reason written to the report."""


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """``(y, sr)``: float32 mono at the file's own rate (channels averaged, as ``librosa.to_mono``).

    Raises :class:`AudioError` for a missing, unreadable, non-audio or empty file, and for audio that
    holds NaN or Inf (librosa refuses such buffers too).
    """
    if not os.path.isfile(path):
        raise AudioError("file not found")
    try:
        with sf.SoundFile(path) as f:
            sr = f.samplerate
            if f.subtype == "PCM_16":  # libsndfile's own float conversion is ~3x slower; same values
                y = np.multiply(f.read(dtype="int16", always_2d=True), _PCM16_SCALE, dtype=np.float32)
            else:
                y = f.read(dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile errors, and whatever a malformed header triggers
        raise AudioError(f"cannot decode audio: {exc}") from exc
    if y.shape[0] == 0:
        raise AudioError("empty audio (0 samples)")
    y = y[:, 0] if y.shape[1] == 1 else y.mean(axis=1, dtype=np.float32)
    if not np.isfinite(y).all():
        raise AudioError("audio holds non-finite samples (NaN or Inf)")
    return np.ascontiguousarray(y), int(sr)


def trim_bounds(y: np.ndarray, top_db: float) -> tuple[int, int]:
    """``(start, end)`` such that ``y[start:end]`` is what ``librosa.effects.trim(y, top_db=top_db)`` keeps.

    Frame powers are block sums of ``y**2`` in float64 (librosa frames the signal and averages in
    float32); the keep/trim decisions agree except for a frame whose level lies within float32
    rounding of the threshold. ``(0, 0)`` when nothing is above the threshold (possible only for
    ``top_db <= 0``).
    """
    return _bounds_from_blocks(block_energy(y), y.shape[-1], top_db)


def block_energy(y: np.ndarray) -> np.ndarray:
    """Sums of ``y**2`` (float64) over consecutive blocks of :data:`TRIM_HOP_LENGTH` samples (the last
    one zero-padded): what :func:`trim_bounds` needs, computable block by block on a stream."""
    hop = TRIM_HOP_LENGTH
    padded = np.zeros(-(-y.shape[-1] // hop) * hop, dtype=np.float64)
    padded[: y.shape[-1]] = y
    return np.einsum("ij,ij->i", padded.reshape(-1, hop), padded.reshape(-1, hop))


def _bounds_from_blocks(energy: np.ndarray, n: int, top_db: float) -> tuple[int, int]:
    hop, blocks_per_frame = TRIM_HOP_LENGTH, TRIM_FRAME_LENGTH // TRIM_HOP_LENGTH
    n_frames = 1 + n // hop
    block = np.zeros(n_frames + blocks_per_frame - 1, dtype=np.float64)
    lead = TRIM_FRAME_LENGTH // 2 // hop  # centred frames: the zero padding before sample 0
    block[lead : lead + energy.shape[0]] = energy
    frame_sum = np.convolve(block, np.ones(blocks_per_frame), mode="valid")
    power = np.maximum(frame_sum / TRIM_FRAME_LENGTH, _TRIM_AMIN_POWER)
    db = 10.0 * np.log10(power) - 10.0 * np.log10(power.max())
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0]) * hop, min(n, (int(loud[-1]) + 1) * hop)


def trim_silence(y: np.ndarray, top_db: float) -> np.ndarray:
    """Leading and trailing silence cut as by librosa; a clip that would trim to nothing stays whole."""
    start, end = trim_bounds(y, top_db)
    return y[start:end] if end > start else y


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Equal to ``librosa.resample(y, orig_sr=..., target_sr=...)`` (res_type 'soxr_hq', fix=True)."""
    if orig_sr == target_sr:
        return y
    n_out = int(np.ceil(y.shape[-1] * (float(target_sr) / orig_sr)))
    out = soxr.resample(y, orig_sr, target_sr, quality="soxr_hq")
    if out.shape[-1] >= n_out:
        return np.ascontiguousarray(out[:n_out], dtype=np.float32)
    return np.pad(out, (0, n_out - out.shape[-1])).astype(np.float32, copy=False)


def load_clip(path: str | os.PathLike, cfg: "FeatureConfig") -> np.ndarray:
    """The waveform features are computed from: float32 mono at ``cfg.sample_rate``, silence trimmed
    at the native rate. Raises :class:`AudioError` (see :func:`read_audio`)."""
    y, sr = read_audio(path)
    return resample(trim_silence(y, cfg.trim_top_db), sr, cfg.sample_rate)


# --------------------------------------------------------------------------------------------------
# Long files: the same waveform, streamed a block at a time (bounded memory)
# --------------------------------------------------------------------------------------------------

STREAM_BLOCK = 1 << 19  # samples per read (a multiple of TRIM_HOP_LENGTH)


def audio_info(path: str | os.PathLike) -> tuple[int, int]:
    """``(frames, sample rate)`` of a file from its header; :class:`AudioError` if it cannot be opened."""
    if not os.path.isfile(path):
        raise AudioError("file not found")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise AudioError(f"cannot decode audio: {exc}") from exc
    return int(info.frames), int(info.samplerate)


def iter_mono(path: str | os.PathLike, start: int = 0, stop: int | None = None, block: int = STREAM_BLOCK):
    """float32 mono blocks of samples ``[start, stop)`` of a file, decoded as :func:`read_audio` does."""
    try:
        with sf.SoundFile(path) as f:
            pcm16 = f.subtype == "PCM_16"
            stop = f.frames if stop is None else stop
            f.seek(start)
            pos = start
            while pos < stop:
                n = min(block, stop - pos)
                if pcm16:
                    y = np.multiply(f.read(n, dtype="int16", always_2d=True), _PCM16_SCALE, dtype=np.float32)
                else:
                    y = f.read(n, dtype="float32", always_2d=True)
                if y.shape[0] == 0:
                    break  # a file cut in its data chunk: what libsndfile reads, as read_audio
                pos += y.shape[0]
                y = y[:, 0] if y.shape[1] == 1 else y.mean(axis=1, dtype=np.float32)
                if not np.isfinite(y).all():
                    raise AudioError("audio holds non-finite samples (NaN or Inf)")
                yield np.ascontiguousarray(y)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"cannot decode audio: {exc}") from exc


def stream_trim_bounds(path: str | os.PathLike, top_db: float) -> tuple[int, int, int]:
    """``(start, end, n)`` of :func:`trim_bounds` for a whole file, read block by block."""
    energy, n = [], 0
    for y in iter_mono(path):
        energy.append(block_energy(y))
        n += y.shape[0]
    if n == 0:
        raise AudioError("empty audio (0 samples)")
    start, end = _bounds_from_blocks(np.concatenate(energy), n, top_db)
    return (start, end, n) if end > start else (0, n, n)


def stream_clip(path: str | os.PathLike, cfg: "FeatureConfig", block: int = STREAM_BLOCK):
    """:func:`load_clip`'s waveform as consecutive float32 blocks (their concatenation equals it: the
    trim decision is :func:`trim_bounds`', soxr's stream resampler equals its one-shot call)."""
    _, sr = audio_info(path)
    start, end, _ = stream_trim_bounds(path, cfg.trim_top_db)
    if sr == cfg.sample_rate:
        yield from iter_mono(path, start, end, block)
        return
    n_out = int(np.ceil((end - start) * (float(cfg.sample_rate) / sr)))
    rs = soxr.ResampleStream(sr, cfg.sample_rate, 1, dtype="float32", quality="soxr_hq")
    done = 0
    for y in iter_mono(path, start, end, block):
        out = rs.resample_chunk(y, last=False)[: n_out - done]
        done += out.shape[0]
        if out.shape[0]:
            yield np.ascontiguousarray(out, dtype=np.float32)
    out = rs.resample_chunk(np.zeros(0, dtype=np.float32), last=True)[: n_out - done]
    done += out.shape[0]
    if done < n_out:
        out = np.concatenate([out, np.zeros(n_out - done, dtype=np.float32)])
    if out.shape[0]:
        yield np.ascontiguousarray(out, dtype=np.float32)


def list_audio_files(folder: str | os.PathLike, extensions) -> list[Path]:
    """Every file below ``folder`` whose suffix is one of ``extensions`` (``wav``, ``.flac``, any case),
    sorted by path (empty when there is none). Other files (a labels CSV, notes) are never opened."""
    exts = {"." + str(e).lower().lstrip(".") for e in extensions}
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in exts)
