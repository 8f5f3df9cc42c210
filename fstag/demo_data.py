"""Built-in demo data set: real instrument recordings in the FSDKaggle2018 (Kaggle) layout.

Every clip is rendered in-process with tinysoundfont from the sampled General MIDI soundfont
``TimGM6mb.sf2`` that pretty_midi ships: a FSDKaggle2018 label (Cello, Snare_drum, Telephone, ...) is
voiced by its GM program or drum key, played in a style that suits it (held notes, scales, arpeggios,
melodies, chords, strums, drum rhythms, phone rings, gunfire bursts, applause), then placed between
silent margins, put in a small room (exponentially decaying noise impulse response), mixed with
pink-to-brown background noise and given a random level.

The shifted test split is the demo's field test: the same labels recorded the way no train clip is.
Each label is voiced by other General MIDI programs of its family (bank-128 drum kits other than the
train kits; the few labels without a family member play in registers outside the train key range),
played very softly or very hard, much faster and shorter or much slower and longer, in a large hall
(RT60 1-2.5 s, wet) or bone dry, through a random microphone EQ (high-pass, phone-like low-pass, one
or two peaks) and with white noise, mains hum or babble at 5-25 dB SNR (``SHIFTED_VOICES``,
``SHIFTED_PLAYING``, :func:`render_clip` with ``shifted=True``). A model that learned the instruments
rather than the recordings does well on it. It has its own seed stream: the train and test clips are
byte-identical with or without it.

Output (``root``)::

    audio_train/<8 hex>.wav   audio_test/<8 hex>.wav     44.1 kHz, 16-bit PCM, mono
    audio_test_shifted/<8 hex>.wav                       the shifted test split (SHIFTED_DIR)
    train.csv                  fname,label,manually_verified  (~40% unverified, ~30% of those mislabelled)
    sample_submission.csv      fname,label                     (placeholder "A B C" labels)
    test_post_competition.csv  fname,label,usage               (Public / Private / Ignored, as the release)
    test_shifted.csv           fname,label                     (true labels, all scored; SHIFTED_LABELS_CSV)
    .demo_truth.csv            true label and rendering details of every clip (never read by the pipeline)

The shifted files are written only when ``n_shifted > 0``. Every clip depends only on
``(seed, split, index)``, so the output is byte-identical for a seed whatever the number of worker
processes. The folder is built beside ``root`` and moved into place at the end, so an interrupted run
never leaves a ``train.csv`` behind.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.fft import next_fast_len
from scipy.signal import butter, oaconvolve, sosfilt
from scipy.special import ndtr, ndtri
from tqdm import tqdm

from fstag.dataset_layout import AUDIO_DIRS, SAMPLE_SUBMISSION_CSV, TRAIN_CSV

TEST_LABELS_CSV = "test_post_competition.csv"
TRUTH_CSV = ".demo_truth.csv"
SHIFTED_SPLIT = "test_shifted"  # the split's name in .demo_truth.csv
SHIFTED_DIR = "audio_test_shifted"
SHIFTED_LABELS_CSV = "test_shifted.csv"  # fname,label (true labels, every row scored)
IGNORED_LABEL = "None"  # what the FSDKaggle2018 release lists for its unscored padding clips
_TMP_MARK = ".tmp-"
_OUTPUTS = (*AUDIO_DIRS.values(), SHIFTED_DIR, SAMPLE_SUBMISSION_CSV, TEST_LABELS_CSV, SHIFTED_LABELS_CSV,
            TRUTH_CSV, TRAIN_CSV)  # train.csv last: it marks a complete data set
_SPLIT_CODES = {"train": 1, "test": 2, SHIFTED_SPLIT: 3}  # seed streams; code 0 is the plan's
_SPLIT_DIRS = {**AUDIO_DIRS, SHIFTED_SPLIT: SHIFTED_DIR}


# --------------------------------------------------------------------------------------------------
# Voices: how each label is played on the General MIDI soundfont
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """How one label is voiced: GM programs (melodic) or drum kits plus drum keys, and playing styles."""

    programs: tuple[int, ...]
    styles: tuple[str, ...]
    key_range: tuple[int, int] = (0, 0)  # melodic voices: lowest and highest MIDI key
    drum_keys: tuple[int, ...] = ()  # percussion voices: GM drum keys, played on bank 128
    ringing: bool = False  # plucked or struck: notes may ring on over the next ones

    @property
    def is_drum(self) -> bool:
        return bool(self.drum_keys)


_MELODIC = ("note", "scale", "arpeggio", "melody")
_POLY = _MELODIC + ("chord",)
_DRUM_KITS = (0, 8, 16, 32, 40)  # Standard, Room, Power, Jazz, Brush (TimGM6mb bank 128)

VOICES: dict[str, Voice] = {
    "Acoustic_guitar": Voice((24, 25), _MELODIC + ("strum",), (40, 84), ringing=True),
    "Cello": Voice((42,), _MELODIC, (36, 72)),
    "Double_bass": Voice((43, 32), _MELODIC, (28, 55)),
    "Violin_or_fiddle": Voice((40, 110), _MELODIC, (55, 96)),
    "Clarinet": Voice((71,), _MELODIC, (50, 89)),
    "Oboe": Voice((68,), _MELODIC, (58, 91)),
    "Flute": Voice((73,), _MELODIC, (60, 96)),
    "Saxophone": Voice((65, 66), _MELODIC, (46, 78)),
    "Trumpet": Voice((56,), _MELODIC, (54, 82)),
    "Harmonica": Voice((22,), _POLY, (60, 84)),
    "Glockenspiel": Voice((9,), _MELODIC, (79, 108), ringing=True),
    "Chime": Voice((14,), ("note", "arpeggio", "melody", "wind"), (60, 79), ringing=True),
    "Electric_piano": Voice((4, 5), _POLY, (36, 96), ringing=True),
    "Bass_drum": Voice(_DRUM_KITS, ("hits", "rhythm"), drum_keys=(35, 36)),
    "Snare_drum": Voice(_DRUM_KITS, ("hits", "rhythm", "roll"), drum_keys=(38, 40)),
    "Hi-hat": Voice(_DRUM_KITS, ("hits", "rhythm"), drum_keys=(42, 44, 46)),
    "Cowbell": Voice(_DRUM_KITS, ("hits", "rhythm"), drum_keys=(56,)),
    "Tambourine": Voice(_DRUM_KITS, ("hits", "rhythm", "roll"), drum_keys=(54,)),
    "Telephone": Voice((124,), ("ring",), (58, 74)),
    "Applause": Voice((126,), ("crowd",), (50, 74)),
    "Gunshot_or_gunfire": Voice((127,), ("shots", "burst"), (36, 66)),
}
DEFAULT_LABELS: tuple[str, ...] = tuple(VOICES)


@dataclass(frozen=True)
class Source:
    """One way the shifted split voices a label: a GM program (or bank-128 drum kit) and what it plays."""

    program: int
    key_range: tuple[int, int] = (0, 0)  # melodic sources: lowest and highest MIDI key
    drum_keys: tuple[int, ...] = ()  # drum sources: GM drum keys on this kit
    detune: tuple[float, float] = (0.0, 0.0)  # drum sources: |tuning| in semitones, random sign (drum size)


@dataclass(frozen=True)
class ShiftedVoice:
    """How the shifted split voices a label: sources the train split never plays, and its styles
    (None: the label's train styles)."""

    sources: tuple[Source, ...]
    styles: tuple[str, ...] | None = None


def _kits(*kits: int, keys: tuple[int, ...], detune: tuple[float, float] = (0.0, 2.0)) -> tuple[Source, ...]:
    return tuple(Source(kit, drum_keys=keys, detune=detune) for kit in kits)


# Checked against TimGM6mb.sf2 (its preset -> instrument -> sample tables, and renderings): every source
# below exists (tinysoundfont silently falls back to kit 0 for a missing bank-128 preset) and plays other
# samples than the label's train programs, except where a label has no other family member: then the
# train program plays in registers outside the train key range (Clarinet, Harmonica, Telephone, Applause,
# Gunshot) or, for the tambourine (one sample in every kit), detuned by 3-6 semitones.
SHIFTED_VOICES: dict[str, ShiftedVoice] = {
    # jazz (archtop) guitar, clean electric guitar
    "Acoustic_guitar": ShiftedVoice((Source(26, (40, 84)), Source(27, (40, 84)))),
    # viola (TimGM6mb: violin samples) and string ensemble, in the cello register
    "Cello": ShiftedVoice((Source(41, (36, 72)), Source(48, (36, 72)))),
    # fretless and fingered bass
    "Double_bass": ShiftedVoice((Source(35, (28, 55)), Source(33, (28, 55)))),
    # pizzicato violin, tremolo strings
    "Violin_or_fiddle": ShiftedVoice((Source(45, (55, 96)), Source(44, (55, 96)))),
    # bass-clarinet register below the train range, altissimo above it
    "Clarinet": ShiftedVoice((Source(71, (38, 49)), Source(71, (90, 96)))),
    "Oboe": ShiftedVoice((Source(69, (52, 84)),)),  # English horn (cor anglais)
    "Flute": ShiftedVoice((Source(72, (74, 102)), Source(74, (60, 96)), Source(75, (60, 91)))),  # piccolo, recorder, pan
    "Saxophone": ShiftedVoice((Source(64, (56, 87)), Source(67, (36, 69)))),  # soprano, baritone
    "Trumpet": ShiftedVoice((Source(59, (52, 82)),)),  # harmon-muted trumpet
    "Harmonica": ShiftedVoice((Source(22, (48, 59)), Source(22, (85, 96)))),  # chromatic harmonica's low and top
    "Glockenspiel": ShiftedVoice((Source(8, (72, 108)), Source(10, (72, 108)))),  # celesta, music box
    "Chime": ShiftedVoice((Source(112, (60, 96)),)),  # tinkle bell (carillon sample)
    "Electric_piano": ShiftedVoice((Source(2, (36, 96)), Source(7, (36, 84)))),  # electric grand (CP-70), clavinet
    # kick: Electronic, TR-808 and Orchestra kits (key 35 is one sample in every kit)
    "Bass_drum": ShiftedVoice(_kits(24, 25, 48, keys=(36,))),
    # Electronic kit's E-snare (38) and tuned snare (40), TR-808 snare
    "Snare_drum": ShiftedVoice((*_kits(24, keys=(38, 40)), *_kits(25, keys=(38,)))),
    "Hi-hat": ShiftedVoice(_kits(25, keys=(42, 44, 46), detune=(0.0, 3.0))),  # TR-808 hats
    "Cowbell": ShiftedVoice(_kits(25, keys=(56,), detune=(0.0, 3.0))),  # TR-808 cowbell layer
    "Tambourine": ShiftedVoice(_kits(0, keys=(54,), detune=(3.0, 6.0))),  # a smaller or larger tambourine
    # no family: registers outside the train ranges, other cadences, densities and rates
    "Telephone": ShiftedVoice((Source(124, (40, 57)), Source(124, (75, 90))), ("ring", "trill")),
    "Applause": ShiftedVoice((Source(126, (36, 49)), Source(126, (75, 88))), ("crowd",)),
    "Gunshot_or_gunfire": ShiftedVoice((Source(127, (24, 35)), Source(127, (67, 80))), ("shots", "burst")),
}


def shifted_voice(rng: np.random.Generator, label: str) -> tuple[Voice, float, Source]:
    """Draw a shifted-split source of ``label``; returns it as a one-program :class:`Voice`, the drum
    tuning in semitones and the source."""
    base, shifted = VOICES[label], SHIFTED_VOICES[label]
    source = shifted.sources[int(rng.integers(len(shifted.sources)))]
    voice = Voice((source.program,), shifted.styles or base.styles, source.key_range, source.drum_keys,
                  base.ringing)
    lo, hi = source.detune
    tuning = float(rng.uniform(lo, hi)) * (1 if rng.random() < 0.5 else -1) if hi > 0 else 0.0
    return voice, tuning, source


def soundfont_path() -> str:
    """Path of the General MIDI soundfont shipped inside the pretty_midi package."""
    import pretty_midi

    return os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSettings:
    """Generator settings; the keys of the ``demo:`` block of conf/data/demo.yaml.

    The defaults (~29 training clips per label, 180 test clips) keep the whole demo job (generation,
    features, a tiny CNN over 2 folds, predictions) near ten minutes on 2 CPU cores.
    """

    n_train: int = 600
    n_test: int = 180
    n_shifted: int = 168  # shifted test clips (8 per label for 21 labels), balanced; 0: no shifted split
    seed: int = 0
    labels: tuple[str, ...] | None = None  # None: every label of DEFAULT_LABELS
    sample_rate: int = 44100
    min_duration: float = 0.3  # seconds, whole file
    max_duration: float = 30.0
    median_duration: float = 2.5  # durations are log-normal, truncated to [min, max]: skewed short
    duration_sigma: float = 0.9
    max_margin: float = 1.0  # silence before and after the sound, each up to this many seconds
    snr_db: tuple[float, float] = (15.0, 40.0)
    unverified_share: float = 0.4  # train rows with manually_verified=0
    wrong_label_share: float = 0.3  # of the unverified rows, the share listed under another label
    ignored_share: float = 0.1  # test clips in sample_submission that are not scored
    public_share: float = 1 / 3  # of the scored test clips, the share on the public leaderboard
    workers: int | None = None  # processes; None: one per available CPU core

    def __post_init__(self) -> None:
        labels = DEFAULT_LABELS if self.labels is None else tuple(str(x) for x in self.labels)
        unknown = [x for x in labels if x not in VOICES]
        if unknown:
            raise ValueError(f"demo labels {unknown} cannot be voiced; choose from {sorted(VOICES)}")
        if len(set(labels)) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"demo labels must be at least 2 distinct names, got {list(labels)}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "snr_db", tuple(float(x) for x in self.snr_db))
        if self.n_train < len(labels) or self.n_test < 1:
            raise ValueError(f"need n_train >= {len(labels)} (one clip per label) and n_test >= 1")
        if self.n_shifted < 0:
            raise ValueError(f"need n_shifted >= 0, got {self.n_shifted}")
        if not 0 < self.min_duration <= self.max_duration:
            raise ValueError(f"need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        for name in ("unverified_share", "wrong_label_share", "ignored_share", "public_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, settings: Mapping) -> "DemoSettings":
        """Build from a plain mapping (e.g. the resolved ``demo:`` block); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"unknown demo setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(settings))


# --------------------------------------------------------------------------------------------------
# Planning: which clip gets which name, label, verification flag and leaderboard usage
# --------------------------------------------------------------------------------------------------


def _unique_fnames(rng: np.random.Generator, n: int, taken: Iterable[str] = ()) -> list[str]:
    """``n`` distinct Kaggle-style names: 8 hex digits + ``.wav``, none of them in ``taken``."""
    names: list[str] = []
    seen: set[int] = {int(name[:8], 16) for name in taken}
    while len(names) < n:
        for value in rng.integers(0, 2**32, size=n - len(names), dtype=np.uint64).tolist():
            if value not in seen:
                seen.add(value)
                names.append(f"{value:08x}.wav")
    return names[:n]


def _balanced_labels(rng: np.random.Generator, labels: tuple[str, ...], n: int) -> np.ndarray:
    """``n`` labels, as even as possible over ``labels``, in random order."""
    return rng.permutation(np.resize(np.array(labels, dtype=object), n))


def _pick(rng: np.random.Generator, candidates: np.ndarray, share: float) -> np.ndarray:
    """A random subset of ``candidates`` (indices) of size ``round(share * len)``."""
    return rng.permutation(candidates)[: int(round(share * len(candidates)))]


def plan_dataset(settings: DemoSettings) -> pd.DataFrame:
    """One row per clip: split, index, fname, true label, listed label, verification, usage.

    ``label`` is what the public files list (train.csv, test_post_competition.csv, test_shifted.csv);
    ``true_label`` is what the audio holds. They differ only for the mislabelled unverified train rows
    (and for the unscored test clips, listed as ``None`` like the release). The shifted rows come from
    their own seed stream, so they leave the train and test rows unchanged.
    """
    rng = np.random.default_rng([settings.seed, 0])
    n_train, n_test = settings.n_train, settings.n_test
    fnames = _unique_fnames(rng, n_train + n_test)

    true_train = _balanced_labels(rng, settings.labels, n_train)
    listed_train = true_train.copy()
    verified = np.ones(n_train, dtype=bool)
    unverified = _pick(rng, np.arange(n_train), settings.unverified_share)
    verified[unverified] = False
    for i in _pick(rng, unverified, settings.wrong_label_share):
        others = [x for x in settings.labels if x != true_train[i]]
        listed_train[i] = others[rng.integers(len(others))]

    n_ignored = min(int(round(settings.ignored_share * n_test)), n_test - 1)
    usage = np.array(["Private"] * n_test, dtype=object)
    order = rng.permutation(n_test)
    usage[order[:n_ignored]] = "Ignored"
    scored = order[n_ignored:]
    usage[_pick(rng, scored, settings.public_share)] = "Public"
    true_test = np.empty(n_test, dtype=object)
    true_test[scored] = _balanced_labels(rng, settings.labels, len(scored))
    true_test[order[:n_ignored]] = rng.choice(np.array(settings.labels, dtype=object), n_ignored)
    listed_test = np.where(usage == "Ignored", IGNORED_LABEL, true_test)

    train = pd.DataFrame(
        {"split": "train", "index": np.arange(n_train), "fname": fnames[:n_train], "true_label": true_train,
         "label": listed_train, "manually_verified": verified.astype(int), "usage": ""}
    )
    test = pd.DataFrame(
        {"split": "test", "index": np.arange(n_test), "fname": fnames[n_train:], "true_label": true_test,
         "label": listed_test, "manually_verified": 1, "usage": usage}
    )
    parts = [train, test]
    if settings.n_shifted:
        shifted_rng = np.random.default_rng([settings.seed, 0, _SPLIT_CODES[SHIFTED_SPLIT]])
        true_shifted = _balanced_labels(shifted_rng, settings.labels, settings.n_shifted)
        parts.append(pd.DataFrame(
            {"split": SHIFTED_SPLIT, "index": np.arange(settings.n_shifted),
             "fname": _unique_fnames(shifted_rng, settings.n_shifted, taken=fnames), "true_label": true_shifted,
             "label": true_shifted, "manually_verified": 1, "usage": ""}
        ))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Composition: the notes a clip plays
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    start: float  # seconds from the start of the sound
    duration: float
    key: int
    velocity: int


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


@dataclass(frozen=True)
class Playing:
    """Tempo and note-length ranges of the styles (seconds, unless noted; ranges drawn uniformly).

    The train and test splits play with the defaults; the shifted split with one of
    ``SHIFTED_PLAYING``, whose ranges lie outside them.
    """

    step: tuple[float, float] = (0.12, 0.7)  # scales, arpeggios: note spacing (log-uniform)
    melody_step: tuple[float, float] = (0.15, 0.5)  # melodies: beat (log-uniform)
    legato: float = 0.95  # sounding length of sequenced and chord notes, in steps
    ringing_legato: tuple[float, float] = (0.9, 2.5)  # the same, arpeggios of ringing voices
    held: tuple[float, float] = (0.4, 3.0)  # "note": held-note length
    held_gap: tuple[float, float] = (0.0, 0.5)  # "note": silence between held notes
    chord_hold: tuple[float, float] = (0.5, 2.0)
    strum_hold: tuple[float, float] = (0.3, 2.0)
    strum_spread: tuple[float, float] = (0.008, 0.03)  # delay between a strum's strings
    wind_rate: tuple[float, float] = (2.0, 8.0)  # chime strikes per second
    hit_gap: tuple[float, float] = (0.15, 1.5)
    bpm: tuple[float, float] = (70, 170)  # drum rhythms
    roll_rate: tuple[float, float] = (10.0, 24.0)  # strokes per second
    ring_on: tuple[float, float] = (0.8, 2.0)  # single telephone rings
    ring_off: tuple[float, float] = (1.5, 4.0)  # pause between rings
    crowd_layers: tuple[int, int] = (2, 6)  # applause layers, upper bound exclusive
    shot_gap: tuple[float, float] = (0.3, 2.0)
    burst_rate: tuple[float, float] = (8.0, 15.0)  # shots per second in a burst
    burst_pause: tuple[float, float] = (0.3, 1.5)


TRAIN_PLAYING = Playing()
SHIFTED_PLAYING: dict[str, Playing] = {
    # much faster and shorter notes (staccato), denser crowds and gunfire, tighter rings
    "fast_staccato": Playing(
        step=(0.05, 0.11), melody_step=(0.06, 0.14), legato=0.4, ringing_legato=(0.3, 0.6), held=(0.08, 0.3),
        held_gap=(0.05, 0.3), chord_hold=(0.12, 0.45), strum_hold=(0.1, 0.28), strum_spread=(0.002, 0.007),
        wind_rate=(9.0, 16.0), hit_gap=(0.06, 0.14), bpm=(175, 240), roll_rate=(26.0, 36.0), ring_on=(0.15, 0.6),
        ring_off=(0.4, 1.2), crowd_layers=(8, 13), shot_gap=(0.08, 0.25), burst_rate=(17.0, 25.0),
        burst_pause=(0.1, 0.28)),
    # much slower and longer notes (legato), a lone clapper, sparse shots, long rings
    "slow_legato": Playing(
        step=(0.75, 1.6), melody_step=(0.55, 1.1), legato=1.0, ringing_legato=(2.6, 4.0), held=(3.2, 6.0),
        held_gap=(0.0, 0.05), chord_hold=(2.2, 5.0), strum_hold=(2.2, 4.0), strum_spread=(0.035, 0.08),
        wind_rate=(0.5, 1.8), hit_gap=(1.6, 3.0), bpm=(40, 65), roll_rate=(5.0, 9.0), ring_on=(2.2, 4.0),
        ring_off=(4.5, 6.0), crowd_layers=(1, 2), shot_gap=(2.2, 4.0), burst_rate=(4.0, 7.0),
        burst_pause=(1.6, 3.0)),
}


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


# --------------------------------------------------------------------------------------------------
# Synthesis and the recording chain
# --------------------------------------------------------------------------------------------------

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


def _fade(n: int) -> np.ndarray:
    """A raised-cosine fade from 1 to 0 over ``n`` samples."""
    return 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n))


def _reverb(rng: np.random.Generator, x: np.ndarray, sample_rate: int, rt60: float) -> np.ndarray:
    """``x`` convolved with a unit-energy exponentially decaying noise impulse response (the wet signal)."""
    t = np.arange(max(1, int(rt60 * sample_rate))) / sample_rate
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt(np.sum(ir**2))
    return oaconvolve(x, ir)[: len(x)]


def add_room(rng: np.random.Generator, x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mix in a small room: ``x`` convolved with decaying noise (RT60 0.1-0.9 s) at a random wet level."""
    wet = _reverb(rng, x, sample_rate, float(rng.uniform(0.1, 0.9)))
    return x + float(rng.uniform(0.0, 0.6)) * wet


# Shifted-split rooms: (RT60 range in s, wet level range); the train rooms have RT60 0.1-0.9 s, wet 0-0.6.
SHIFTED_ROOMS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "hall": ((1.0, 2.5), (0.7, 1.5)),  # large reverberant room, far microphone
    "close_mic": ((0.03, 0.08), (0.0, 0.08)),  # bone dry
}


def _peaking_sos(f0: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """One peaking-EQ biquad (Audio EQ Cookbook) as a second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sample_rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def microphone_eq(rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, dict]:
    """A random cheap-microphone response as second-order sections, and its settings: a high-pass
    (100-400 Hz) and a phone/laptop-like low-pass (3-8 kHz), both 2nd-order Butterworth, and one or
    two peaking filters of +-6-12 dB between 250 Hz and the low-pass corner."""
    highpass = float(rng.uniform(100.0, 400.0))
    lowpass = float(rng.uniform(3000.0, 8000.0))
    sections = [butter(2, highpass, "highpass", fs=sample_rate, output="sos"),
                butter(2, lowpass, "lowpass", fs=sample_rate, output="sos")]
    peaks = []
    for _ in range(int(rng.integers(1, 3))):
        f0 = float(np.exp(rng.uniform(np.log(250.0), np.log(0.8 * lowpass))))
        gain = float(rng.uniform(6.0, 12.0)) * (1 if rng.random() < 0.5 else -1)
        q = float(rng.uniform(0.7, 4.0))
        sections.append(_peaking_sos(f0, gain, q, sample_rate))
        peaks.append(f"{f0:.0f}Hz{gain:+.1f}dB/Q{q:.1f}")
    return np.concatenate(sections), {"mic_highpass_hz": round(highpass), "mic_lowpass_hz": round(lowpass),
                                      "mic_peaks": " ".join(peaks)}


def colored_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS noise with a 1/f^beta power spectrum, beta in [1, 2] (pink to brown), above 20 Hz."""
    size = next_fast_len(n, real=True)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    shape = np.zeros_like(freqs)
    audible = freqs >= 20.0
    shape[audible] = freqs[audible] ** (-float(rng.uniform(1.0, 2.0)) / 2)
    noise = np.fft.irfft(spectrum * shape, size)[:n]
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def white_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS white noise (preamp hiss)."""
    return _unit_rms(rng.standard_normal(n))


def mains_hum(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS mains hum: 50 or 60 Hz and its first 8 harmonics at random levels and phases (one
    period tabulated, then read along the clip), with a little hiss under it."""
    f0 = float(rng.choice([50.0, 60.0])) * float(rng.uniform(0.998, 1.002))
    tilt = float(rng.uniform(0.5, 1.5))
    period = np.linspace(0.0, 1.0, 4097)
    table = sum(float(rng.uniform(0.2, 1.0)) * k**-tilt * np.sin(2 * np.pi * k * period + rng.uniform(0, 2 * np.pi))
                for k in range(1, 9))
    hum = np.interp((f0 / sample_rate * np.arange(n)) % 1.0, period, table)
    return _unit_rms(_unit_rms(hum) + 0.05 * rng.standard_normal(n))


def babble_noise(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS babble-like noise: 3-8 'talkers' switched on and off by slow random syllable envelopes
    (3-7 Hz) over speech-band noise (high-passed at 150 Hz, low-passed at 0.8-3 kHz). Independent
    Gaussian talkers add up to one Gaussian noise under their combined RMS envelope, which is what is
    drawn (one noise and one filter per clip)."""
    env_rate = 200  # envelope samples per second
    m = int(np.ceil(n / sample_rate * env_rate)) + 2
    power = np.zeros(m)
    for _ in range(int(rng.integers(3, 9))):
        smooth = butter(2, float(rng.uniform(3.0, 7.0)), fs=env_rate, output="sos")
        envelope = np.maximum(sosfilt(smooth, rng.standard_normal(m)), 0.0)
        power += (float(rng.uniform(0.3, 1.0)) * envelope) ** 2
    envelope = np.interp(np.arange(n) * (env_rate / sample_rate), np.arange(m), np.sqrt(power))
    band = np.concatenate([butter(2, 150.0, "highpass", fs=sample_rate, output="sos"),
                           butter(2, float(rng.uniform(800.0, 3000.0)), "lowpass", fs=sample_rate, output="sos")])
    return _unit_rms(sosfilt(band, envelope * rng.standard_normal(n)))


SHIFTED_NOISES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "white": white_noise, "hum": mains_hum, "babble": babble_noise,
}
SHIFTED_SNR_DB = (5.0, 25.0)  # the train and test clips: DemoSettings.snr_db (15-40 dB), pink to brown
SHIFTED_VELOCITY = {"soft": (20, 40), "hard": (121, 127)}  # base velocity, inclusive; the train clips: 45-120


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


# --------------------------------------------------------------------------------------------------
# Writing the data set
# --------------------------------------------------------------------------------------------------


def _render_job(job: tuple[dict, DemoSettings, str]) -> dict:
    """Pool worker: render one planned clip and write it as 16-bit PCM; returns its rendering details."""
    row, settings, out_dir = job
    seed = (settings.seed, _SPLIT_CODES[row["split"]], row["index"])
    audio, info = render_clip(row["true_label"], seed, settings, shifted=row["split"] == SHIFTED_SPLIT)
    path = Path(out_dir) / _SPLIT_DIRS[row["split"]] / row["fname"]
    sf.write(path, audio, settings.sample_rate, subtype="PCM_16", format="WAV")
    return {"fname": row["fname"], **info}


def _render_all(plan: pd.DataFrame, settings: DemoSettings, out_dir: Path, progress: bool) -> pd.DataFrame:
    """Render every planned clip into ``out_dir``, in a process pool when more than one worker."""
    jobs = [(row, settings, str(out_dir)) for row in plan.to_dict("records")]
    workers = settings.workers or len(os.sched_getaffinity(0))
    bar = dict(total=len(jobs), desc="demo clips", unit="clip", disable=None if progress else True, file=sys.stderr)
    if workers <= 1:
        infos = [_render_job(job) for job in tqdm(jobs, **bar)]
    else:
        # spawn: safe when the caller has started threads (torch); each clip is seeded on its own.
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            infos = list(tqdm(pool.imap(_render_job, jobs, chunksize=4), **bar))
    details = pd.DataFrame(infos)
    for column in ("velocity", "mic_highpass_hz", "mic_lowpass_hz"):  # shifted clips only: no "121.0"
        if column in details:
            details[column] = details[column].astype("Int64")
    return details


def _write_tables(out_dir: Path, plan: pd.DataFrame, details: pd.DataFrame, labels: tuple[str, ...]) -> None:
    """The CSV files: train.csv, sample_submission.csv, test_post_competition.csv, test_shifted.csv
    (when there is a shifted split) and the hidden truth."""
    train = plan[plan.split == "train"].sort_values("fname")
    test = plan[plan.split == "test"].sort_values("fname")
    train[["fname", "label", "manually_verified"]].to_csv(out_dir / TRAIN_CSV, index=False)
    placeholder = " ".join(sorted(labels)[:3])
    test.assign(label=placeholder)[["fname", "label"]].to_csv(out_dir / SAMPLE_SUBMISSION_CSV, index=False)
    test[["fname", "label", "usage"]].to_csv(out_dir / TEST_LABELS_CSV, index=False)
    shifted = plan[plan.split == SHIFTED_SPLIT].sort_values("fname")
    if len(shifted):
        shifted[["fname", "label"]].to_csv(out_dir / SHIFTED_LABELS_CSV, index=False)
    truth = plan.drop(columns="index").merge(details, on="fname").sort_values(["split", "fname"])
    truth.to_csv(out_dir / TRUTH_CSV, index=False)


def _tmp_dir_owner(path: Path) -> int | None:
    """The process id encoded in a build folder's name (``.<root>.tmp-<pid>-<random>``)."""
    try:
        return int(path.name.split(_TMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _remove_stale_builds(root: Path) -> None:
    """Delete build folders beside ``root`` left by generator processes that no longer run."""
    for path in root.parent.glob(f".{root.name}{_TMP_MARK}*"):
        pid = _tmp_dir_owner(path)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, owned by someone else


def _refuse_clashes(root: Path) -> None:
    """Raise if ``root`` already holds any of the generator's outputs (nothing is ever overwritten)."""
    clashes = [name for name in _OUTPUTS if (root / name).exists()]
    if clashes:
        raise FileExistsError(f"{root}: already holds {clashes}; remove them to regenerate the demo data")


def _move_into_place(build: Path, root: Path) -> None:
    """Move the finished build to ``root``: a single rename when ``root`` is missing or empty, else
    entry by entry with train.csv last, so the data set only looks complete once it is."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        os.replace(build, root)
        return
    _refuse_clashes(root)
    for name in _OUTPUTS:  # train.csv is the last name
        if (build / name).exists():  # the shifted split's files only when it has clips
            os.replace(build / name, root / name)
    build.rmdir()


def generate_demo_dataset(root: str | os.PathLike, *, progress: bool = True, **settings) -> Path:
    """Generate the demo data set into ``root`` (see the module docstring); returns ``root``.

    ``settings`` are :class:`DemoSettings` fields. Deterministic for a seed. The files are built in a
    temporary folder beside ``root`` and moved in at the end; on any error that folder is removed.
    """
    cfg = DemoSettings.from_mapping(settings)
    root = Path(root).absolute()
    _refuse_clashes(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    build = Path(tempfile.mkdtemp(prefix=f".{root.name}{_TMP_MARK}{os.getpid()}-", dir=root.parent))
    build.chmod(0o755)  # mkdtemp makes it private; the data set is not
    try:
        plan = plan_dataset(cfg)
        for split in plan["split"].unique():
            (build / _SPLIT_DIRS[split]).mkdir()
        if progress:
            print(f"Generating the demo data set ({cfg.n_train} train + {cfg.n_test} test + {cfg.n_shifted} "
                  f"shifted test clips, {len(cfg.labels)} labels) into {root}", file=sys.stderr)
        details = _render_all(plan, cfg, build, progress)
        _write_tables(build, plan, details, cfg.labels)
        _move_into_place(build, root)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return root


def ensure_demo_dataset(root: str | os.PathLike, **settings) -> Path:
    """Generate the demo data set into ``root`` unless ``root/train.csv`` exists; returns ``root``.

    ``settings``: the keys of the ``demo:`` block of conf/data/demo.yaml (all optional).
    """
    root = Path(root)
    if not (root / TRAIN_CSV).is_file():
        generate_demo_dataset(root, **settings)
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m fstag.demo_data --root DIR [--n-train N --n-test N --n-shifted N --seed S --workers W]``."""
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(description="Generate the built-in demo data set (Kaggle layout).")
    parser.add_argument("--root", required=True, help="folder to create (must not hold a data set yet)")
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-test", type=int, default=defaults.n_test)
    parser.add_argument("--n-shifted", type=int, default=defaults.n_shifted, help="shifted test clips (0: none)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    args = parser.parse_args(argv)
    root = generate_demo_dataset(args.root, n_train=args.n_train, n_test=args.n_test, n_shifted=args.n_shifted,
                                 seed=args.seed, workers=args.workers)
    print(root)


if __name__ == "__main__":
    main()
