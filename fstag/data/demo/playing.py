"""How the splits play: the :class:`Note` a style emits, and the tempo, note-length and loudness
ranges of the train and test splits (``TRAIN_PLAYING``) and of the shifted split (``SHIFTED_PLAYING``,
``SHIFTED_VELOCITY``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Note:
    start: float  # seconds from the start of the sound
    duration: float
    key: int
    velocity: int


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


SHIFTED_VELOCITY = {"soft": (20, 40), "hard": (121, 127)}  # base velocity, inclusive; the train clips: 45-120
