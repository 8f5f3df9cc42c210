"""The batch augmentations of the from-scratch recipe, the band statistics, label-noise pruning and the
learning-rate schedules, each as plain functions on tensors with hand-checked outcomes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import fstag.runs.resolvers  # noqa: F401  (registers the ${fstag.*} resolvers of conf/)
from fstag.models.augment import crop_or_pad, silence_canvas
from fstag.data.band_stats import BAND_STATS_NPZ, compute_band_stats, load_or_compute_band_stats
from fstag.models.batch_aug import (
    add_noise, freq_mixstyle, random_eq_curves, recompute_deltas, reverberate, shift_mels, simulate_recording,
    spec_augment,
)
from fstag.data.feature_config import FeatureConfig
from fstag.data.features import TorchFeatureExtractor
from fstag.models.label_noise import LossPruning
from fstag.models.schedules import build_scheduler, lr_factor, warmup_cosine_factor

OFF = {"prob": 1.0, "gain_db": 0.0, "eq_db": 0.0, "reverb_prob": 0.0, "noise_prob": 0.0, "mel_shift": 0.0}


def _features(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """Real features of a synthetic tone-plus-noise recording: (3, 64, T) log-mel dB + deltas."""
    cfg = FeatureConfig()
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * cfg.sample_rate)) / cfg.sample_rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t))
    return torch.from_numpy(TorchFeatureExtractor(cfg)([wave.astype(np.float32)])[0])


def test_recomputed_deltas_equal_the_features_own_away_from_the_edges():
    x = _features()
    d1, d2 = recompute_deltas(x[None, 0])
    np.testing.assert_allclose(d1[0, :, 4:-4], x[1, :, 4:-4], atol=1e-3)
    np.testing.assert_allclose(d2[0, :, 4:-4], x[2, :, 4:-4], atol=1e-3)


def test_recording_simulation_off_or_gain_only():
    torch.manual_seed(0)
    x = torch.stack([_features(seed=s)[..., :150] for s in range(4)])
    assert torch.equal(simulate_recording(x, {**OFF, "prob": 0.0}, 100.0), x)
    out = simulate_recording(x, {**OFF, "gain_db": 12.0}, 100.0)
    shift = (out[:, 0] - x[:, 0]).flatten(1)
    # a gain is one dB offset per clip (the 80 dB floor may clip the quietest cells), deltas unchanged
    offsets = shift.median(dim=1).values
    assert (offsets.abs() <= 12.0 + 1e-4).all() and offsets.abs().max() > 0.5
    assert (shift - offsets[:, None]).abs().median() < 1e-3
    np.testing.assert_allclose(out[:, 1:, :, 4:-4], x[:, 1:, :, 4:-4], atol=2e-3)


def test_eq_curves_are_smooth_and_bounded():
    torch.manual_seed(1)
    eq = random_eq_curves(64, 64, 10.0, "cpu")
    assert eq.abs().amax() <= 10.0 + 1e-5
    assert eq.diff(dim=1).abs().amax() < 3.0  # smooth over neighbouring bands


def test_reverberation_tail_decays_60_db_in_rt60():
    power = torch.zeros(1, 2, 300)
    power[..., 10] = 1.0  # one impulse frame in two bands
    out = reverberate(power, torch.tensor([0.5]), torch.tensor([1.0]), frame_rate=100.0)
    assert (out >= power).all()
    tail = out[0, 0, 11:]
    assert (tail[1:] <= tail[:-1] + 1e-12).all()           # monotone decay
    drop_db = 10 * math.log10(float(tail[0] / tail[50]))   # 0.5 s later, band 0 decays at rt60=0.5 s
    assert 55 < drop_db < 65
    assert out[0, 1, 40] < out[0, 0, 40]                    # the higher band dies faster


def test_noise_at_a_given_snr():
    torch.manual_seed(2)
    power = torch.ones(8, 64, 200)
    same = add_noise(power, torch.full((8,), 300.0), torch.zeros(8), 100.0)
    torch.testing.assert_close(same, power)
    noisy = add_noise(power, torch.zeros(8), torch.zeros(8), 100.0)  # 0 dB: the noise as loud as the clip
    ratio = float((noisy - power).mean() / power.mean())
    assert 0.6 < ratio < 1.6


def test_mel_shift_moves_a_band():
    x = torch.zeros(1, 64, 5)
    x[0, 20] = 1.0
    assert shift_mels(x, torch.tensor([2.0]))[0, 22, 0] == pytest.approx(1.0)
    assert shift_mels(x, torch.tensor([-3.0]))[0, 17, 0] == pytest.approx(1.0)


def test_spec_augment_masks_whole_bands_and_frames():
    torch.manual_seed(3)
    x = torch.ones(16, 3, 64, 150)
    out = spec_augment(x, time_masks=2, time_width=20, freq_masks=2, freq_width=8, value=0.0)
    masked = out == 0
    assert masked.any()
    per_clip = masked[:, 0]
    # every masked cell lies in a fully masked band or a fully masked frame
    full_band = per_clip.all(dim=2, keepdim=True)
    full_frame = per_clip.all(dim=1, keepdim=True)
    assert torch.equal(per_clip, (full_band | full_frame) & per_clip)
    assert full_frame.squeeze(1).sum(dim=1).max() <= 40 and full_band.squeeze(2).sum(dim=1).max() <= 16


def test_freq_mixstyle_mixes_band_statistics_between_clips():
    torch.manual_seed(4)
    a = torch.randn(1, 1, 8, 100) + 5.0
    b = torch.randn(1, 1, 8, 100) * 3 - 5.0
    out = freq_mixstyle(torch.cat([a, b]), prob=1.0, alpha=0.3)
    means = out.mean(dim=3)
    assert (means >= -5.5).all() and (means <= 5.5).all()
    assert torch.equal(freq_mixstyle(torch.cat([a, b]), prob=0.0, alpha=0.3), torch.cat([a, b]))


def test_short_clips_can_be_padded_with_their_own_silence():
    x = torch.stack([torch.full((4, 10), -50.0), torch.ones(4, 10), torch.ones(4, 10)])
    x[0, 0, 0] = -70.0
    assert silence_canvas(x, 20)[0].eq(-70).all() and silence_canvas(x, 20)[1:].eq(0).all()
    padded = crop_or_pad(x, 30, random=False, pad_value=None)
    assert padded[0, :, 10:].eq(-70).all() and padded[1:, :, 10:].eq(0).all()


class _Store:
    def __init__(self, clips, path):
        self.clips, self.path = clips, path

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return self.clips[i]


def test_band_stats_over_all_frames_cached_beside_the_features(tmp_path):
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(3, 4, n)).astype(np.float16) * (1 + np.arange(4)[None, :, None]) for n in (5, 17, 40)]
    store = _Store(clips, tmp_path / "train.f16")
    stats = compute_band_stats(store)
    allframes = np.concatenate([c.astype(np.float64) for c in clips], axis=2)
    np.testing.assert_allclose(stats["mean"], allframes.mean(axis=2), atol=1e-5)
    np.testing.assert_allclose(stats["std"], allframes.std(axis=2), atol=1e-5)
    first = load_or_compute_band_stats(store, tmp_path)
    assert (tmp_path / BAND_STATS_NPZ).is_file()
    store.clips = [c * 0 for c in clips]  # same clip count: the cached file is used
    np.testing.assert_allclose(load_or_compute_band_stats(store, tmp_path)["mean"], first["mean"])


def test_loss_pruning_drops_only_high_loss_unverified_rows_after_warmup():
    prune = LossPruning({"name": "prune", "warmup_epochs": 2, "drop_share": 0.5, "momentum": 0.0})
    rows = torch.arange(6)
    verified = torch.tensor([True, True, False, False, False, False])
    losses = torch.tensor([9.0, 8.0, 5.0, 0.1, 4.0, 0.2])
    assert prune.keep(rows, verified).eq(1).all()
    prune.observe(rows, losses)
    assert prune.update(epoch=0) == 0 and prune.keep(rows, verified).eq(1).all()   # still warming up
    assert prune.update(epoch=1) == 2
    assert prune.keep(rows, verified).tolist() == [1, 1, 0, 1, 0, 1]               # rows 2 and 4 dropped


def test_schedules():
    assert lr_factor(25, 50, [20, 30, 40], 0.7) == pytest.approx(0.5 * 0.7)
    assert warmup_cosine_factor(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert warmup_cosine_factor(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert warmup_cosine_factor(100, 100, 10, 0.01) == pytest.approx(0.01)
    mid = warmup_cosine_factor(55, 100, 10, 0.0)
    assert mid == pytest.approx(0.5)
    with pytest.raises(ValueError, match="scheduler config has no _target_"):
        build_scheduler({"name": "bogus"}, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 10, 1, 10)


def _lrs(group: str, epochs: int, steps_per_epoch: int, extra=()) -> tuple[list[float], str]:
    """The learning rates a conf/scheduler/<group>.yaml gives, stepped as Lightning steps it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path(__file__).resolve().parent.parent / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"scheduler={group}", *extra])
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(cfg.optimizer.lr))
    built = build_scheduler(cfg.scheduler, opt, epochs * steps_per_epoch, steps_per_epoch, epochs)
    n = epochs if built["interval"] == "epoch" else epochs * steps_per_epoch
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        built["scheduler"].step()
    return lrs, built["interval"]


def test_scheduler_groups_are_torch_schedulers_with_the_seeds_factors():
    lrs, interval = _lrs("seed", 60, 7)  # the seed's: per epoch, cosine x step, past t_max
    assert interval == "epoch"
    assert lrs == pytest.approx([0.009 * lr_factor(e, 50, [20, 30, 40], 0.7) for e in range(60)], rel=1e-9, abs=1e-15)
    lrs, interval = _lrs("warmup_cosine", 10, 30, ["optimizer=adamw"])
    assert interval == "step"
    assert lrs == pytest.approx([2e-3 * warmup_cosine_factor(s, 300, 60, 0.01) for s in range(300)], rel=1e-9)
    lrs, _ = _lrs("onecycle", 5, 20)
    assert max(lrs) == pytest.approx(0.009, rel=1e-3) and lrs[0] == pytest.approx(0.009 / 25) and lrs[-1] < 1e-5
    lrs, _ = _lrs("cosine", 5, 20)
    assert lrs[0] == pytest.approx(0.009) and lrs[50] == pytest.approx(0.0045) and lrs[-1] < 1e-5
