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

from fstag.data import demo as demo_data
from fstag.core.config import CONFIG_DIR
from fstag.data.layouts.kaggle2018 import DatasetLayout, labels_from_train, read_sample_submission, read_train_csv
from fstag.data.demo import cli as demo_cli
from fstag.data.demo import render as demo_render
from fstag.data.demo import write as demo_write
from fstag.data.demo import (
    DEFAULT_LABELS,
    SHIFTED_DIR,
    SHIFTED_LABELS_CSV,
    TEST_LABELS_CSV,
    TRUTH_CSV,
    DemoSettings,
    ensure_demo_dataset,
    generate_demo_dataset,
    plan_dataset,
)
from fstag.data.demo.playing import SHIFTED_PLAYING, TRAIN_PLAYING
from fstag.data.demo.voices import SHIFTED_VOICES, VOICES

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
    real_render = demo_write.render_clip
    calls = []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("simulated crash")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(demo_write, "render_clip", failing_render)
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
    demo_cli.main(["--root", str(tmp_path / "cli"), "--n-train", "21", "--n-test", "2", "--n-shifted", "2",
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
    sfid = synth.sfload(demo_render._soundfont_bytes())
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


# --------------------------------------------------------------------------------------------------
# Golden bytes
# --------------------------------------------------------------------------------------------------

# The sha256 of every file of the SMALL data set (seed 0, through ensure_demo_dataset: the `small` fixture)
# and of the default settings' plan as CSV. Recorded with the single-module generator, before it was split
# into fstag/data/demo/{names,voices,settings,plan,playing,styles,effects,render,write}.py (HEAD 7636029's
# fstag/demo_data.py, moved to fstag/data/demo/__init__.py), on numpy 2.4.6, scipy 1.17.1, pandas 3.1.1,
# soundfile 0.14.0, tinysoundfont 0.3.7, pretty_midi 0.2.11.post0 (its TimGM6mb.sf2). The same bytes came
# from 1 and 2 worker processes. A deliberate change to the generator (or a library upgrade that changes
# its floating-point results) must update these digests, and say so.
REFERENCE_DIGESTS = {
    ".demo_truth.csv": "a67a2a11b3e59959be8967be437091eb33b10427b87dac0ba53ced75280eef3c",
    "audio_test/015eca68.wav": "b4544a4b6dd13e9285dbfbf400611d70888ebc5e4c3ef67211a258751b58ffa1",
    "audio_test/021eeba8.wav": "4f5a7e7c6dcab249f19e9f56e93b92bd679381348ba5fde9b3f720b407a0f56b",
    "audio_test/1fd10760.wav": "b8996d1c11e4210fcf730170e523f0281062c07f35f35797c5e2a3fa4c97b82f",
    "audio_test/41de6631.wav": "3f054ab0ecf106ebb4716fe3183f57067d0a3235f51ed31a1484c26a6cad38af",
    "audio_test/6238b133.wav": "a5edbb44ccb407ec4f91c8f375d38b8f54cc017c34a2ae2f07cef0447c604dfb",
    "audio_test/868ee2bb.wav": "bc2a2c4f7b3d6f59100559e3bea0194ab67e2e19df6f39d69e3ca8d1388d9fab",
    "audio_test/9d89e0f0.wav": "59e20462fd78d33e0a78492698026710315a8afee9abb398cca3c32678dad75b",
    "audio_test/a5ae363a.wav": "1605a4287d5e849e90b286832e915bfc0f9c5d448dd95e226b6aca951652d540",
    "audio_test/abae0aa9.wav": "4b60f036b22024d6b2282ec5426ba8e59d8067e4a63a8764bf7ed66d80108321",
    "audio_test/c3991a65.wav": "9e57e67bf5bdc6e33190f6d0386a6c85a321ec53cfb2abf5bb1a8f670f901cb4",
    "audio_test_shifted/04a00f78.wav": "15edb3ef53d86e4c15e4c08dbd4042d2539a3a4002f114a801983e4c2a1b2bfd",
    "audio_test_shifted/5d462916.wav": "14ce89107e5ea1cecda9b70a81d734a312a8330bda7af8320c2b5472448f4ca3",
    "audio_test_shifted/673b17ae.wav": "86ba5a804691d217d0ca6d778d8c8e7971fdfc94d8908597743383678c2b0cfd",
    "audio_test_shifted/7277350c.wav": "3ecde13a17c543b3b5bec06c521b5ff7eafb478e2155e6f4c9e22432915b8934",
    "audio_test_shifted/75be48e9.wav": "cea700a94a71d40f5c5382331d08e2aa601354a28865c1795fdaee02ef63ae5b",
    "audio_test_shifted/7e077464.wav": "2a0da85a86aa1426e212b5898be3b65b7c3cb10e2b52717ce1b7e6f6ceb11421",
    "audio_test_shifted/988b3c48.wav": "0117d8b528240c5c740aaff6d44c58741bcb55bbeb65fd297cc23dc4768bf507",
    "audio_test_shifted/98e6a089.wav": "151a3b77ade74f5a28dd70f7f4fb7a20edcf676f214dd08cf364ad4157c4b732",
    "audio_test_shifted/9f65f63f.wav": "21af973b422a13e8d927026ce1ad9463789a4a2d548a2d732d2cdf3d44e67337",
    "audio_test_shifted/9ffdc3a3.wav": "e975ab74980de707e95c07b5e5e1c3dccbd1ea00237000dcee776443638ce2c4",
    "audio_test_shifted/a7d1884f.wav": "4d5a9baac0f6f7c57d6226b860e7c42edade067625266224aaeca321df99c6f6",
    "audio_test_shifted/b54097f3.wav": "67e3398037dab4c709e9c91ac6580000acb7265e325e9568e3a02bcca222097e",
    "audio_test_shifted/bb80b1ea.wav": "a0767a71cd954eb27fdb40db84507692c5537fbdc3c29e7dfaaf4413e74db49f",
    "audio_test_shifted/be76cba4.wav": "8f79a4b6be510af5ca1d90b44dc93ec15e31e6ff707f92ce9ef52fde7fe18163",
    "audio_test_shifted/c5105d22.wav": "dfb1967264deb03bfd14f4b660229417d15158fbe116681b412b5e5cad0337c4",
    "audio_test_shifted/cabbe7e2.wav": "890fdd623b8fe712b25034bce30c99fc180821c6db1412363e07599086b8ca90",
    "audio_test_shifted/d1901103.wav": "88bffe37f991d9c3e073813bd79e1c2d5c70baa642c443461bcfb34df5796aa2",
    "audio_test_shifted/dc55337a.wav": "eaf5b42b5436f1b68bd72189305214cfd553aace8ddf0dbf2d620ab9e2e30547",
    "audio_test_shifted/e51dcce4.wav": "b43b8bb0cb08b8698affa00c695ad933b8253a6d97dab4e4822a959984041ae2",
    "audio_test_shifted/ee1b8dbd.wav": "2e5ad30df3431785bda749a103b06e96362f0d6f8daae4ab7640cd92899079c2",
    "audio_test_shifted/f63a48c7.wav": "737526251d17777316167800f50d4ffaf900b966adec9df9a341ccc7110b8c84",
    "audio_train/00b37868.wav": "d6f500bfb18a0b3f21b978573e49a5b1253c9d9a957395c54e1742b3750e080b",
    "audio_train/043b27b6.wav": "220e861d71301d5e9d1662ac544f64f673fb4caa35a27fc22d694d08c97c16c7",
    "audio_train/05a8792e.wav": "16a09b2be3ff7dab8d1ad5aa7e1d14c424eee8c7e7bc5acef6f024cc1535088f",
    "audio_train/073ff53d.wav": "7a7c73e54c589969c12f9926530c58abef188cb7a63992e30618538db1024eec",
    "audio_train/08991073.wav": "f87b978463a41941317539bf86b2a05cfc596e03e7584fd6f411274e27949d97",
    "audio_train/0a7d3da9.wav": "030ce60006e0485d7425718b5546f2f6842a54ed353f2b886b50f5179c7ac9bc",
    "audio_train/1342f01d.wav": "927c35732ca5141990e239040b572940da02b3f2bc06d7a7095175fb0854101a",
    "audio_train/14951238.wav": "908f936bf66dc9a153e2195a4535571207e058bb2766d369c8ff11f17c259bac",
    "audio_train/16db7f0e.wav": "3dc96ab9961ddd06ef2fd326d20da92dce4a2a434138fc86249ef54d66e603eb",
    "audio_train/2cde513b.wav": "74b3e4da4b72fea95f504cb51cad07844ac15f2bd5d315b8737d48445e23a0a4",
    "audio_train/2cf7c449.wav": "0c160e3e91617726f51290603190c19e82dfe7df0b51b4afeab955c14d4de2ea",
    "audio_train/4510bdf8.wav": "cec9a5fee5f08d2a3004e09baff337ad80cee04ce1bc8d83cdda4ca162e54d5b",
    "audio_train/4700374c.wav": "cd127317f351e00256efc91dbc40f426f6b73de4e3e12bd87e3e2c817300c15a",
    "audio_train/4cb9eb20.wav": "e3951bfd44126f1fa08567368585c8149769fc04bc7e6edc8f7877504b29850c",
    "audio_train/4ecde8b8.wav": "206670b80839167034508281fab097556b95d5a3d14bd653b559b290930d3a5c",
    "audio_train/64e6f5f0.wav": "6c26a63de6af91aedb8a7a471fc213c4b5a7586e9e4d7ed6aae677bf250bb33a",
    "audio_train/673aa30c.wav": "7f45af75692a383db2aa532c0664b6716cd2966947acd047fbd0b6a4aeaea269",
    "audio_train/6c353acf.wav": "710d3cd506a1464fb403e79cc2f76bc532819f8f7c88734950d826fb7867d7cb",
    "audio_train/7b26d6f1.wav": "c19e70cd395847fb5d22a7f01e01e3dd8e9099cddf8383993f7ec61f3f2558cd",
    "audio_train/80edb27f.wav": "b79ff7546068bc02bb7759f25667afebda6d5406efedafc26d516ff732fb4816",
    "audio_train/82d9d721.wav": "286fd7816232a838d15377d769a4132b6a39497d968017178a22eb21cc747123",
    "audio_train/8a9d33d9.wav": "e932e8a8fea107e6f74592b13abe827641b64f0b6e83e93202cd4566d30fe478",
    "audio_train/8b2b01e7.wav": "82f2b9959b90b1ddf0b761649b384a8bbfc6f8e6ed791c141fa72d8c49f4ee14",
    "audio_train/8de7951f.wav": "034ab3481f3da8ffea330dcb47dd469e9581f021f5005a1ab5b7dace183625be",
    "audio_train/8f56bfed.wav": "45ab1bb6cf2d834dcd005b5e95125cfd5e3823e0649de206ccc1f24b797bcad8",
    "audio_train/9b4c7b71.wav": "24a688daeb83768e85753deac124ac4cb30d72d3f5966c507a4643e31287ba78",
    "audio_train/a1dc7fbf.wav": "db74a40f87558fe7fb5862b05d36ebefe5e95cb7fcf89a3f39162749f650fa44",
    "audio_train/a30febcf.wav": "3a86bb6a169d83e98163ba2ef627977ab479b09a7592bb47e7b27704466d331b",
    "audio_train/a6401c4e.wav": "cacf57bb7630fa6aa3fc7378ed1771cb7c3f5665b40056f2c210e7d23e77f26c",
    "audio_train/abbe90b0.wav": "5f9a6db69a1668706f49663f8119e1dbc53bdf7e8583305fd037a9051bd7cc53",
    "audio_train/bac0495f.wav": "06e2b0c35b68b025651639a9a08a3108ebd7ae3485a9151c68878a9f928a0c73",
    "audio_train/bacab307.wav": "32e6ccea1b0c9b7a5a7864bd2ca9c8b586cac7f1e3f945d3933179ea5f1cea5e",
    "audio_train/c3cfd379.wav": "01897b2566742b911cf1bd00e0ef175e6a254daf3d4dd3bf5b16b4a36072fa71",
    "audio_train/d0327a78.wav": "53c4016ff2b5ed34e9fb11feda3b9d69945590b8415f8e38c116ff4a9f0e6124",
    "audio_train/d0dbc74d.wav": "324907113c14c1f2d0c66877b1663ad9ef74e5c336420f85d182e32b60d9aa6f",
    "audio_train/d8b927a6.wav": "20602fa7c3157f6575ad4fb74998be1a257f5b26ee3c8beda4cfb8fe57e18171",
    "audio_train/d9c2825f.wav": "313c82a8b3a9f2863203a92e02f5c39904d97be8a6d44d5d2aba8064e630d089",
    "audio_train/db7ed8bf.wav": "3b948a3282df3ec1c2326addd39c3192d71ac3c282a95cb8b5046210da6022f9",
    "audio_train/dcf94b3a.wav": "73ef1439140f2e80ff3efb5bfab2c49cbe60536f1d621c12ddb2375e1d3e39e4",
    "audio_train/e9aa5979.wav": "2c9f5e45b949f2468fd40c2fad60b49afaff445bd6d8b903ee48a45fa95dfbd9",
    "audio_train/ef60e807.wav": "9cfea7a1542b494e563409e1ec622a49a380d560dd471050e3a85ebbb320de4d",
    "audio_train/f8829a45.wav": "e2a01da0178162e6db123cce973d1e04cc3ecdf0a77dcb6717f67aa92ed6fc72",
    "sample_submission.csv": "72fece9b840fe88cafcb49c59b834821421f093e399a88db3062b49666e208e4",
    "test_post_competition.csv": "6009bf9f5e31a03d4b84dd6bf7fe8189ed4ca2ca26d6e78b32131a397434f64c",
    "test_shifted.csv": "adde9374a118570f93bcc34fc68bf921d28c57aa123933131d0061b501f96a70",
    "train.csv": "948f371450f918f7758147d3e0136bb233ee49ee2c7bce96c14905c0dab2de85",
}
REFERENCE_DEFAULT_PLAN_DIGEST = "ca98bc2d038204bf88800f711bcbfe9c8610208909283ad7136bd8576b5b4a03"


def test_generated_bytes_match_the_reference_digests(small):
    assert _digests(small, _all_files(small)) == REFERENCE_DIGESTS
    plan_csv = plan_dataset(DemoSettings()).to_csv(index=False).encode()
    assert hashlib.sha256(plan_csv).hexdigest() == REFERENCE_DEFAULT_PLAN_DIGEST
