"""Rendering one clip: synthesis on the soundfont, its duration, and the whole chain of
:func:`render_clip` (notes -> synthesis -> margins -> room -> microphone -> noise -> level)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from scipy.signal import sosfilt
from scipy.special import ndtr, ndtri

from fstag.data.demo.effects import (
    SHIFTED_NOISES,
    SHIFTED_ROOMS,
    SHIFTED_SNR_DB,
    _fade,
    _reverb,
    add_room,
    colored_noise,
    microphone_eq,
)
from fstag.data.demo.playing import (
    SHIFTED_PLAYING,
    SHIFTED_VELOCITY,
    TRAIN_PLAYING,
    Note,
)
from fstag.data.demo.settings import DemoSettings
from fstag.data.demo.styles import STYLES
from fstag.data.demo.voices import VOICES, shifted_voice, soundfont_path

_SOUNDFONT_BYTES: bytes | None = None


def _soundfont_bytes() -> bytes:
    """The soundfont's bytes, read once per process."""
    global _SOUNDFONT_BYTES
    if _SOUNDFONT_BYTES is None:
        _SOUNDFONT_BYTES = Path(soundfont_path()).read_bytes()
    return _SOUNDFONT_BYTES


def synthesize(notes: Iterable[Note], program: int, drum: bool, n_samples: int, sample_rate: int,
               tuning: float = 0.0) -> np.ndarray:
    """Render ``notes`` on one GM program (or drum kit) into ``n_samples`` mono samples (float64),
    the whole channel detuned by ``tuning`` semitones."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(_soundfont_bytes())
    synth.program_select(0, sfid, 128 if drum else 0, program, is_drums=drum)
    if tuning:
        synth.set_tuning(0, tuning)
    events = []  # (sample, order, key, velocity): note-offs (order 0) before note-ons at the same sample
    for n in notes:
        start = int(round(n.start * sample_rate))
        if start < n_samples:
            events.append((start, 1, n.key, n.velocity))
            events.append((start + max(1, int(round(n.duration * sample_rate))), 0, n.key, 0))
    events.sort()
    chunks, pos = [], 0
    for sample, is_on, key, velocity in events:
        sample = min(sample, n_samples)
        if sample > pos:
            chunks.append(np.frombuffer(synth.generate(sample - pos), dtype=np.float32))
            pos = sample
        if is_on:
            synth.noteon(0, key, velocity)
        else:
            synth.noteoff(0, key)
    if n_samples > pos:
        chunks.append(np.frombuffer(synth.generate(n_samples - pos), dtype=np.float32))
    stereo = np.concatenate(chunks).reshape(-1, 2)
    return stereo.mean(axis=1, dtype=np.float64)


def sample_duration(rng: np.random.Generator, settings: DemoSettings) -> float:
    """A clip length: log-normal around ``median_duration``, truncated to [min, max] by inverse CDF."""
    mu = np.log(np.clip(settings.median_duration, settings.min_duration, settings.max_duration))
    lo = ndtr((np.log(settings.min_duration) - mu) / settings.duration_sigma)
    hi = ndtr((np.log(settings.max_duration) - mu) / settings.duration_sigma)
    z = ndtri(lo + rng.uniform() * (hi - lo))
    return float(np.clip(np.exp(mu + settings.duration_sigma * z), settings.min_duration, settings.max_duration))


def render_clip(label: str, clip_seed: Iterable[int], settings: DemoSettings,
                shifted: bool = False) -> tuple[np.ndarray, dict]:
    """Render one clip of ``label``; returns float samples in [-1, 1] and what was drawn.

    ``shifted``: record it the shifted split's way (see the module docstring): a source of
    ``SHIFTED_VOICES``, soft or hard playing, ``SHIFTED_PLAYING``, a hall or a dry close microphone, a
    microphone EQ and one of ``SHIFTED_NOISES`` at ``SHIFTED_SNR_DB``. The result depends only on
    ``label``, ``clip_seed``, ``settings`` and ``shifted``.
    """
    rng = np.random.default_rng(list(clip_seed))
    sr = settings.sample_rate
    n = int(np.clip(round(sample_duration(rng, settings) * sr),
                    np.ceil(settings.min_duration * sr), np.floor(settings.max_duration * sr)))
    margins = rng.uniform(0.0, settings.max_margin, 2) * sr
    margins *= min(1.0, 0.4 * n / max(margins.sum(), 1.0))  # the sound keeps at least 60% of the clip
    lead, active = int(margins[0]), n - int(margins[0]) - int(margins[1])

    extra: dict = {}
    if shifted:
        voice, tuning, source = shifted_voice(rng, label)
        program = source.program
        style = str(rng.choice(voice.styles))
        playing = str(rng.choice(list(SHIFTED_PLAYING)))
        dynamics = str(rng.choice(list(SHIFTED_VELOCITY)))
        lo, hi = SHIFTED_VELOCITY[dynamics]
        base = int(rng.integers(lo, hi + 1))
        play = SHIFTED_PLAYING[playing]
        extra = {"keys": (" ".join(map(str, voice.drum_keys)) if voice.is_drum else "{}-{}".format(*voice.key_range)),
                 "tuning": round(tuning, 2), "playing": playing, "dynamics": dynamics, "velocity": base}
    else:  # the draws and their order are those of every earlier version: train and test clips stay the same
        voice, tuning, play = VOICES[label], 0.0, TRAIN_PLAYING
        style = str(rng.choice(voice.styles))
        program = int(rng.choice(voice.programs))
        base = int(rng.integers(45, 121))
    notes = STYLES[style](rng, voice, active / sr, base, play)
    sound = synthesize(notes, program, voice.is_drum, n - lead, sr, tuning)
    release = min(int(0.3 * sr), len(sound) - active)  # let the notes ring out briefly, then silence
    sound[active : active + release] *= _fade(release)
    sound[active + release :] = 0.0

    x = np.zeros(n)
    x[lead:] = sound
    span = slice(lead, lead + active + release)
    if shifted:
        room = str(rng.choice(list(SHIFTED_ROOMS)))
        (rt60_lo, rt60_hi), (wet_lo, wet_hi) = SHIFTED_ROOMS[room]
        rt60, wet = float(rng.uniform(rt60_lo, rt60_hi)), float(rng.uniform(wet_lo, wet_hi))
        x = x + wet * _reverb(rng, x, sr, rt60)
        sos, mic = microphone_eq(rng, sr)
        x = sosfilt(sos, x)  # causal: the leading silence stays silent
        noise_kind = str(rng.choice(list(SHIFTED_NOISES)))
        snr = float(rng.uniform(*SHIFTED_SNR_DB))
        signal_rms = np.sqrt(np.mean(x[span] ** 2)) + 1e-12
        noise = SHIFTED_NOISES[noise_kind](rng, span.stop - span.start, sr) * signal_rms * 10 ** (-snr / 20)
        extra.update({"room": room, "rt60": round(rt60, 2), "wet": round(wet, 2), **mic, "noise": noise_kind})
    else:
        x = add_room(rng, x, sr)
        snr = float(rng.uniform(*settings.snr_db))
        signal_rms = np.sqrt(np.mean(x[span] ** 2)) + 1e-12
        noise = colored_noise(rng, span.stop - span.start, sr) * signal_rms * 10 ** (-snr / 20)
    edge = min(int(0.01 * sr), len(noise) // 2)
    if edge:
        noise[:edge] *= _fade(edge)[::-1]
        noise[-edge:] *= _fade(edge)
    x[span] += noise
    peak_dbfs = float(rng.uniform(-20.0, -1.0))
    x *= 10 ** (peak_dbfs / 20) / (np.max(np.abs(x)) + 1e-12)
    info = {"style": style, "program": program, "duration": n / sr, "snr_db": round(snr, 2),
            "peak_dbfs": round(peak_dbfs, 2), **extra}
    return x, info
