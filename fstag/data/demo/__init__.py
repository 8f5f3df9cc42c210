"""Built-in demo data sets: real instrument recordings in the FSDKaggle2018 (Kaggle) layout, and mixtures of them
in the FSDKaggle2019 layout (the multi-label demo).

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
``SHIFTED_PLAYING``, :func:`~fstag.data.demo.render.render_clip` with ``shifted=True``). A model that
learned the instruments rather than the recordings does well on it. It has its own seed stream: the
train and test clips are byte-identical with or without it.

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

The multi-label demo (:mod:`.multilabel`, ``data=demo_multilabel``) is made of the same recordings in the
FSDKaggle2019 layout: each clip mixes 1-3 sources of different labels (each rendered as above, overlapping
in time or in sequence, at levels up to 12 dB apart), its labels are the union; ``train_curated.csv`` lists
them right, ``train_noisy.csv`` gets a share of its label sets wrong (a label dropped, added or swapped),
``sample_submission.csv`` has one probability column per label and ``test_post_competition.csv`` the test
labels with their usage. Same determinism, worker independence and atomic build (train_curated.csv is
moved in last).

From the command line::

    python -m fstag.data.demo --root DIR [--n-train N --n-test N --n-shifted N --seed S --workers W]
    python -m fstag.data.demo --multi-label --root DIR [--n-curated N --n-noisy N --n-test N --seed S --workers W]

Modules, each importing only those above it::

    names     file, folder and split names, the splits' seed streams
    voices    how each label is voiced (VOICES, SHIFTED_VOICES), the soundfont's path
    settings  DemoSettings
    plan      plan_dataset: names, labels, verification flags, leaderboard usage, splits
    playing   Note, Playing (TRAIN_PLAYING, SHIFTED_PLAYING), the shifted split's velocities
    styles    the note patterns (STYLES)
    effects   rooms, microphone EQ, background noises, fades
    render    synthesis, clip durations, render_clip
    write     every clip rendered, the CSV files, the atomic move into place: generate/ensure_demo_dataset
    multilabel_settings  MultilabelDemoSettings (the multi-label demo's)
    multilabel_plan      plan_multilabel: names, sources, listed labels, the noisy rows' wrong label sets, usage
    mix       render_mixture: a multi-label clip's sources rendered by render_clip and mixed
    multilabel  the FSDKaggle2019-layout files, the atomic move: generate/ensure_multilabel_demo
    cli       the command line (run by __main__)
"""

from fstag.data.demo.names import (
    IGNORED_LABEL,
    SHIFTED_DIR,
    SHIFTED_LABELS_CSV,
    SHIFTED_SPLIT,
    TEST_LABELS_CSV,
    TRUTH_CSV,
)
from fstag.data.demo.plan import plan_dataset
from fstag.data.demo.settings import DemoSettings
from fstag.data.demo.voices import DEFAULT_LABELS
from fstag.data.demo.write import ensure_demo_dataset, generate_demo_dataset
from fstag.data.demo.multilabel_settings import MultilabelDemoSettings
from fstag.data.demo.multilabel_plan import plan_multilabel
from fstag.data.demo.multilabel import ensure_multilabel_demo, generate_multilabel_demo

__all__ = [
    "DEFAULT_LABELS",
    "IGNORED_LABEL",
    "SHIFTED_DIR",
    "SHIFTED_LABELS_CSV",
    "SHIFTED_SPLIT",
    "TEST_LABELS_CSV",
    "TRUTH_CSV",
    "DemoSettings",
    "MultilabelDemoSettings",
    "ensure_demo_dataset",
    "ensure_multilabel_demo",
    "generate_demo_dataset",
    "generate_multilabel_demo",
    "plan_dataset",
    "plan_multilabel",
]
