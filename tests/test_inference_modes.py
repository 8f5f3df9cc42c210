"""Inference without the entry points: crops seeded by fname, windows, long files streamed in chunks, silence."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fstag.data.audio import load_clip, stream_clip
from fstag.data.feature_config import FeatureConfig
from fstag.data.features import TorchFeatureExtractor, is_silent
from fstag.data.long_clips import LongClip, iter_long_features
from fstag.infer.predictor import clip_seed, iter_windows, predict_probs

REPO = Path(__file__).resolve().parent.parent
CFG = FeatureConfig()


def _tone_file(path: Path, seconds: float, sr: int = 44100, seed: int = 0) -> Path:
    """Bursts of a harmonic tone in noise, with silent margins (trimmed), 16-bit PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 330 * t) * (np.sin(2 * np.pi * 0.4 * t) > 0) + 0.01 * rng.standard_normal(t.size)
    y[:sr // 2] = 0
    y[-sr // 2 :] = 0
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
    return path


def _model(n_mels: int = 64, n_classes: int = 6) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d((8, 8)), torch.nn.Flatten(), torch.nn.Linear(3 * 64, n_classes))


def test_clip_seed_is_a_stable_hash_of_seed_pass_and_fname():
    assert clip_seed(1234, 1, "a.wav") == clip_seed(1234, 1, "a.wav")
    seeds = {clip_seed(s, p, f) for s in (1, 2) for p in range(5) for f in ("a.wav", "b.wav", "7919.wav")}
    assert len(seeds) == 2 * 5 * 3 and all(0 <= s < 2**63 for s in seeds)
    # a fixed value: the hash must not change between Python processes (no salted hash())
    assert clip_seed(1234, 0, "x.wav") == int.from_bytes(
        __import__("hashlib").blake2b(b"1234\x1f0\x1fx.wav", digest_size=8).digest(), "little") & (2**63 - 1)


def test_crops_follow_the_fname_not_the_position():
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal((3, 64, n)).astype(np.float32) for n in (90, 400, 260, 151)]
    fnames = ["a.wav", "b.wav", "c.wav", "d.wav"]
    kw = dict(crop_frames=150, aug={"specmask_concat": True, "time_mask": 30, "freq_mask": 15, "mask_value": 0.0},
              n_passes=4, seed=3, batch_size=1, num_classes=6)
    probs, _ = predict_probs(_model(), clips, fnames, **kw)
    order = [2, 0, 3, 1]
    shuffled, _ = predict_probs(_model(), [clips[i] for i in order], [fnames[i] for i in order], **kw)
    np.testing.assert_array_equal(shuffled, probs[order])
    alone, _ = predict_probs(_model(), clips[1:2], fnames[1:2], **kw)
    np.testing.assert_array_equal(alone[0], probs[1])
    renamed, _ = predict_probs(_model(), clips[1:2], ["other.wav"], **kw)  # other crops for another name
    assert not np.array_equal(renamed[0], probs[1])


def test_windows_cover_the_clip_and_its_end():
    x = torch.arange(400.0).view(1, 1, 400)
    starts = [int(w[0, 0, 0]) for w in iter_windows([x], 150, 75, 0.0)]
    assert starts == [0, 75, 150, 225, 250]  # the last one flush with the end
    chunked = [int(w[0, 0, 0]) for w in iter_windows([x[..., :130], x[..., 130:131], x[..., 131:]], 150, 75, 0.0)]
    assert chunked == starts
    short = list(iter_windows([x[..., :40]], 150, 75, -1.0))
    assert len(short) == 1 and short[0].shape[-1] == 150 and float(short[0][0, 0, 100]) == -1.0
    assert len(list(iter_windows([x[..., :150]], 150, 75, 0.0))) == 1


def test_windows_mode_is_the_mean_log_probability_of_every_window():
    rng = np.random.default_rng(2)
    clip = rng.standard_normal((3, 64, 330)).astype(np.float32)
    model = _model()
    probs, _ = predict_probs(model, [clip], ["a.wav"], crop_frames=150, aug={}, mode="windows", hop_frames=90,
                             batch_size=2, num_classes=6)
    with torch.no_grad():
        windows = torch.stack([torch.from_numpy(clip[..., s : s + 150]) for s in (0, 90, 180)])
        mean_logp = torch.log_softmax(model(windows), dim=1).mean(0)
    np.testing.assert_allclose(probs[0], torch.softmax(mean_logp, 0).numpy(), rtol=1e-5, atol=1e-7)


def test_long_file_features_in_chunks_equal_the_whole_file(tmp_path):
    path = _tone_file(tmp_path / "long.wav", 12.0)
    np.testing.assert_array_equal(np.concatenate(list(stream_clip(path, CFG, block=512 * 41))), load_clip(path, CFG))
    whole = TorchFeatureExtractor(CFG)([load_clip(path, CFG)])[0]
    for chunk_frames in (700, 9):
        chunks = list(iter_long_features(path, CFG, chunk_frames=chunk_frames))
        assert all(c.shape[-1] < chunk_frames + CFG.delta_width for c in chunks) and len(chunks) >= whole.shape[-1] // chunk_frames
        joined = np.concatenate(chunks, axis=-1)
        assert joined.shape == whole.shape
        # float32 rounding of the same frames (the chunks' STFT and mel products are the whole file's)
        np.testing.assert_allclose(joined, whole, rtol=0, atol=1e-4)


def test_a_long_clip_predicts_as_its_whole_features(tmp_path):
    path = _tone_file(tmp_path / "long.wav", 12.0, seed=4)
    whole = TorchFeatureExtractor(CFG)([load_clip(path, CFG)])[0]
    model = _model()
    for mode in ("windows", "crops"):
        kw = dict(crop_frames=150, aug={}, mode=mode, hop_frames=70, n_passes=3, batch_size=4, num_classes=6)
        ref, _ = predict_probs(model, [whole], ["long.wav"], **kw)
        got, silent = predict_probs(model, [LongClip(path, CFG, chunk_frames=200)], ["long.wav"], **kw)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
        assert not silent[0]


def test_streaming_a_long_file_keeps_memory_bounded(tmp_path):
    """Peak RSS while streaming a 3-minute file, then while computing it whole, in a fresh process."""
    path = _tone_file(tmp_path / "three_minutes.wav", 180.0, sr=22050)
    code = textwrap.dedent(f"""
        from fstag.data.feature_config import FeatureConfig
        from fstag.data.features import TorchFeatureExtractor
        from fstag.data.long_clips import iter_long_features
        from fstag.data.audio import load_clip
        cfg = FeatureConfig()
        def rss():  # peak RSS of this process image in MiB (ru_maxrss would carry the parent's over exec)
            line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
            return int(line.split()[1]) / 1024
        for c in iter_long_features({str(path)!r}, cfg, chunk_frames=1000):  # warm-up: imports, allocator
            break
        base = rss()
        n = sum(c.shape[-1] for c in iter_long_features({str(path)!r}, cfg, chunk_frames=1000))
        streamed = rss() - base
        whole = TorchFeatureExtractor(cfg)([load_clip({str(path)!r}, cfg)])[0]
        assert whole.shape[-1] == n
        print(streamed, rss() - base - streamed, base)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    streamed, whole_extra, base = map(float, res.stdout.split())
    # the whole file's STFT alone is 18,000 frames x 883 bins x 8 bytes = 120 MiB (measured: 250 MiB more
    # at peak); the stream holds a few 1000-frame chunks and its read blocks (measured: 3-5 MiB)
    assert streamed < 40, (streamed, whole_extra, base)
    assert whole_extra > 60, (streamed, whole_extra, base)  # the measurement sees what a whole-file pass costs


def test_silence_is_detected_from_the_features(tmp_path):
    sf.write(tmp_path / "zeros.wav", np.zeros(2 * 44100, dtype=np.int16), 44100, subtype="PCM_16")
    zeros = TorchFeatureExtractor(CFG)([load_clip(tmp_path / "zeros.wav", CFG)])[0]
    assert is_silent(zeros) and is_silent(zeros.astype(np.float16))
    quiet = _tone_file(tmp_path / "quiet.wav", 2.0)
    feats = TorchFeatureExtractor(CFG)([load_clip(quiet, CFG)])[0]
    assert not is_silent(feats)
    probs, silent = predict_probs(_model(), [feats, zeros], ["q.wav", "z.wav"], crop_frames=150, aug={}, num_classes=6)
    assert silent.tolist() == [False, True]
    np.testing.assert_array_equal(probs[1], np.full(6, 1 / 6, dtype=np.float32))
    lc = LongClip(tmp_path / "zeros.wav", CFG, chunk_frames=50)
    probs, silent = predict_probs(_model(), [lc], ["z.wav"], crop_frames=150, aug={}, mode="windows", num_classes=6)
    assert silent.tolist() == [True] and lc.silent and lc.error is None
    np.testing.assert_array_equal(probs[0], np.full(6, 1 / 6, dtype=np.float32))
