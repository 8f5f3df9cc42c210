"""Rendering one multi-label clip: each source rendered as the single-label demo renders a clip of its label
(:func:`~fstag.data.demo.render.render_clip`: its own notes, room, background noise), then the sources
overlapping in time or in sequence, each at its own level (:func:`render_mixture`)."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from fstag.data.demo.multilabel_settings import MultilabelDemoSettings
from fstag.data.demo.render import render_clip

ARRANGEMENTS = ("single", "overlap", "sequence")


def render_mixture(sources: Sequence[str], clip_seed: Iterable[int],
                   cfg: MultilabelDemoSettings) -> tuple[np.ndarray, dict]:
    """Mix one clip of ``sources`` (distinct labels, in order); returns float samples in [-1, 1] and what
    was drawn.

    Source ``k`` is ``render_clip(sources[k], (*clip_seed, k + 1))``, normalised to its peak and scaled by
    a gain of 0 .. ``-level_db`` dB. With ``overlap`` (drawn with probability ``overlap_share``) every source
    starts at a random point of the longest source's span, so they sound at once; with ``sequence`` they
    follow one another. The mixture is then scaled to a random peak of -20 .. -1 dBFS. The mixing draws come
    from ``(*clip_seed, 0)``, so the result depends only on ``sources``, ``clip_seed`` and ``cfg``.
    """
    seed = [int(x) for x in clip_seed]
    rng = np.random.default_rng([*seed, 0])
    single = cfg.source_settings()
    parts, infos = [], []
    for k, label in enumerate(sources):
        audio, info = render_clip(label, (*seed, k + 1), single)
        parts.append(audio / (np.max(np.abs(audio)) + 1e-12))
        infos.append(info)
    if len(parts) == 1:
        arrangement = "single"
    else:
        arrangement = "overlap" if rng.random() < cfg.overlap_share else "sequence"
    lengths = [len(p) for p in parts]
    if arrangement == "sequence":
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        total = int(sum(lengths))
    else:
        total = max(lengths)
        offsets = [int(rng.integers(0, total - n + 1)) for n in lengths]
    gains_db = [-float(rng.uniform(0.0, cfg.level_db)) for _ in parts]
    x = np.zeros(total)
    for part, offset, gain in zip(parts, offsets, gains_db):
        x[offset : offset + len(part)] += part * 10 ** (gain / 20)
    peak_dbfs = float(rng.uniform(-20.0, -1.0))
    x *= 10 ** (peak_dbfs / 20) / (np.max(np.abs(x)) + 1e-12)
    sr = cfg.sample_rate
    info = {
        "arrangement": arrangement, "duration": round(total / sr, 4), "peak_dbfs": round(peak_dbfs, 2),
        "offsets_s": ";".join(f"{o / sr:.3f}" for o in offsets),
        "gains_db": ";".join(f"{g:.2f}" for g in gains_db),
        "programs": ";".join(str(i["program"]) for i in infos),
        "styles": ";".join(str(i["style"]) for i in infos),
        "source_durations": ";".join(f"{i['duration']:.3f}" for i in infos),
    }
    return x, info
