"""Playing styles: the note patterns a clip plays (held notes, scales, arpeggios, melodies, chords,
strums, wind chimes, drum hits, rhythms and rolls, phone rings, applause, gunfire), keyed in ``STYLES``,
and the scales, chords, velocities and onsets they draw."""

from __future__ import annotations

from typing import Callable

import numpy as np

from fstag.data.demo.playing import Note, Playing
from fstag.data.demo.voices import Voice

_SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "pentatonic": (0, 2, 4, 7, 9),
}
_CHORDS = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 4, 7, 10), (0, 5, 7))


def _velocity(rng: np.random.Generator, base: int, spread: int = 12) -> int:
    return int(np.clip(base + rng.integers(-spread, spread + 1), 1, 127))


def _scale_keys(rng: np.random.Generator, voice: Voice) -> list[int]:
    """Every key of a random scale (random root and mode) inside the voice's range."""
    lo, hi = voice.key_range
    root = int(rng.integers(0, 12))
    steps = _SCALES[rng.choice(list(_SCALES))]
    return [k for k in range(lo, hi + 1) if (k - root) % 12 in steps]


def _chord_keys(rng: np.random.Generator, voice: Voice) -> list[int]:
    """A chord (triad or seventh) whose notes all lie in the voice's range."""
    lo, hi = voice.key_range
    shape = _CHORDS[rng.integers(len(_CHORDS))]
    root = int(rng.integers(lo, max(lo + 1, hi - shape[-1] + 1)))
    return [root + s for s in shape if root + s <= hi]


def _onsets(length: float, step: float) -> np.ndarray:
    """Regular onsets every ``step`` seconds from 0 while inside ``length`` (always at least one)."""
    return np.arange(0.0, length, step) if step < length else np.zeros(1)


def _step(rng: np.random.Generator, fast: float, slow: float) -> float:
    """A note spacing drawn log-uniformly between ``fast`` and ``slow`` seconds."""
    return float(np.exp(rng.uniform(np.log(fast), np.log(slow))))


def _sequence(rng: np.random.Generator, keys: list[int], length: float, base: int, legato: float,
              play: Playing) -> list[Note]:
    """Play ``keys`` in order (cycling) at a regular step, each note lasting ``legato`` steps."""
    step = _step(rng, *play.step)
    return [
        Note(t, step * legato, keys[i % len(keys)], _velocity(rng, base))
        for i, t in enumerate(_onsets(length, step))
    ]


def _style_note(rng, voice, length, base, play):
    """Single held notes, one after another, with short gaps."""
    notes, t = [], 0.0
    lo, hi = voice.key_range
    while t < length:
        duration = float(rng.uniform(*play.held))
        notes.append(Note(t, duration, int(rng.integers(lo, hi + 1)), _velocity(rng, base)))
        t += duration + float(rng.uniform(*play.held_gap))
    return notes


def _style_scale(rng, voice, length, base, play):
    """Runs up and down a scale."""
    keys = _scale_keys(rng, voice)
    start = int(rng.integers(0, max(1, len(keys) - 8)))
    run = keys[start : start + int(rng.integers(5, 16))]
    return _sequence(rng, run + run[-2:0:-1], length, base, play.legato, play)


def _style_arpeggio(rng, voice, length, base, play):
    """A broken chord, up or up-and-down, over one or two octaves; ringing voices let notes overlap."""
    chord = _chord_keys(rng, voice)
    hi = voice.key_range[1]
    keys = chord + [k + 12 for k in chord if k + 12 <= hi] * int(rng.integers(0, 2))
    if rng.random() < 0.5:
        keys = keys + keys[-2:0:-1]
    legato = float(rng.uniform(*play.ringing_legato)) if voice.ringing else play.legato
    return _sequence(rng, keys, length, base, legato, play)


def _style_melody(rng, voice, length, base, play):
    """A random walk on a scale, with notes of one, two or three steps."""
    keys = _scale_keys(rng, voice)
    step = _step(rng, *play.melody_step)
    pos, t, notes = int(rng.integers(len(keys))), 0.0, []
    while t < length:
        duration = step * int(rng.choice([1, 1, 2, 2, 3]))
        notes.append(Note(t, duration * play.legato, keys[pos], _velocity(rng, base)))
        pos = int(np.clip(pos + rng.choice([-3, -2, -1, -1, 1, 1, 2, 3]), 0, len(keys) - 1))
        t += duration
    return notes


def _style_chord(rng, voice, length, base, play):
    """Block chords, each held for half a second to two seconds."""
    notes, t = [], 0.0
    while t < length:
        duration = float(rng.uniform(*play.chord_hold))
        v = _velocity(rng, base)
        notes += [Note(t, duration * play.legato, k, _velocity(rng, v, 4)) for k in _chord_keys(rng, voice)]
        t += duration
    return notes


def _style_strum(rng, voice, length, base, play):
    """Guitar strums: the chord's strings struck a few milliseconds apart, down or up."""
    notes, t = [], 0.0
    while t < length:
        duration = float(rng.uniform(*play.strum_hold))
        chord = _chord_keys(rng, voice)
        chord = chord + [k + 12 for k in chord if k + 12 <= voice.key_range[1]]
        if rng.random() < 0.4:
            chord = chord[::-1]
        gap, v = float(rng.uniform(*play.strum_spread)), _velocity(rng, base)
        notes += [Note(t + j * gap, duration, k, _velocity(rng, v, 6)) for j, k in enumerate(chord)]
        t += duration
    return notes


def _style_wind(rng, voice, length, base, play):
    """Wind chimes: overlapping bell strikes at random times on a pentatonic set."""
    lo, hi = voice.key_range
    root = int(rng.integers(0, 12))
    keys = [k for k in range(lo, hi + 1) if (k - root) % 12 in _SCALES["pentatonic"]]
    rate = float(rng.uniform(*play.wind_rate))
    times = np.cumsum(rng.exponential(1.0 / rate, size=int(length * rate) + 2))
    times = np.concatenate([[0.0], times[times < length]])
    return [Note(float(t), float(rng.uniform(1.0, 3.0)), keys[rng.integers(len(keys))], _velocity(rng, base, 25))
            for t in times]


def _style_hits(rng, voice, length, base, play):
    """A few isolated strokes with irregular gaps."""
    notes, t = [], 0.0
    key = int(rng.choice(voice.drum_keys))
    while t < length:
        notes.append(Note(t, 0.2, key, _velocity(rng, base, 20)))
        t += float(rng.uniform(*play.hit_gap))
    return notes


def _style_rhythm(rng, voice, length, base, play):
    """A repeating one-bar pattern on an 8th or 16th grid, accents on the beats."""
    bpm = float(rng.uniform(*play.bpm))
    per_beat = int(rng.choice([2, 4]))
    grid = 60.0 / bpm / per_beat
    pattern = rng.random(4 * per_beat) < rng.uniform(0.3, 0.9)
    pattern[0] = True
    keys = rng.choice(voice.drum_keys, size=len(pattern))
    notes = []
    for i, t in enumerate(_onsets(length, grid)):
        j = i % len(pattern)
        if pattern[j]:
            accent = 15 if j % per_beat == 0 else -10
            notes.append(Note(float(t), grid, int(keys[j]), _velocity(rng, base + accent, 8)))
    return notes


def _style_roll(rng, voice, length, base, play):
    """A roll: fast repeated strokes that swell in loudness, then stop."""
    key = int(rng.choice(voice.drum_keys))
    span = length * float(rng.uniform(0.5, 1.0))
    rate = float(rng.uniform(*play.roll_rate))
    times = _onsets(span, 1.0 / rate)
    swell = np.linspace(-30, 15, len(times))
    return [Note(float(t), 1.0 / rate, key, _velocity(rng, base + int(s), 6)) for t, s in zip(times, swell)]


def _style_ring(rng, voice, length, base, play):
    """Telephone rings: ring-pause cadence (single or double ring), one key per clip."""
    key = int(rng.integers(voice.key_range[0], voice.key_range[1] + 1))
    double = rng.random() < 0.5
    on, pause = (0.4, 0.2) if double else (float(rng.uniform(*play.ring_on)), 0.0)
    off = float(rng.uniform(*play.ring_off))
    notes, t = [], 0.0
    while t < length:
        notes.append(Note(t, on, key, _velocity(rng, base, 3)))
        if double:
            notes.append(Note(t + on + pause, on, key, _velocity(rng, base, 3)))
        t += (2 * on + pause if double else on) + off
    return notes


def _style_trill(rng, voice, length, base, play):
    """An electronic telephone ringer: groups of very short pulses (a trill), pauses between groups."""
    key = int(rng.integers(voice.key_range[0], voice.key_range[1] + 1))
    pulse = float(rng.uniform(0.025, 0.06))
    pulses = int(rng.integers(6, 25))
    notes, t = [], 0.0
    while t < length:
        notes += [Note(t + 2 * i * pulse, pulse, key, _velocity(rng, base, 3)) for i in range(pulses)]
        t += 2 * pulses * pulse + float(rng.uniform(*play.ring_off))
    return notes


def _style_crowd(rng, voice, length, base, play):
    """Applause: several overlapping clapping layers that start within a moment and last to the end."""
    lo, hi = voice.key_range
    layers = int(rng.integers(*play.crowd_layers))
    starts = np.sort(rng.uniform(0.0, min(0.4, length / 2), layers))
    starts[0] = 0.0
    return [Note(float(s), length - float(s), int(rng.integers(lo, hi + 1)), _velocity(rng, base, 15))
            for s in starts]


def _style_shots(rng, voice, length, base, play):
    """Single gunshots separated by pauses."""
    lo, hi = voice.key_range
    notes, t = [], 0.0
    while t < length:
        notes.append(Note(t, 0.5, int(rng.integers(lo, hi + 1)), _velocity(rng, base, 10)))
        t += float(rng.uniform(*play.shot_gap))
    return notes


def _style_burst(rng, voice, length, base, play):
    """Automatic gunfire: bursts of rapid shots with short pauses between."""
    key = int(rng.integers(voice.key_range[0], voice.key_range[1] + 1))
    rate = float(rng.uniform(*play.burst_rate))
    notes, t = [], 0.0
    while t < length:
        shots = int(rng.integers(3, 16))
        notes += [Note(t + i / rate, 1.0 / rate, key, _velocity(rng, base, 10)) for i in range(shots)]
        t += (shots - 1) / rate + float(rng.uniform(*play.burst_pause))
    return notes


STYLES: dict[str, Callable[[np.random.Generator, Voice, float, int, Playing], list[Note]]] = {
    "note": _style_note, "scale": _style_scale, "arpeggio": _style_arpeggio, "melody": _style_melody,
    "chord": _style_chord, "strum": _style_strum, "wind": _style_wind, "hits": _style_hits,
    "rhythm": _style_rhythm, "roll": _style_roll, "ring": _style_ring, "trill": _style_trill,
    "crowd": _style_crowd, "shots": _style_shots, "burst": _style_burst,
}
