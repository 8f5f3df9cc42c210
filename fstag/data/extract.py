"""Files -> features: a pool of decoding threads feeding the batched extractor
(:class:`fstag.data.features.TorchFeatureExtractor`); one unreadable file is reported, never fatal."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from fstag.data.audio import AudioError, load_clip
from fstag.data.feature_config import FeatureConfig
from fstag.data.features import TorchFeatureExtractor, librosa_logmel_deltas
from fstag.data.long_clips import LongClip


FEATURE_ENGINES = ("torch", "librosa")  # fstag.data.features: the pipeline's batched torch path, the librosa reference


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
    decoding, trimming and resampling each clip of the next two chunks (libsndfile and soxr release the
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

    def decode(k: int) -> list:
        return [pool.submit(_load_or_reason, Path(p), cfg) for p in chunks[k]]

    pending = deque(decode(k) for k in range(min(2, len(chunks))))  # two chunks ahead (see below)
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
            # The pool's queue runs: decode k+1 | features k | decode k+2 | features k+1 | ... so this chunk's
            # features fill the threads that the last clips of chunk k+1 leave idle, and chunk k+2's decoding
            # keeps them busy while this thread hands chunk k on (with one chunk ahead they waited for that).
            loaded = [f.result() for f in pending.popleft()]
            ok = [i for i, w in enumerate(loaded) if isinstance(w, np.ndarray)]
            lengths = [w.shape[-1] if isinstance(w, np.ndarray) else 0 for w in loaded]
            ok.sort(key=lengths.__getitem__)
            jobs = [(idx, pool.submit(extractor, [loaded[i] for i in idx], dtype))
                    for idx in _batches(ok, lengths, batch_size, max_samples)]
            if k + 2 < len(chunks):
                pending.append(decode(k + 2))
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


def _reference_or_reason(path: Path, cfg: FeatureConfig) -> tuple[np.ndarray | None, str | None]:
    """One file's features by the librosa reference (:func:`~fstag.data.features.librosa_logmel_deltas` of
    :func:`~fstag.data.audio.load_clip`'s waveform), or why it cannot be used."""
    loaded = _load_or_reason(path, cfg)
    if isinstance(loaded, str):
        return None, loaded
    try:
        return librosa_logmel_deltas(loaded, cfg), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def compute_features_for_files(
    paths: list[Path], cfg: FeatureConfig, device: str = "cpu", num_workers: int | None = None,
    engine: str = "torch",
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Features (float32 (3, n_mels, frames)) of arbitrary audio files, computed on the fly.

    Returns ``(features, errors)``: ``features[i]`` is None where file ``i`` failed and ``errors[i]``
    says why (None where it succeeded). ``engine``: ``torch`` (:func:`iter_features`, what preprocess.py and
    predict.py run) or ``librosa`` (the reference, one clip per thread, without torch: what a served ONNX model
    runs; the two agree to float32 rounding, fstag.data.features).
    """
    if engine == "librosa":
        if not paths:
            return [], []
        with ThreadPoolExecutor(max_workers=min(num_workers or default_workers(), len(paths)),
                                thread_name_prefix="fstag-features") as pool:
            results = list(pool.map(lambda p: _reference_or_reason(Path(p), cfg), paths))
    elif engine == "torch":
        results = list(iter_features(paths, cfg, device=device, num_workers=num_workers))
    else:
        raise ValueError(f"feature engine {engine!r}: choose one of {FEATURE_ENGINES}")
    return [f for f, _ in results], [e for _, e in results]


def features_for_files(
    paths: list[Path], cfg: FeatureConfig, *, num_workers: int | None = None, long_seconds: float | None = None,
    chunk_frames: int = 3000, engine: str = "torch",
) -> tuple[list[np.ndarray | LongClip | None], list[str | None]]:
    """:func:`compute_features_for_files`, except that a file longer than ``long_seconds`` (its header's
    duration; None: no limit) becomes a :class:`LongClip`, whose features are streamed when used (by the torch
    engine; the librosa engine computes every clip whole)."""
    from fstag.data.audio import audio_info

    long: set[int] = set()
    if long_seconds and engine == "torch":
        for i, p in enumerate(paths):
            try:
                frames, sr = audio_info(p)
            except AudioError:
                continue  # reported by the regular path
            if frames > float(long_seconds) * sr:
                long.add(i)
    short = [i for i in range(len(paths)) if i not in long]
    feats, errors = compute_features_for_files([paths[i] for i in short], cfg, num_workers=num_workers,
                                               engine=engine) if short else ([], [])
    clips: list[np.ndarray | LongClip | None] = [None] * len(paths)
    errs: list[str | None] = [None] * len(paths)
    for i, f, e in zip(short, feats, errors):
        clips[i], errs[i] = f, e
    for i in long:
        clips[i] = LongClip(paths[i], cfg, chunk_frames)
    return clips, errs
