"""The torch-free predictor (fstag.infer.numpy_predictor, what a served ONNX model runs) against the torch one
(fstag.infer.predictor, what predict.py runs): the same crops, padding offsets and masks, drawn from the same seeds,
the same windows, the same combinations; and the librosa feature engine against the torch one on real audio."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fstag.core.task import get_task
from fstag.infer import numpy_predictor as nump
from fstag.infer import predictor as torchp

N_MELS, CROP, LABELS = 8, 20, 5
AUG = {"specmask_concat": True, "time_mask": 6, "freq_mask": 3, "mask_value": 0.0}


def test_torch_randint_draws_torchs_integers():
    rnd = random.Random(7)
    for _ in range(300):
        seed = rnd.getrandbits(63)
        highs = [rnd.choice([1, 2, 3, 17, 640, 2**20 + 3, nump.MAX_RANGE]) for _ in range(5)]
        g = torch.Generator().manual_seed(seed)
        expected = [int(torch.randint(0, h, (1,), generator=g)) for h in highs]
        rng = nump.TorchRandint(seed)
        assert [rng.below(h) for h in highs] == expected, (seed, highs)
    for bad in (0, nump.MAX_RANGE + 1):
        with pytest.raises(ValueError, match="must be between 1 and"):
            nump.TorchRandint(0).below(bad)


class Linear(torch.nn.Module):
    """A network that sees every input value at its place: logits = flattened crop @ W (only crop-long inputs)."""

    def __init__(self, w: np.ndarray):
        super().__init__()
        self.w = torch.from_numpy(w)

    def forward(self, x):
        return x.flatten(1) @ self.w


def _clips(rng: np.random.Generator) -> list:
    lengths = [1, 7, 19, 20, 21, 33, 40, 57, 90]
    clips = [(rng.normal(-40, 15, (3, N_MELS, t))).astype(np.float32) for t in lengths]
    clips.append(np.full((3, N_MELS, 30), -100.0, dtype=np.float32))  # silent
    clips.append(None)  # unreadable
    return clips


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
@pytest.mark.parametrize("mode,aug,pad_value,reduce", [
    ("crops", {}, 0.0, "mean"),
    ("crops", AUG, None, "mean"),
    ("crops", AUG, -80.0, "mean"),
    ("windows", {}, 0.0, "mean"),
    ("windows", {}, None, "max"),
])
def test_the_numpy_predictor_gives_the_torch_predictors_probabilities(task, mode, aug, pad_value, reduce):
    rng = np.random.default_rng(3)
    w = (rng.normal(0, 0.02, (3 * N_MELS * CROP, LABELS))).astype(np.float32)
    clips = _clips(rng)
    fnames = [f"clip_{i}.wav" for i in range(len(clips))]
    kw = dict(crop_frames=CROP, aug=aug, mode=mode, pad_value=pad_value, n_passes=4, hop_frames=7, seed=11,
              batch_size=3, num_classes=LABELS, task=get_task(task), window_reduce=reduce)
    expected, silent_t = torchp.predict_probs(Linear(w), clips, fnames, **kw)
    got, silent_n = nump.predict_probs(lambda x: x.reshape(len(x), -1) @ w, clips, fnames, **kw)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(clips), LABELS)
    assert silent_n.tolist() == silent_t.tolist() == [False] * 9 + [True, False]
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
    blank = 0.0 if task == "multi_label" else 1.0 / LABELS
    assert np.all(got[-2:] == blank)
    # the crops depend on the clip's name, not on its place in the list nor the batch size
    again, _ = nump.predict_probs(lambda x: x.reshape(len(x), -1) @ w, clips[::-1], fnames[::-1], **{**kw, "batch_size": 2})
    np.testing.assert_allclose(again[::-1], got, atol=1e-5, rtol=0)  # BLAS rounds a batch of 2 otherwise


def test_the_numpy_windows_are_the_torch_windows():
    x = np.arange(3 * 2 * 23, dtype=np.float32).reshape(3, 2, 23)
    for length, hop in ((5, 2), (5, 5), (23, 4), (30, 10), (4, 7)):
        t_windows = [w.numpy() for w in torchp.iter_windows([torch.from_numpy(x)], length, hop, 0.0)]
        n_windows = list(nump.iter_windows(x, length, hop, 0.0))
        assert len(n_windows) == len(t_windows), (length, hop)
        for a, b in zip(n_windows, t_windows):
            np.testing.assert_array_equal(a, b)


def test_the_librosa_engine_gives_the_torch_engines_features(tmp_path):
    """Real files (a tone with noise, a short click, a file that is not audio): the same frames, values within the
    tolerances fstag.data.features states for its two implementations, the same error for the bad file."""
    import soundfile as sf

    from fstag.data.extract import compute_features_for_files
    from fstag.data.feature_config import FeatureConfig

    rng = np.random.default_rng(0)
    t = np.arange(int(1.3 * 22050)) / 22050
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 660 * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32), 22050)
    sf.write(tmp_path / "click.flac", (0.5 * rng.normal(size=900)).astype(np.float32), 16000)
    (tmp_path / "bad.wav").write_bytes(b"no audio here " * 20)
    paths = [tmp_path / "tone.wav", tmp_path / "click.flac", tmp_path / "bad.wav"]
    cfg = FeatureConfig()
    ref, ref_err = compute_features_for_files(paths, cfg, num_workers=2, engine="torch")
    got, got_err = compute_features_for_files(paths, cfg, num_workers=2, engine="librosa")
    assert got[2] is None and ref[2] is None and got_err[2] == ref_err[2] and "bad.wav" in got_err[2]
    for a, b in zip(got[:2], ref[:2]):
        assert a.shape == b.shape and a.dtype == np.float32
        assert np.abs(a[0] - b[0]).max() < 0.02 and np.abs(a[1:] - b[1:]).max() < 0.01
    with pytest.raises(ValueError, match="feature engine 'numpy': choose one of"):
        compute_features_for_files(paths, cfg, engine="numpy")


NO_TORCH = """
import importlib, importlib.abc, sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "torchvision", "timm", "pytorch_lightning", "lightning"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")


sys.meta_path.insert(0, NoTorch())
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported")
"""


def test_what_a_served_onnx_model_runs_imports_without_torch():
    """The modules of the ONNX backend's request path (tests/test_serving.py serves a whole model so)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    modules = ["fstag.serve.pyfunc", "fstag.serve.tagger", "fstag.serve.onnx_export", "fstag.infer.numpy_predictor",
               "fstag.data.extract", "fstag.ensemble.blending", "fstag.ensemble.calibration", "fstag.core.task"]
    res = subprocess.run([sys.executable, "-c", NO_TORCH, *modules], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "imported", res.stderr[-3000:]
    blocked = subprocess.run([sys.executable, "-c", NO_TORCH, "fstag.infer.predictor"], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert blocked.returncode != 0 and "blocked by the test" in blocked.stderr  # the check can fail
