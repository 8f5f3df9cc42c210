"""Test-time augmentation: k crops per clip through a model, combined by geometric mean.

Pass 0 is the run's own training-time transform (the masking augmentation for ``aug=specmask_concat``,
the first window otherwise); passes 1..k-1 are random crops. Every crop comes from a generator seeded by
(seed, pass, clip), so predictions do not depend on batch size, worker count or order.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fstag.augment import crop_or_pad, specmask_concat
from fstag.metrics import geometric_mean


def tta_crop(x: torch.Tensor, pass_idx: int, clip_idx: int, length: int, aug: Mapping[str, Any], pad_value: float | None, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + pass_idx * 7_919 + clip_idx) % (2**63 - 1))
    if pass_idx == 0:
        if aug.get("specmask_concat"):
            x = specmask_concat(x, length, int(aug["time_mask"]), int(aug["freq_mask"]), float(aug["mask_value"]), g)
        return crop_or_pad(x, length, random=False, pad_value=pad_value)
    return crop_or_pad(x, length, random=True, pad_value=pad_value, generator=g)


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    clips: Sequence[np.ndarray | None],
    *,
    crop_frames: int,
    aug: Mapping[str, Any],
    pad_value: float | None = 0.0,
    n_passes: int = 5,
    seed: int = 1234,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
) -> np.ndarray:
    """(N, C) probabilities: geometric mean over ``n_passes`` TTA crops of softmax outputs.

    ``clips[i]`` is a (3, F, T) feature array, or None for a clip that could not be read: its row is
    uniform (1/C), so it still gets a prediction and callers flag it.
    """
    model.eval()
    device = torch.device(device)
    present = [i for i, c in enumerate(clips) if c is not None]
    pass_probs: list[np.ndarray] = []
    for p in range(max(1, int(n_passes))):
        chunks = []
        for s in range(0, len(present), batch_size):
            idx = present[s : s + batch_size]
            xb = torch.stack(
                [
                    tta_crop(torch.from_numpy(np.asarray(clips[i], dtype=np.float32)), p, i, crop_frames, aug, pad_value, seed)
                    for i in idx
                ]
            ).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(xb)
            chunks.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        pass_probs.append(np.concatenate(chunks) if chunks else np.zeros((0, num_classes or 0)))
    c = pass_probs[0].shape[1] if present else int(num_classes or 0)
    out = np.full((len(clips), c), 1.0 / max(c, 1))
    if present:
        out[present] = geometric_mean(np.stack(pass_probs), axis=0)
    return out.astype(np.float32)
