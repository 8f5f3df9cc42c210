"""The clips of a feature store held as tensors on the training device, and training crops cut from them
in batch there (the device-resident input path, :mod:`fstag.train.resident_data`).

A :class:`ResidentStore` holds the clips one after another in one flat float16 tensor, as the cache file
does, with each clip's offset, frame count and silence floor (channel 0's minimum, the
:func:`fstag.models.augment.silence_canvas` level). :meth:`ResidentStore.crops` cuts a batch of crops with
given parameters (:class:`fstag.models.augment.ClipDraw`: specmask_concat's masked copy, the crop's shift)
by one gather, and equals :func:`fstag.models.augment.apply_clip` clip by clip, to the bit.
"""

from __future__ import annotations

import numpy as np
import torch

CHANNELS = 3
# loader.resident=auto keeps the clips on a CUDA device when they take at most this share of its free memory
# (the rest is the model's, and the other jobs' on a shared GPU: launcher.jobs_per_gpu).
AUTO_SHARE = 0.25
RESIDENT_KEY = "loader.resident"
CHOICES = ("auto", "true", "false")


def resident_choice(value) -> str:
    """``loader.resident`` as one of auto|true|false; anything else is an error naming the key."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value).strip().lower()
    if text not in CHOICES:
        raise ValueError(f"{RESIDENT_KEY}={value!r}: choose one of {', '.join(CHOICES)} (auto: on a CUDA device when "
                         f"the features take at most {AUTO_SHARE:.0%} of its free memory)")
    return text


def clip_frames(store, indices: np.ndarray) -> np.ndarray:
    """Frame counts of the store's clips ``indices`` (no clip data read: the store's views have shapes)."""
    lengths = getattr(store, "lengths", None)
    if lengths is not None and len(lengths) == len(store):
        return np.asarray(lengths, dtype=np.int64)[indices]
    return np.array([np.asarray(store[int(i)]).shape[-1] for i in indices], dtype=np.int64)


def nbytes_of(store, indices: np.ndarray, n_mels: int) -> int:
    """Bytes the clips ``indices`` of ``store`` take as float16 on the device."""
    return int(clip_frames(store, np.unique(indices)).sum()) * CHANNELS * n_mels * 2


def use_resident(value, device: torch.device, nbytes: int) -> bool:
    """Whether the fold's clips go on ``device``: ``loader.resident`` true, false, or auto (CUDA, and they fit)."""
    choice = resident_choice(value)
    if choice != "auto":
        return choice == "true"
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= AUTO_SHARE * free


class ResidentStore:
    """Clips ``indices`` of ``store`` on ``device`` (in the store's dtype, float16 for the cache); :meth:`slot`
    maps a store index to its place here."""

    def __init__(self, store, indices: np.ndarray, device: torch.device):
        keep = np.unique(np.asarray(indices, dtype=np.int64))
        clips = [np.asarray(store[int(i)]) for i in keep]
        dtype = np.result_type(*{c.dtype for c in clips}) if clips else np.float16  # float16: the cache's
        self.n_mels = int(clips[0].shape[1]) if clips else 0
        lengths = np.array([c.shape[-1] for c in clips], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths * CHANNELS * self.n_mels)[:-1]]).astype(np.int64)
        flat = np.concatenate([c.reshape(-1).astype(dtype, copy=False) for c in clips]) if clips else np.zeros(0, dtype)
        floor = np.array([c[0].astype(np.float32).min() if c.size else 0.0 for c in clips], dtype=np.float32)
        self.device = torch.device(device)
        self.data = torch.from_numpy(flat).to(self.device)
        self.offsets = torch.from_numpy(offsets).to(self.device)
        self.lengths = torch.from_numpy(lengths).to(self.device)
        self.floor = torch.from_numpy(floor).to(self.device)
        self._slot = np.full(int(keep.max()) + 1 if len(keep) else 0, -1, dtype=np.int64)
        self._slot[keep] = np.arange(len(keep))

    @property
    def nbytes(self) -> int:
        return int(self.data.numel() * self.data.element_size())

    def slot(self, index: np.ndarray) -> np.ndarray:
        """Places here of the store indices ``index``."""
        return self._slot[np.asarray(index, dtype=np.int64)]

    def crops(self, slots: torch.Tensor, concat: torch.Tensor, mask: torch.Tensor, shift: torch.Tensor,
              length: int, mask_value: float, pad_value: float | None) -> torch.Tensor:
        """(B, 3, F, ``length``) float32 crops of the clips ``slots`` (B,): with ``concat`` (B,) a masked copy
        appended (``mask`` (B, 4): w, t0, h, f0), then the frames from ``shift`` (B,) on, out-of-clip frames
        padded with ``pad_value`` (None: the clip's silence floor in channel 0, zero in the others)."""
        f, dev = self.n_mels, self.device
        n = self.lengths[slots][:, None]                                    # (B, 1)
        cat = concat.bool()[:, None]
        k = torch.arange(length, device=dev)[None, :] + shift[:, None]      # (B, L) frame of the (concatenated) clip
        valid = (k >= 0) & (k < torch.where(cat, 2 * n, n))
        second = cat & (k >= n)                                             # in the masked copy
        src = torch.where(second, k - n, k).clamp(min=0)
        src = torch.minimum(src, n - 1)
        w, t0, h, f0 = (mask[:, i : i + 1] for i in range(4))
        tk = src - t0
        time_hit = second & (tk >= 0) & (tk < w)                            # (B, L)
        band = torch.arange(f, device=dev)[None, :]
        freq_hit = (band >= f0) & (band < f0 + h)                           # (B, F)
        hit = time_hit[:, None, :] | (second[:, None, :] & freq_hit[:, :, None])  # (B, F, L)
        chan = torch.arange(CHANNELS, device=dev)[None, :, None, None]
        rows = band[:, None, :, None]
        index = (self.offsets[slots][:, None, None, None] + (chan * f + rows) * n[:, :, None, None] + src[:, None, None, :])
        x = self.data[index].float()                                        # (B, 3, F, L)
        x = torch.where(hit[:, None], float(mask_value), x)  # (Python scalars: no host-to-device copy)
        if pad_value is None:
            masked = concat.bool() & ((w[:, 0] > 0) | (h[:, 0] > 0))
            floor = self.floor[slots]
            floor = torch.where(masked, floor.clamp(max=float(mask_value)), floor)
            pad = torch.zeros(len(slots), CHANNELS, 1, 1, device=dev)
            pad[:, 0, 0, 0] = floor
        else:
            return torch.where(valid[:, None, None, :], x, float(pad_value))
        return torch.where(valid[:, None, None, :], x, pad)
