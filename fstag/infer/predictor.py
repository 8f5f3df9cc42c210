"""Clip-level predictions of a model: TTA crops (``mode='crops'``) or every window (``mode='windows'``).

- ``crops`` (the seed's): pass 0 is the run's own training-time transform (the masking augmentation
  for ``aug=specmask_concat``, the first window otherwise); passes 1..k-1 are random crops. Single-label:
  the passes' softmax outputs are combined by geometric mean; multi-label: the passes' sigmoid
  probabilities are averaged per label. Every crop comes from a generator seeded by (seed, pass, fname)
  through a stable hash (:func:`clip_seed`), so a clip gets the same crops whatever the batch size, worker
  count, list order or list length.
- ``windows``: every ``crop_frames`` window at a hop of ``hop_frames`` (plus one flush with the clip's
  end), the validation transform (a shorter clip: one window, padded at offset 0), combined by
  ``window_reduce``: ``mean`` (single-label: the mean of the log-probabilities, renormalised; multi-label:
  the mean sigmoid probability of each label) or ``max`` (each label's largest probability over the
  windows, as PANNs tag a long recording; single-label rows renormalised). Deterministic; windows of all
  clips are batched together, so memory is one batch of windows whatever the clip lengths. A clip may be a
  :class:`fstag.data.features.LongClip`, whose features are streamed in chunks.

A clip that could not be read (None) or is silent (:func:`fstag.data.features.is_silent`) gets uniform
probabilities (1/C; multi-label: 0 for every label: no sound event heard) without going through the model;
callers flag it.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from fstag.models.augment import crop_or_pad, specmask_concat
from fstag.data.features import is_silent
from fstag.data.long_clips import LongClip
from fstag.core.task import SINGLE_LABEL, Task, get_task, uninformed
from fstag.infer.modes import MODES, WINDOW_REDUCES, WindowPool, checked_hop, clip_seed, combine_passes  # noqa: F401


def tta_crop(x: torch.Tensor, pass_idx: int, key: str | int, length: int, aug: Mapping[str, Any], pad_value: float | None, seed: int) -> torch.Tensor:
    """Pass ``pass_idx``'s crop of clip ``x`` (``key``: its fname), ``length`` frames."""
    g = torch.Generator().manual_seed(clip_seed(seed, pass_idx, key))
    if pass_idx == 0:
        if aug.get("specmask_concat"):
            x = specmask_concat(x, length, int(aug["time_mask"]), int(aug["freq_mask"]), float(aug["mask_value"]), g)
        return crop_or_pad(x, length, random=False, pad_value=pad_value)
    return crop_or_pad(x, length, random=True, pad_value=pad_value, generator=g)


def iter_windows(chunks: Iterable[torch.Tensor], length: int, hop: int, pad_value: float | None) -> Iterator[torch.Tensor]:
    """Windows of ``length`` frames every ``hop`` frames over a clip given as consecutive (C, F, t)
    chunks, plus one window flush with the clip's end when the hop leaves a tail; a clip shorter than
    ``length`` gives one window padded at offset 0. Keeps at most one chunk plus ``length`` frames."""
    buf: torch.Tensor | None = None
    buf_start = total = next_start = 0
    for ch in chunks:
        buf = ch if buf is None else torch.cat([buf, ch], dim=-1)
        total += ch.shape[-1]
        while next_start + length <= total:
            yield buf[..., next_start - buf_start : next_start - buf_start + length]
            next_start += hop
        keep = min(next_start, max(total - length, 0))
        if keep > buf_start:
            buf, buf_start = buf[..., keep - buf_start :], keep
    if buf is None or total == 0:
        return
    if total <= length:
        if total < length:  # not yielded above
            yield crop_or_pad(buf, length, random=False, pad_value=pad_value)
    elif next_start - hop + length < total:
        yield buf[..., total - length - buf_start :]


def _forward(model: torch.nn.Module, xb: list[torch.Tensor], device: torch.device, task: Task) -> torch.Tensor:
    """Log-probabilities (single-label: log-softmax) or probabilities (multi-label: sigmoid) of a batch."""
    x = torch.stack(xb).to(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(x)
    if task.multi_label:
        return torch.sigmoid(logits.float()).cpu()
    return torch.log_softmax(logits.float(), dim=1).cpu()


def _as_tensor(clip) -> torch.Tensor:
    return torch.from_numpy(np.asarray(clip, dtype=np.float32))


def _chunks_of(clip) -> Iterator[torch.Tensor]:
    if isinstance(clip, LongClip):
        for ch in clip.chunks():
            yield torch.from_numpy(ch)
    else:
        yield _as_tensor(clip)


def _crops(model, clips, present, fnames, crop_frames, aug, pad_value, n_passes, seed, batch_size, device,
           task: Task) -> np.ndarray:
    pass_probs = []
    for p in range(max(1, int(n_passes))):
        chunks = []
        for s in range(0, len(present), batch_size):
            idx = present[s : s + batch_size]
            xb = [tta_crop(_as_tensor(clips[i]), p, fnames[i], crop_frames, aug, pad_value, seed) for i in idx]
            out = _forward(model, xb, device, task)
            chunks.append((out if task.multi_label else out.exp()).numpy())
        pass_probs.append(np.concatenate(chunks))
    return combine_passes(pass_probs, task)


def _windows(model, clips, present, crop_frames, hop_frames, pad_value, batch_size, device, num_classes,
             task: Task, reduce: str = "mean") -> np.ndarray:
    pool = WindowPool(len(present), num_classes, reduce)
    owners: list[int] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        pool.add(owners, _forward(model, batch, device, task).numpy())
        owners.clear()
        batch.clear()

    for row, i in enumerate(present):
        for w in iter_windows(_chunks_of(clips[i]), crop_frames, hop_frames, pad_value):
            batch.append(w.contiguous())
            owners.append(row)
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    return pool.result(task)


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    clips: Sequence[np.ndarray | LongClip | None],
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
    device: str | torch.device = "cpu",
    num_classes: int,
    task: Task | str = SINGLE_LABEL,
    window_reduce: str = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, silent)``: (N, C) float32 probabilities and an (N,) bool array of silent clips.

    ``clips[i]`` is a (3, F, T) feature array, a :class:`~fstag.data.features.LongClip`, or None for a clip
    that could not be read; ``fnames[i]`` names it (the crops' seeds). None and silent clips get
    :func:`uninformed` rows (a LongClip found silent or unreadable while streaming too: see its
    ``silent``/``error``). ``mode``: ``crops`` (``n_passes`` TTA crops) or ``windows`` (every window,
    ``hop_frames`` apart; default: half a window; ``window_reduce``: mean or max). ``task``: the model's
    task (:mod:`fstag.core.task`), which decides softmax or sigmoid and how passes combine.
    """
    task = get_task(task) if isinstance(task, str) else task
    hop = checked_hop(mode, window_reduce, len(clips), len(fnames), crop_frames, hop_frames)
    model.eval()
    device = torch.device(device)
    given = clips
    if mode == "crops":  # random crops need the whole clip: a long one is computed chunk by chunk
        clips = [c.load() if isinstance(c, LongClip) else c for c in clips]
    silent = np.array([c is not None and not isinstance(c, LongClip) and is_silent(c) for c in clips], dtype=bool)
    present = [i for i, c in enumerate(clips) if c is not None and not silent[i]]
    blank = uninformed(task, num_classes)
    out = np.full((len(clips), num_classes), blank)
    if present:
        if mode == "crops":
            probs = _crops(model, clips, present, fnames, crop_frames, aug, pad_value, n_passes, seed, batch_size,
                           device, task)
        else:
            probs = _windows(model, clips, present, crop_frames, hop, pad_value, batch_size, device, num_classes,
                             task, window_reduce)
        out[present] = probs
    for i, c in enumerate(given):  # a long clip's state is known once it has been streamed
        if isinstance(c, LongClip) and (c.silent or c.error):
            silent[i] = c.silent and not c.error
            out[i] = blank
    return out.astype(np.float32), silent
