"""Preprocessing: the feature cache written from real wav files (the demo generator's instrument clips and
hand-made broken ones), checked against librosa; bad-input report; resume after an interruption; the
real Hydra entry point (cache keying, no-op rerun, refused file names)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from fstag.data.feature_store import FeatureStore, FeatureStoreError, feature_dir, read_report
from fstag.data.feature_config import FeatureConfig, feature_key
from fstag.data.features import reference_features_from_file
from fstag.data.job import PreprocessSettings, preprocess

REPO = Path(__file__).resolve().parent.parent
SETTINGS = PreprocessSettings(num_workers=2, chunk_size=4, progress=False)


def tone(seconds: float, sr: int, seed: int, channels: int = 1) -> np.ndarray:
    """A decaying harmonic tone with noise between silent margins."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * rng.uniform(150, 600) * k * t) / k for k in range(1, 6)) * np.exp(-2 * t)
    y = np.concatenate([np.zeros(sr // 5), 0.3 * y + 1e-3 * rng.standard_normal(t.size), np.zeros(sr // 4)])
    return np.stack([y, 0.5 * y], axis=1).astype(np.float32) if channels == 2 else y.astype(np.float32)


def write_dataset(root: Path, n_train: int, n_test: int, extra_train: list[str] = ()) -> None:
    """A dataset in the Kaggle layout with short 44.1 kHz tones (and extra train.csv names)."""
    for split, n in (("train", n_train), ("test", n_test)):
        (root / f"audio_{split}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sf.write(root / f"audio_{split}" / f"{split}{i:02d}.wav", tone(0.3 + 0.2 * i, 44100, seed=i), 44100,
                     subtype="PCM_16")
    train = [f"train{i:02d}.wav" for i in range(n_train)] + list(extra_train)
    pd.DataFrame({"fname": train, "label": "Cello", "manually_verified": 1}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"fname": [f"test{i:02d}.wav" for i in range(n_test)], "label": "x"}).to_csv(
        root / "sample_submission.csv", index=False)


def add_train_rows(root: Path, names: list[str]) -> None:
    df = pd.read_csv(root / "train.csv", dtype=str)
    extra = pd.DataFrame({"fname": names, "label": "Cello", "manually_verified": "1"})
    pd.concat([df, extra]).to_csv(root / "train.csv", index=False)


def as_f32(store: FeatureStore, fname: str) -> np.ndarray:
    return np.asarray(store[store.index_of(fname)], dtype=np.float32)


@pytest.fixture(scope="module")
def demo_with_bad_files(tmp_path_factory):
    """The demo generator's tiny data set plus broken and unusual files listed in train.csv, preprocessed."""
    from fstag.data.demo import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_dataset(root, progress=False, n_train=21, n_test=4, n_shifted=0, max_duration=3.0, seed=3, workers=1)
    audio = root / "audio_train"
    (audio / "text.wav").write_text("this is not audio\n" * 20)
    (audio / "empty.wav").write_bytes(b"")
    sf.write(audio / "noframes.wav", np.zeros(0, np.float32), 44100, subtype="PCM_16")
    sf.write(audio / "full.wav", tone(1.0, 44100, seed=5), 44100, subtype="PCM_16")
    (audio / "cut_header.wav").write_bytes((audio / "full.wav").read_bytes()[:30])
    (audio / "cut_data.wav").write_bytes((audio / "full.wav").read_bytes()[:20000])
    sf.write(audio / "stereo48k.wav", tone(1.5, 48000, seed=6, channels=2), 48000, subtype="PCM_16")
    sf.write(audio / "silence.wav", np.zeros(44100, np.float32), 44100, subtype="PCM_16")
    names = ["text.wav", "empty.wav", "noframes.wav", "cut_header.wav", "cut_data.wav", "missing.wav",
             "stereo48k.wav", "silence.wav"]
    add_train_rows(root, names)
    features_dir = root / "features"
    directory, summaries = preprocess(root, features_dir, FeatureConfig(), SETTINGS)
    return root, directory, summaries


def test_cache_layout_and_values(demo_with_bad_files):
    root, directory, summaries = demo_with_bad_files
    assert directory == feature_dir(root / "features", FeatureConfig()) and directory.name == feature_key(FeatureConfig())
    assert {p.name for p in directory.iterdir()} == {
        "features.yaml", "report.csv", "train.f16", "train.index.csv", "test.f16", "test.index.csv",
        ".preprocess.lock"}  # the writer lock (fstag.data.job), left in place for the next run
    train, test = FeatureStore.open(directory, "train"), FeatureStore.open(directory, "test")
    csv_train = pd.read_csv(root / "train.csv")["fname"].tolist()
    assert train.fnames == [f for f in csv_train if f in train]  # CSV order
    assert len(train) == 21 + 3 and len(test) == 4
    assert [s.stored for s in summaries] == [24, 4] and [s.skipped for s in summaries] == [5, 0]
    for name in [*train.fnames[:3], "stereo48k.wav", "cut_data.wav"]:
        ref = reference_features_from_file(root / "audio_train" / name, FeatureConfig())
        got = as_f32(train, name)
        assert got.shape == ref.shape and train[train.index_of(name)].dtype == np.float16
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=2e-3, err_msg=name)  # float16 rounding
    assert train.lengths[train.index_of("silence.wav")] == 1 + 22050 // 220  # pure silence: untrimmed
    assert train.lengths.dtype == np.int64 and int(train.lengths.sum()) * 3 * 64 * 2 == (directory / "train.f16").stat().st_size


def test_bad_files_are_reported_not_fatal(demo_with_bad_files):
    _, directory, _ = demo_with_bad_files
    reasons = {r["fname"]: r["reason"] for r in read_report(directory)}
    assert set(reasons) == {"text.wav", "empty.wav", "noframes.wav", "cut_header.wav", "missing.wav"}
    assert "cannot decode" in reasons["text.wav"] and "cannot decode" in reasons["empty.wav"]
    assert "cannot decode" in reasons["cut_header.wav"]
    assert reasons["noframes.wav"] == "empty audio (0 samples)" and reasons["missing.wav"] == "file not found"
    assert all(r["split"] == "train" for r in read_report(directory))


def test_store_api(demo_with_bad_files, tmp_path):
    _, directory, _ = demo_with_bad_files
    store = FeatureStore.open(directory, "test")
    name = store.fnames[1]
    assert name in store and "nope.wav" not in store and store.index_of(name) == 1
    with pytest.raises(KeyError, match="nope.wav"):
        store.index_of("nope.wav")
    with pytest.raises(IndexError):
        store[len(store)]
    clone = pickle.loads(pickle.dumps(store))  # what a spawned DataLoader worker receives
    assert clone._mmap is None and np.array_equal(clone[1], store[1])
    pid = os.fork()  # a forked worker opens its own memory map on first access
    if pid == 0:
        os._exit(0 if store._pid != os.getpid() and np.array_equal(store[1], clone[1]) else 1)
    assert os.waitpid(pid, 0)[1] == 0
    with pytest.raises(FeatureStoreError, match=str(tmp_path)):
        FeatureStore.open(tmp_path, "train")
    with pytest.raises(FeatureStoreError, match="valid.index.csv"):
        FeatureStore.open(directory, "valid")


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, n_train=11, n_test=2)
    cfg = FeatureConfig()
    _, full = preprocess(root, tmp_path / "full", cfg, SETTINGS)

    def stop(split, n_done):
        raise Interrupt(f"{split} {n_done}")

    with pytest.raises(Interrupt, match="train 4"):
        preprocess(root, tmp_path / "cut", cfg, SETTINGS, on_commit=stop)
    directory = feature_dir(tmp_path / "cut", cfg)
    assert (directory / "train.progress.csv").is_file() and not (directory / "train.index.csv").exists()
    assert not (directory / "train.f16").exists()
    with open(directory / "train.f16.part", "ab") as fh:  # data written after the last commit
        fh.write(b"\x01" * 1000)
    _, resumed = preprocess(root, tmp_path / "cut", cfg, SETTINGS)
    assert [s.computed for s in full] == [11, 2] and [s.computed for s in resumed] == [7, 2]
    reference = feature_dir(tmp_path / "full", cfg)
    for name in ("train.f16", "train.index.csv", "test.f16", "test.index.csv", "report.csv"):
        assert (directory / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(directory.glob("*.part")) and not list(directory.glob("*.progress.csv"))

    add_train_rows(root, ["test00.wav"])  # a new train.csv row: only it is computed
    (root / "audio_train" / "test00.wav").write_bytes((root / "audio_test" / "test00.wav").read_bytes())
    _, grown = preprocess(root, tmp_path / "cut", cfg, SETTINGS)
    assert [s.computed for s in grown] == [1, 0]
    store = FeatureStore.open(directory, "train")
    assert len(store) == 12 and np.array_equal(store[store.index_of("test00.wav")],
                                               FeatureStore.open(directory, "test")[0])


def run_entry(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSTAG_")}
    env.update(FSTAG_ROOT=str(tmp_path / "fstag_root"), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "preprocess.py"), *overrides, "preprocess.progress=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_entry_point_cache_keys_and_errors(tmp_path):
    root = tmp_path / "ds"
    write_dataset(root, n_train=3, n_test=1, extra_train=["bad.wav"])
    (root / "audio_train" / "bad.wav").write_text("not a wav")
    args = ("data=fsdkaggle2018", f"data.root={root}")

    first = run_entry(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    directory = feature_dir(root / "features", FeatureConfig())
    assert len(FeatureStore.open(directory, "train")) == 3 and len(FeatureStore.open(directory, "test")) == 1
    assert f"1 file(s) skipped" in first.stdout and str(directory / "report.csv") in first.stdout
    assert (tmp_path / "fstag_root" / "outputs" / "preprocess").is_dir()  # Hydra's run folder under FSTAG_ROOT

    again = run_entry(tmp_path, *args)
    assert again.returncode == 0 and f"features up to date: {directory} (4 clips)" in again.stdout

    other = run_entry(tmp_path, *args, "features.trim_top_db=40")
    other_dir = feature_dir(root / "features", FeatureConfig(trim_top_db=40))
    assert other.returncode == 0 and other_dir != directory and (other_dir / "train.index.csv").is_file()
    assert "features: 5 files processed" in other.stdout

    add_train_rows(root, ["../outside.wav"])
    refused = run_entry(tmp_path, *args)
    assert refused.returncode != 0 and "'../outside.wav'" in refused.stderr and "train.csv" in refused.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_preprocess_on_cuda_matches_the_cpu_cache(demo_project, tmp_path):
    """``preprocess.py preprocess.device=cuda`` through the entry point: the same clips, the same frames and
    features within float16 rounding of the session's CPU cache."""
    from tests.conftest import TINY_DEMO

    features = tmp_path / "features"
    demo_project.run("preprocess.py", "data=demo", *TINY_DEMO, f"data.features_dir={features}", "preprocess.device=cuda")
    (cache,) = [p.parent for p in features.glob("*/features.yaml")]
    (reference,) = [p.parent for p in (demo_project.root / "data" / "demo" / "features").glob(f"{cache.name}/features.yaml")]
    for split in ("train", "test"):
        got, ref = FeatureStore.open(cache, split), FeatureStore.open(reference, split)
        assert got.fnames == ref.fnames and list(got.lengths) == list(ref.lengths)
        for i in range(len(ref)):
            a, b = np.asarray(got[i], np.float32), np.asarray(ref[i], np.float32)
            assert np.abs(a[0] - b[0]).max() < 0.1, (split, ref.fnames[i])  # dB
