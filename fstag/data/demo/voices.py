"""Voices: how each label is played on the General MIDI soundfont, in the train and test splits
(``VOICES``) and in the shifted split (``SHIFTED_VOICES``), and where the soundfont lies."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np


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
