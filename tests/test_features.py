"""Features: the config and its key, the waveform steps against librosa, and the batched torch path against
the librosa reference on realistic audio (harmonic tones with vibrato, decay, noise and silent margins)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from fstag.data.audio import read_audio, resample, trim_bounds
from fstag.core.config import CONFIG_DIR
from fstag.data.extract import compute_features_for_files
from fstag.data.feature_config import FeatureConfig, feature_key
from fstag.data.features import (
    TorchFeatureExtractor,
    librosa_logmel_deltas,
    reference_features_from_file,
    savgol_deriv_kernel,
)

# Tolerances of the torch path against librosa (float32 both). Measured max (mean): on the batch of
# waveforms below (1 sample .. 30 s) log-mel 7e-4 dB (5e-6), delta 1e-4 (9e-7), delta-delta 7e-5 (7e-7);
# from files (75 demo clips, decode/trim/resample included) log-mel 4e-3 dB (8e-6), delta 6e-4 (1e-6),
# delta-delta 4e-4 (7e-7). Asserted with headroom:
LOGMEL_MAX, LOGMEL_MEAN = 0.02, 1e-3  # dB
DELTA_MAX, DELTA_MEAN = 0.01, 1e-4


def tone(seconds: float, sr: int, seed: int, margin: float = 0.2, channels: int = 1) -> np.ndarray:
    """A decaying harmonic tone with vibrato and background noise between silent margins."""
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    f0 = rng.uniform(110, 880)
    phase = 2 * np.pi * f0 * (t + 0.002 * np.sin(2 * np.pi * 5 * t))
    y = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 7)) * np.exp(-t * rng.uniform(0.2, 3))
    y = 0.3 * y + 10 ** rng.uniform(-4, -2.5) * rng.standard_normal(n)
    pad = np.zeros(int(margin * sr))
    y = np.concatenate([pad, y, pad])
    if channels > 1:
        y = np.stack([y * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return y.astype(np.float32)


def diffs(ref: np.ndarray, got: np.ndarray) -> list[tuple[float, float]]:
    d = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    return [(float(d[c].max()), float(d[c].mean())) for c in range(3)]


def assert_close(ref: np.ndarray, got: np.ndarray, what: str, delta_scale: float = 1.0) -> None:
    assert ref.shape == got.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    (m0, a0), (m1, a1), (m2, a2) = diffs(ref, got)
    assert m0 < LOGMEL_MAX and a0 < LOGMEL_MEAN, f"{what}: log-mel max {m0:.2e} mean {a0:.2e}"
    assert m1 < DELTA_MAX * delta_scale and a1 < DELTA_MEAN * delta_scale, f"{what}: delta max {m1:.2e} mean {a1:.2e}"
    assert m2 < DELTA_MAX and a2 < DELTA_MEAN, f"{what}: delta2 max {m2:.2e} mean {a2:.2e}"


# Lengths at 22.05 kHz: 1 sample (1 frame), 5 frames, 8 frames (< delta width), exactly 9, 0.5 s,
# 3 s and 30 s, all in one zero-padded batch.
LENGTHS = [1, 1000, 1759, 1760, 11025, 66150, 661500]


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    return [tone(n / 22050, 22050, seed=i, margin=0.0)[:n] for i, n in enumerate(LENGTHS)]


def test_config_from_group_file_and_key():
    group = OmegaConf.load(f"{CONFIG_DIR}/features/logmel64.yaml")
    cfg = FeatureConfig.from_cfg(group)
    assert cfg == FeatureConfig()
    assert feature_key(cfg) == feature_key(FeatureConfig.from_cfg({**OmegaConf.to_container(group), "trim_top_db": 60}))
    assert feature_key(cfg).startswith("logmel64-")
    assert feature_key(cfg) != feature_key(FeatureConfig(trim_top_db=40))
    assert feature_key(cfg) != feature_key(FeatureConfig(delta_of="power"))
    with pytest.raises(ValueError, match="unknown feature setting"):
        FeatureConfig.from_cfg({"n_mel": 64})
    for bad in ({"delta_width": 4}, {"delta_of": "db"}, {"fmax": 20000.0}, {"name": "../x"}):
        with pytest.raises(ValueError):
            FeatureConfig(**bad)


@pytest.mark.parametrize("width", [3, 5, 9, 11])
@pytest.mark.parametrize("order", [1, 2])
def test_savgol_kernel_equals_scipy(width, order):
    from scipy.signal import savgol_coeffs

    expected = savgol_coeffs(width, polyorder=order, deriv=order, use="conv")[::-1]
    np.testing.assert_allclose(savgol_deriv_kernel(width, order), expected, rtol=0, atol=1e-12)


def test_trim_bounds_equal_librosa():
    import librosa

    rng = np.random.default_rng(0)
    signals = [np.zeros(5000, np.float32), np.zeros(1, np.float32), np.full(3000, 0.5, np.float32)]
    for i in range(60):
        sr = int(rng.choice([8000, 22050, 44100, 48000]))
        y = tone(rng.uniform(0.001, 3.0), sr, seed=i, margin=rng.uniform(0, 0.7))
        y[: int(rng.integers(0, y.size))] *= 10 ** rng.uniform(-6, 0)  # quiet or silent lead-ins
        signals.append(y)
    for y in signals:
        for top_db in (60, 30):
            _, expected = librosa.effects.trim(y, top_db=top_db)
            assert trim_bounds(y, top_db) == tuple(int(v) for v in expected), (y.size, top_db)


def test_resample_equals_librosa():
    import librosa

    for n in (1, 2, 37, 4410, 100_003):
        y = tone(n / 44100, 44100, seed=n, margin=0)[:n]
        for sr in (8000, 11025, 22050, 44100, 48000, 96000):
            expected = librosa.resample(y, orig_sr=sr, target_sr=22050)
            got = resample(y, sr, 22050)
            assert got.dtype == np.float32 and np.array_equal(got, expected), (n, sr)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
@pytest.mark.parametrize("channels", [1, 2])
def test_read_audio_equals_librosa_load(tmp_path, subtype, channels):
    import librosa

    path = tmp_path / "a.wav"
    sf.write(path, tone(0.3, 48000, seed=1, channels=channels), 48000, subtype=subtype)
    y, sr = read_audio(path)
    expected, expected_sr = librosa.load(path, sr=None)
    assert sr == expected_sr == 48000 and y.dtype == np.float32 and np.array_equal(y, expected)


@pytest.mark.parametrize("delta_of", ["log", "power"])
def test_torch_path_matches_librosa(waves, delta_of):
    cfg = FeatureConfig(delta_of=delta_of)
    batched = TorchFeatureExtractor(cfg)(waves)
    for w, got in zip(waves, batched):
        ref = librosa_logmel_deltas(w, cfg)
        # the power-mel delta is in power units (up to ~1e2 here): compare it relative to its range
        scale = max(1.0, float(np.abs(ref[1]).max())) if delta_of == "power" else 1.0
        assert_close(ref, got, f"{w.size} samples, batched", delta_scale=scale)
        assert got.dtype == np.float32 and got.flags.c_contiguous
    single = TorchFeatureExtractor(cfg)([waves[2]])[0]
    np.testing.assert_allclose(single, batched[2], rtol=0, atol=1e-4)  # padding does not leak in


def test_float16_output_is_clipped_and_close(waves):
    cfg = FeatureConfig(delta_of="power")
    ext = TorchFeatureExtractor(cfg)
    loud = [w * 1000 for w in waves[4:6]]  # power-mel deltas beyond float16's range
    f16 = ext(loud, dtype=np.float16)
    f32 = ext(loud)
    for a, b in zip(f16, f32):
        assert a.dtype == np.float16 and np.isfinite(a).all()
        np.testing.assert_allclose(a[0], b[0], rtol=2e-3, atol=0.05)


def test_files_pipeline_matches_seed_reference(tmp_path):
    """Decode -> trim -> resample -> torch against librosa.load -> trim -> resample -> librosa."""
    specs = [("a.wav", 44100, 1, 2.0, "PCM_16"), ("b.wav", 48000, 2, 1.0, "PCM_24"),
             ("c.wav", 8000, 1, 0.05, "PCM_16"), ("d.wav", 22050, 1, 7.0, "FLOAT")]
    paths = []
    for i, (name, sr, ch, sec, subtype) in enumerate(specs):
        sf.write(tmp_path / name, tone(sec, sr, seed=10 + i, channels=ch), sr, subtype=subtype)
        paths.append(tmp_path / name)
    (tmp_path / "bad.wav").write_text("not audio")
    sf.write(tmp_path / "silent.wav", np.zeros(4410, np.float32), 44100, subtype="PCM_16")
    paths += [tmp_path / "bad.wav", tmp_path / "missing.wav", tmp_path / "silent.wav"]
    cfg = FeatureConfig()
    feats, errors = compute_features_for_files(paths, cfg, num_workers=2)
    for p, f, e in zip(paths[:4], feats, errors):
        assert e is None
        assert_close(reference_features_from_file(p, cfg), f, p.name)
    assert feats[4] is None and "cannot decode" in errors[4]
    assert feats[5] is None and errors[5] == "file not found"
    assert errors[6] is None and feats[6].shape == (3, 64, 1 + 2205 // 220)  # silence keeps its length
    assert np.all(feats[6][0] == -100.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_librosa(waves):
    cfg = FeatureConfig()
    got = TorchFeatureExtractor(cfg, device="cuda")(waves)
    for w, g in zip(waves, got):
        assert_close(librosa_logmel_deltas(w, cfg), g, f"{w.size} samples on CUDA")
