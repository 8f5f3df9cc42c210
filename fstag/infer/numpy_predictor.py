""":func:`fstag.infer.predictor.predict_probs` without torch: the same TTA crops, windows and combinations, on numpy
arrays, for a network given as a function (an onnxruntime session: :mod:`fstag.serve.onnx_export`).

A served ONNX model runs this, so that serving it needs neither torch nor torchaudio. Everything random is drawn
as the torch predictor draws it: each crop's generator is seeded by :func:`~fstag.infer.modes.clip_seed`, and
:class:`TorchRandint` reproduces ``torch.randint(0, n, (1,), generator=torch.Generator().manual_seed(s))`` (torch's
CPU generator is a 32-bit Mersenne twister seeded with the seed's low 32 bits; a draw below n is its next output
modulo n, which tests/test_numpy_predictor.py checks up to n = 2**27: a crop of a clip of 2**27 frames, 15 days of
audio at the seed's features), so a clip gets the crops, padding offsets and masks predict.py gives it.
tests/test_numpy_predictor.py holds the two predictors to each other (crops with and without specmask_concat,
short and long clips, zero and floor padding, windows by mean and max, single- and multi-label).

The clips are whole (3, F, T) arrays (no :class:`~fstag.data.long_clips.LongClip` streaming: a served model caps a
clip's length with ``serve.max_seconds``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from fstag.core.task import SINGLE_LABEL, Task, get_task, uninformed
from fstag.data.features import is_silent
from fstag.infer.modes import WindowPool, checked_hop, clip_seed, combine_passes

Network = Callable[[np.ndarray], np.ndarray]  # (B, 3, F, T) float32 features -> (B, C) logits


MAX_RANGE = 2**27  # the largest n that TorchRandint.below is checked to draw as torch does (torch 2.11)


class TorchRandint:
    """``torch.randint`` on a ``torch.Generator().manual_seed(seed)``, in numpy: the same integers, draw by draw."""

    def __init__(self, seed: int):
        self._mt = np.random.RandomState(int(seed) & 0xFFFFFFFF)  # init_genrand(seed), as torch's mt19937(seed)

    def below(self, n: int) -> int:
        """An integer in [0, n), as ``int(torch.randint(0, n, (1,), generator=g))`` (0 < n <= :data:`MAX_RANGE`)."""
        if not 0 < n <= MAX_RANGE:
            raise ValueError(f"a draw below {n}: n must be between 1 and {MAX_RANGE}")
        return int(self._mt.randint(0, 2**32, dtype=np.uint64)) % int(n)  # the twister's next 32-bit output


def _randint(high: int, rng: TorchRandint) -> int:
    """:func:`fstag.models.augment._randint`: uniform in [0, high], no draw when ``high <= 0``."""
    return 0 if high <= 0 else rng.below(high + 1)


def draw_crop(t: int, length: int, rng: TorchRandint) -> int:
    """:func:`fstag.models.augment.draw_crop`."""
    return _randint(t - length, rng) if t >= length else -_randint(length - t, rng)


def crop_at(x: np.ndarray, length: int, shift: int, pad_value: float | None = 0.0) -> np.ndarray:
    """:func:`fstag.models.augment.crop_at` (``pad_value=None``: the clip's own floor in channel 0, zero deltas)."""
    t = x.shape[-1]
    if t >= length:
        return x[..., shift : shift + length]
    if pad_value is None:
        out = np.zeros((*x.shape[:-1], length), dtype=x.dtype)
        if x.size:
            out[0] = x[0].min()
    else:
        out = np.full((*x.shape[:-1], length), pad_value, dtype=x.dtype)
    out[..., -shift : -shift + t] = x
    return out


def specmask_concat(x: np.ndarray, length: int, time_mask: int, freq_mask: int, value: float,
                    rng: TorchRandint) -> np.ndarray:
    """:func:`fstag.models.augment.specmask_concat`: a shorter clip gets a spec-masked copy appended along time."""
    f, t = x.shape[-2], x.shape[-1]
    if t >= length:
        return x
    w = min(_randint(time_mask, rng), t)  # fstag.models.augment.draw_spec_mask's order of draws
    t0 = _randint(t - w, rng)
    h = min(_randint(freq_mask, rng), f)
    f0 = _randint(f - h, rng)
    masked = x.copy()
    masked[..., t0 : t0 + w] = value
    masked[..., f0 : f0 + h, :] = value
    return np.concatenate([x, masked], axis=-1)


def tta_crop(x: np.ndarray, pass_idx: int, key: str | int, length: int, aug: Mapping[str, Any],
             pad_value: float | None, seed: int) -> np.ndarray:
    """:func:`fstag.infer.predictor.tta_crop`: pass 0 the training-time transform, passes 1.. random crops."""
    rng = TorchRandint(clip_seed(seed, pass_idx, key))
    if pass_idx == 0:
        if aug.get("specmask_concat"):
            x = specmask_concat(x, length, int(aug["time_mask"]), int(aug["freq_mask"]), float(aug["mask_value"]), rng)
        return crop_at(x, length, 0, pad_value)
    return crop_at(x, length, draw_crop(x.shape[-1], length, rng), pad_value)


def iter_windows(x: np.ndarray, length: int, hop: int, pad_value: float | None) -> Iterator[np.ndarray]:
    """:func:`fstag.infer.predictor.iter_windows` of a whole clip: every ``hop`` frames, one more flush with the end
    when the hop leaves a tail; a clip shorter than ``length``: one window padded at offset 0."""
    total = x.shape[-1]
    if total == 0:
        return
    if total < length:
        yield crop_at(x, length, 0, pad_value)
        return
    start = 0
    while start + length <= total:
        yield x[..., start : start + length]
        start += hop
    if start - hop + length < total:
        yield x[..., total - length :]


def _forward(net: Network, xb: list[np.ndarray], task: Task) -> np.ndarray:
    """Probabilities (multi-label: sigmoid) or log-probabilities (single-label: log-softmax) of a batch, float32."""
    logits = np.asarray(net(np.ascontiguousarray(np.stack(xb), dtype=np.float32)), dtype=np.float32)
    if task.multi_label:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    z = logits - logits.max(axis=1, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(np.float32)


def _crops(net, clips, present, fnames, crop_frames, aug, pad_value, n_passes, seed, batch_size, task) -> np.ndarray:
    pass_probs = []
    for p in range(max(1, int(n_passes))):
        chunks = []
        for s in range(0, len(present), batch_size):
            idx = present[s : s + batch_size]
            xb = [tta_crop(clips[i], p, fnames[i], crop_frames, aug, pad_value, seed) for i in idx]
            out = _forward(net, xb, task)
            chunks.append(out if task.multi_label else np.exp(out))
        pass_probs.append(np.concatenate(chunks))
    return combine_passes(pass_probs, task)


def _windows(net, clips, present, crop_frames, hop_frames, pad_value, batch_size, num_classes, task,
             reduce: str) -> np.ndarray:
    pool = WindowPool(len(present), num_classes, reduce)
    owners: list[int] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        pool.add(owners, _forward(net, batch, task))
        owners.clear()
        batch.clear()

    for row, i in enumerate(present):
        for w in iter_windows(clips[i], crop_frames, hop_frames, pad_value):
            batch.append(w)
            owners.append(row)
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    return pool.result(task)


def predict_probs(
    net: Network,
    clips: Sequence[np.ndarray | None],
    fnames: Sequence[str],
    *,
    crop_frames: int,
    aug: Mapping[str, Any],
    mode: str = "crops",
    pad_value: float | None = 0.0,
    n_passes: int = 5,
    hop_frames: int | None = None,
    seed: int = 1234,
    batch_size: int = 256,
    num_classes: int,
    task: Task | str = SINGLE_LABEL,
    window_reduce: str = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, silent)`` as :func:`fstag.infer.predictor.predict_probs` gives them, ``net`` being a function from
    a float32 feature batch to logits; ``clips[i]``: a (3, F, T) array or None (unreadable)."""
    task = get_task(task) if isinstance(task, str) else task
    hop = checked_hop(mode, window_reduce, len(clips), len(fnames), crop_frames, hop_frames)
    clips = [None if c is None else np.asarray(c, dtype=np.float32) for c in clips]
    silent = np.array([c is not None and is_silent(c) for c in clips], dtype=bool)
    present = [i for i, c in enumerate(clips) if c is not None and not silent[i]]
    out = np.full((len(clips), num_classes), uninformed(task, num_classes))
    if present:
        if mode == "crops":
            out[present] = _crops(net, clips, present, fnames, crop_frames, aug, pad_value, n_passes, seed,
                                  batch_size, task)
        else:
            out[present] = _windows(net, clips, present, crop_frames, hop, pad_value, batch_size, num_classes, task,
                                    window_reduce)
    return out.astype(np.float32), silent
