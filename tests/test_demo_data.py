"""The built-in demo data generator: layout, audio format, determinism, label noise, atomicity, and the
shifted test split."""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from fstag import demo_data
from fstag.config import CONFIG_DIR
from fstag.dataset_layout import DatasetLayout, labels_from_train, read_sample_submission, read_train_csv
from fstag.demo_data import (
    DEFAULT_LABELS,
    SHIFTED_DIR,
    SHIFTED_LABELS_CSV,
    SHIFTED_PLAYING,
    SHIFTED_VOICES,
    TEST_LABELS_CSV,
    TRAIN_PLAYING,
    TRUTH_CSV,
    VOICES,
    DemoSettings,
    ensure_demo_dataset,
    generate_demo_dataset,
    plan_dataset,
)

SMALL = dict(n_train=42, n_test=10, n_shifted=21, workers=1, progress=False)


def _truth(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / TRUTH_CSV, keep_default_na=False)


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small data set (2 train clips per label), made through ensure_demo_dataset."""
    root = tmp_path_factory.mktemp("demo") / "demo"
    assert ensure_demo_dataset(root, **SMALL) == root
    return root


def test_layout_is_readable_by_dataset_layout(small):
    layout = DatasetLayout(small)
    train = read_train_csv(layout.train_csv)
    submission = read_sample_submission(layout.sample_submission_csv)
    assert len(train) == 42 and len(submission) == 10
    assert list(pd.read_csv(layout.train_csv).columns) == ["fname", "label", "manually_verified"]
    assert set(pd.read_csv(layout.train_csv)["manually_verified"]) <= {0, 1}
    assert list(pd.read_csv(layout.sample_submission_csv).columns) == ["fname", "label"]
    for split in ("train", "test"):
        listed = layout.split_fnames(split)
        assert sorted(p.name for p in layout.audio_dir(split).iterdir()) == sorted(listed)
        assert all(re.fullmatch(r"[0-9a-f]{8}\.wav", f) for f in listed)
    assert not set(train["fname"]) & set(submission["fname"])
    assert set(labels_from_train(train)) <= set(DEFAULT_LABELS)


def test_sample_submission_holds_a_three_label_placeholder(small):
    placeholders = pd.read_csv(small / "sample_submission.csv")["label"].unique()
    assert len(placeholders) == 1
    assert len(placeholders[0].split()) == 3 and set(placeholders[0].split()) <= set(DEFAULT_LABELS)


def test_test_labels_file_is_kept_apart_and_matches_the_truth(small):
    assert DatasetLayout(small).test_labels_csv() == small / TEST_LABELS_CSV
    labels = pd.read_csv(small / TEST_LABELS_CSV, keep_default_na=False)
    assert list(labels.columns) == ["fname", "label", "usage"]
    assert set(labels["fname"]) == set(read_sample_submission(small / "sample_submission.csv")["fname"])
    assert set(labels["usage"]) <= {"Public", "Private", "Ignored"}
    truth = _truth(small).set_index("fname")
    scored = labels[labels["usage"] != "Ignored"]
    assert (scored["label"].values == truth.loc[scored["fname"], "true_label"].values).all()
    assert (labels.loc[labels["usage"] == "Ignored", "label"] == demo_data.IGNORED_LABEL).all()


def test_wav_files_are_44k1_16bit_mono(small):
    for path in sorted(small.glob("audio_*/*.wav")):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (44100, 1, "WAV", "PCM_16")
        assert 0.3 <= info.frames / info.samplerate <= 30.0


def test_every_clip_is_real_sound_after_a_silent_margin(small):
    leads = []
    for path in sorted(small.glob("audio_*/*.wav")):
        audio, sr = sf.read(path)
        assert np.abs(audio).max() < 0.95  # no clipping
        assert np.sqrt(np.mean(audio**2)) > 1e-3  # audible
        assert np.std(np.diff(audio)) > 1e-4  # not a constant or a slow drift
        leads.append(np.argmax(audio != 0) / sr)
    assert min(leads) > 0 and np.mean(leads) > 0.1  # leading silence, so trimming matters


def test_default_labels_cover_twenty_classes_and_all_appear(small):
    assert len(DEFAULT_LABELS) >= 20 and len(set(DEFAULT_LABELS)) == len(DEFAULT_LABELS)
    truth = _truth(small)
    assert set(truth.loc[truth["split"] == "train", "true_label"]) == set(DEFAULT_LABELS)


def test_verified_rows_carry_their_true_label(small):
    truth = _truth(small)
    train = read_train_csv(small / "train.csv").merge(truth[["fname", "true_label"]], on="fname")
    verified = train[train["manually_verified"]]
    assert len(verified) > 0 and (verified["label"] == verified["true_label"]).all()


def test_label_noise_shares_follow_the_settings():
    plan = plan_dataset(DemoSettings(n_train=600, n_test=180, unverified_share=0.4, wrong_label_share=0.3))
    train = plan[plan["split"] == "train"]
    unverified = train[train["manually_verified"] == 0]
    assert abs(len(unverified) / len(train) - 0.4) < 0.01
    assert abs((unverified["label"] != unverified["true_label"]).mean() - 0.3) < 0.01
    verified = train[train["manually_verified"] == 1]
    assert (verified["label"] == verified["true_label"]).all()
    counts = train["true_label"].value_counts()
    assert counts.max() - counts.min() <= 1  # balanced over the labels
    usage = plan.loc[plan["split"] == "test", "usage"].value_counts()
    assert usage["Ignored"] == 18 and usage["Public"] == 54 and usage["Private"] == 108


def test_duration_range_is_honoured(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", **{**SMALL, "labels": ["Cello", "Flute"], "n_train": 12,
                                                    "n_test": 4, "n_shifted": 2, "min_duration": 0.5,
                                                    "max_duration": 2.0})
    durations = [sf.info(p).duration for p in root.glob("audio_*/*.wav")]
    assert len(durations) == 18 and min(durations) >= 0.5 and max(durations) <= 2.0


def test_sounds_differ_per_class(tmp_path):
    """Glockenspiel sits far above the double bass: a silent or class-blind generator fails this."""
    root = generate_demo_dataset(tmp_path / "d", **{**SMALL, "labels": ["Glockenspiel", "Double_bass"],
                                                    "n_train": 16, "n_test": 1, "n_shifted": 0,
                                                    "max_duration": 4.0})
    truth = _truth(root)
    centroid = {}
    for label in ("Glockenspiel", "Double_bass"):
        values = []
        for fname in truth.loc[(truth["split"] == "train") & (truth["true_label"] == label), "fname"]:
            audio, sr = sf.read(root / "audio_train" / fname)
            power = np.abs(np.fft.rfft(audio)) ** 2
            values.append(np.sum(np.fft.rfftfreq(len(audio), 1 / sr) * power) / np.sum(power))
        centroid[label] = np.mean(values)
    assert centroid["Glockenspiel"] > 3 * centroid["Double_bass"]


def test_same_seed_gives_identical_bytes_whatever_the_workers(small, tmp_path):
    again = generate_demo_dataset(tmp_path / "again", **{**SMALL, "workers": 2})
    files = _all_files(small)
    assert files == _all_files(again)
    match, mismatch, errors = filecmp.cmpfiles(small, again, files, shallow=False)
    assert not mismatch and not errors


def test_another_seed_gives_other_data(small, tmp_path):
    other = generate_demo_dataset(tmp_path / "other", **{**SMALL, "seed": 1})
    assert (other / "train.csv").read_bytes() != (small / "train.csv").read_bytes()
    first = sorted(p.read_bytes() for p in (other / "audio_train").iterdir())[0]
    assert first not in {p.read_bytes() for p in (small / "audio_train").iterdir()}


def test_ensure_is_a_no_op_when_train_csv_exists(tmp_path):
    (tmp_path / "train.csv").write_text("fname,label,manually_verified\n")
    assert ensure_demo_dataset(tmp_path, **SMALL) == tmp_path
    assert _all_files(tmp_path) == ["train.csv"]


def test_generate_refuses_to_overwrite(small):
    with pytest.raises(FileExistsError):
        generate_demo_dataset(small, **SMALL)


def test_generates_into_an_existing_folder_with_other_content(tmp_path):
    (tmp_path / "features").mkdir()
    generate_demo_dataset(tmp_path, **{**SMALL, "n_train": 21, "n_test": 2, "n_shifted": 0})
    assert (tmp_path / "train.csv").is_file() and (tmp_path / "features").is_dir()


def test_interrupted_generation_leaves_no_train_csv(tmp_path, monkeypatch):
    real_render = demo_data.render_clip
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("simulated crash")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(demo_data, "render_clip", failing_render)
    root = tmp_path / "demo"
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_demo_dataset(root, **SMALL)
    assert not (root / "train.csv").exists()
    assert list(tmp_path.iterdir()) == []  # the build folder is gone too


def test_build_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".demo.tmp-{dead.pid}-abc"
    (stale / "audio_train").mkdir(parents=True)
    generate_demo_dataset(tmp_path / "demo", **{**SMALL, "n_train": 21, "n_test": 2, "n_shifted": 0})
    assert not stale.exists()


def test_settings_are_validated():
    with pytest.raises(TypeError, match="unknown demo setting"):
        DemoSettings.from_mapping({"n_trian": 5})
    with pytest.raises(ValueError, match="cannot be voiced"):
        DemoSettings(labels=["Bark", "Cello"])
    with pytest.raises(ValueError):
        DemoSettings(min_duration=5.0, max_duration=1.0)
    with pytest.raises(ValueError, match="n_shifted"):
        DemoSettings(n_shifted=-1)


def test_yaml_demo_block_matches_the_defaults():
    block = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "data" / "demo.yaml").demo)
    assert DemoSettings.from_mapping(block) == DemoSettings()


def test_cli(tmp_path, capsys):
    demo_data.main(["--root", str(tmp_path / "cli"), "--n-train", "21", "--n-test", "2", "--n-shifted", "2",
                    "--workers", "1"])
    assert (tmp_path / "cli" / "train.csv").is_file()
    assert len(list((tmp_path / "cli" / SHIFTED_DIR).iterdir())) == 2
    assert str(tmp_path / "cli") in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# The shifted test split
# --------------------------------------------------------------------------------------------------


def _digests(root: Path, names: list[str]) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in names}


def test_shifted_split_is_written_balanced_and_labelled(small):
    labels = pd.read_csv(small / SHIFTED_LABELS_CSV, keep_default_na=False)
    assert list(labels.columns) == ["fname", "label"]
    assert sorted(p.name for p in (small / SHIFTED_DIR).iterdir()) == sorted(labels["fname"])
    assert all(re.fullmatch(r"[0-9a-f]{8}\.wav", f) for f in labels["fname"])
    assert sorted(labels["label"]) == sorted(DEFAULT_LABELS)  # 21 clips: one per label
    others = set(read_train_csv(small / "train.csv")["fname"]) | set(pd.read_csv(small / TEST_LABELS_CSV)["fname"])
    assert not set(labels["fname"]) & others
    truth = _truth(small)
    rows = truth[truth["split"] == "test_shifted"].set_index("fname")
    assert (rows.loc[labels["fname"], "true_label"].values == labels["label"].values).all()


def test_shifted_labels_are_balanced_and_names_unique():
    plan = plan_dataset(DemoSettings())
    shifted = plan[plan["split"] == "test_shifted"]
    assert len(shifted) == 168 and set(shifted["true_label"].value_counts()) == {8}
    assert plan["fname"].is_unique
    assert (shifted["label"] == shifted["true_label"]).all()
    assert plan_dataset(DemoSettings(n_shifted=0))["split"].isin(["train", "test"]).all()


def test_shifted_split_leaves_train_and_test_bytes_unchanged(tmp_path):
    small = {**SMALL, "labels": ["Cello", "Snare_drum", "Telephone"], "n_train": 6, "n_test": 3, "max_duration": 3.0}
    without = generate_demo_dataset(tmp_path / "without", **{**small, "n_shifted": 0})
    with_ = generate_demo_dataset(tmp_path / "with", **{**small, "n_shifted": 3})
    assert not (without / SHIFTED_DIR).exists() and not (without / SHIFTED_LABELS_CSV).exists()
    assert len(list((with_ / SHIFTED_DIR).iterdir())) == 3
    names = [n for n in _all_files(without) if n != TRUTH_CSV]
    assert any(n.startswith("audio_train/") for n in names) and any(n.startswith("audio_test/") for n in names)
    assert _digests(without, names) == _digests(with_, names)
    before = pd.read_csv(without / TRUTH_CSV, dtype=str, keep_default_na=False)
    after = pd.read_csv(with_ / TRUTH_CSV, dtype=str, keep_default_na=False)
    after = after[after["split"] != "test_shifted"][list(before.columns)].reset_index(drop=True)
    assert after.equals(before)  # the same rows and rendering details


def test_shifted_sources_are_never_played_in_train():
    """Labels with family members play only other programs or kits; the rest play outside the train
    key range (or, the tambourine, far detuned). Every program and kit exists in the soundfont:
    tinysoundfont silently falls back to kit 0 for a missing drum preset, so that is checked too."""
    import tinysoundfont

    synth = tinysoundfont.Synth()
    sfid = synth.sfload(demo_data._soundfont_bytes())
    assert set(SHIFTED_VOICES) == set(VOICES)
    for label, shifted in SHIFTED_VOICES.items():
        voice = VOICES[label]
        for source in shifted.sources:
            bank = 128 if voice.is_drum else 0
            synth.program_select(0, sfid, bank, source.program, is_drums=voice.is_drum)
            assert synth.program_info(0) == (sfid, bank, source.program), (label, source)
            if source.program in voice.programs:  # no other family member
                if voice.is_drum:
                    assert source.detune[0] >= 3.0, label
                else:
                    lo, hi = source.key_range
                    assert hi < voice.key_range[0] or lo > voice.key_range[1], label
            if voice.is_drum:
                assert set(source.drum_keys) <= set(voice.drum_keys), label
        if (shifted.styles or voice.styles) != voice.styles:
            assert set(shifted.styles) & set(voice.styles), label  # a familiar pattern among the new ones


def test_shifted_playing_lies_outside_the_train_ranges():
    for name, playing in SHIFTED_PLAYING.items():
        for field in dataclasses.fields(playing):
            if field.name in ("legato", "held_gap"):
                continue
            lo, hi = getattr(playing, field.name)
            train_lo, train_hi = getattr(TRAIN_PLAYING, field.name)
            assert hi <= train_lo or lo >= train_hi, (name, field.name)


def test_shifted_clips_are_recorded_differently(small):
    truth = _truth(small)
    shifted = truth[truth["split"] == "test_shifted"]
    assert len(shifted) == 21
    for row in shifted.itertuples():
        voice = VOICES[row.true_label]
        alternatives = any(s.program not in voice.programs for s in SHIFTED_VOICES[row.true_label].sources)
        if alternatives:
            assert int(float(row.program)) not in voice.programs, row.true_label
        elif not voice.is_drum:
            lo, hi = (int(k) for k in row.keys.split("-"))
            assert hi < voice.key_range[0] or lo > voice.key_range[1], row.true_label
        else:
            assert abs(float(row.tuning)) >= 3.0, row.true_label
        assert not 45 <= float(row.velocity) <= 120
        assert row.playing in SHIFTED_PLAYING
        assert row.room in ("hall", "close_mic") and not 0.1 <= float(row.rt60) <= 0.9
        assert 100 <= float(row.mic_highpass_hz) <= 400 and 3000 <= float(row.mic_lowpass_hz) <= 8000
        peaks = row.mic_peaks.split()
        assert 1 <= len(peaks) <= 2
        assert all(6.0 <= abs(float(re.search(r"Hz([+-][0-9.]+)dB", p).group(1))) <= 12.0 for p in peaks)
        assert row.noise in ("white", "hum", "babble") and 5.0 <= float(row.snr_db) <= 25.0
    train = truth[truth["split"] == "train"]
    assert set(train["noise"]) == {""} and set(train["room"]) == {""}  # the train rows keep their recording


def test_refuses_to_overwrite_a_shifted_split(tmp_path):
    (tmp_path / SHIFTED_LABELS_CSV).write_text("fname,label\n")
    with pytest.raises(FileExistsError, match=SHIFTED_LABELS_CSV):
        generate_demo_dataset(tmp_path, **{**SMALL, "n_train": 21, "n_test": 2, "n_shifted": 0})
