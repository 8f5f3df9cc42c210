"""The task's shape (fstag.core.task) and what follows it, as plain functions: multi-label metrics against
hand-computed values, losses, combining probabilities, blend weights fitted on lwlrap, FSDKaggle2019
submissions, and identities saved before the task existed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fstag.core.task import MULTI_LABEL, SINGLE_LABEL, TaskError, get_task, split_labels, task_of
from fstag.evaluate.metrics import (
    class_average_precision,
    combine_probs,
    geometric_mean,
    lwlrap,
    mean_average_precision,
    per_class_lwlrap,
    task_scores,
)

ML = get_task(MULTI_LABEL)
SL = get_task(SINGLE_LABEL)


def test_tasks_by_name_and_from_runs():
    assert (SL.primary, SL.monitor, SL.val_metric) == ("map3", "val_acc1", "val_map3")
    assert (ML.primary, ML.monitor, ML.val_metrics, ML.oof_metrics) == (
        "lwlrap", "val_lwlrap", ("val_lwlrap", "val_map"), ("oof_lwlrap", "oof_map"))
    assert task_of({}) is SL and task_of({"task": "multi_label"}) is ML  # runs made before tasks: single-label
    with pytest.raises(TaskError, match="task='multilabel': choose one of single_label, multi_label"):
        get_task("multilabel")
    assert split_labels(" Bark, Chirp_and_tweet ,") == ["Bark", "Chirp_and_tweet"]
    np.testing.assert_array_equal(ML.encode(["b,a", "c"], ["a", "b", "c"]), [[1, 1, 0], [0, 0, 1]])
    with pytest.raises(TaskError, match=r"x.csv: row 1: label 'd' is not one of the 3 labels"):
        ML.encode(["a", "a,d"], ["a", "b", "c"], "x.csv")


def test_lwlrap_hand_computed():
    # clip 0: true {0, 2}; scores rank 0 first, 1 second, 2 third -> precisions 1/1 and 2/3
    # clip 1: true {1}; ranked second -> 1/2.  lwlrap = mean over the three (clip, label) pairs
    probs = np.array([[0.9, 0.5, 0.3], [0.8, 0.6, 0.1]])
    y = np.array([[1, 0, 1], [0, 1, 0]])
    assert lwlrap(probs, y) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    per_class, weight = per_class_lwlrap(probs, y)
    np.testing.assert_allclose(per_class, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(weight, [1 / 3, 1 / 3, 1 / 3])
    # a clip without a true label weighs nothing; no true label at all: NaN
    assert lwlrap(np.vstack([probs, [[0.1, 0.2, 0.3]]]), np.vstack([y, [[0, 0, 0]]])) == pytest.approx(lwlrap(probs, y))
    assert np.isnan(lwlrap(probs, np.zeros_like(y)))


def test_map_hand_computed():
    # label 0: positives at scores 0.9, 0.2 among 0.9, 0.8, 0.2 -> AP = (1/1 + 2/3) / 2; label 1: one positive ranked
    # first -> 1; label 2: no positive -> left out of the mean
    probs = np.array([[0.9, 0.1, 0.5], [0.8, 0.7, 0.4], [0.2, 0.3, 0.6]])
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    ap = class_average_precision(probs, y)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2) and ap[1] == pytest.approx(1.0) and np.isnan(ap[2])
    assert mean_average_precision(probs, y) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert task_scores(ML, probs, y) == {"lwlrap": lwlrap(probs, y), "map": mean_average_precision(probs, y)}


def test_multi_label_probabilities_combine_per_label_without_renormalising():
    a, b = np.array([[0.9, 0.1, 0.4]]), np.array([[0.4, 0.1, 0.9]])
    np.testing.assert_allclose(combine_probs(ML, np.stack([a, b])), np.sqrt(a * b))
    np.testing.assert_allclose(combine_probs(ML, np.stack([a, b]), method="mean"), (a + b) / 2)
    np.testing.assert_allclose(combine_probs(SL, np.stack([a, b])), geometric_mean(np.stack([a, b])))


def test_losses_follow_the_task():
    from fstag.models.losses import LossConfigError, loss_fn, loss_name

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    bce = loss_fn(ML, {"name": "auto"})(logits, y)
    np.testing.assert_allclose(bce, torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1))
    smoothed = loss_fn(ML, {"label_smoothing": 0.2})(logits, y)  # targets 0.9 / 0.1
    np.testing.assert_allclose(smoothed, torch.nn.functional.binary_cross_entropy_with_logits(
        logits, y * 0.8 + 0.1, reduction="none").mean(1), rtol=1e-6)
    focal = loss_fn(ML, {"name": "focal", "focal_gamma": 2.0})(logits, y)
    p = torch.sigmoid(logits)
    p_t = p * y + (1 - p) * (1 - y)
    expected = ((1 - p_t) ** 2 * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).mean(1)
    np.testing.assert_allclose(focal, expected, rtol=1e-6)
    assert bool((focal < bce).all())  # the focal loss down-weights what is already right
    ce = loss_fn(SL, {"label_smoothing": 0.1})(logits, torch.tensor([0, 1]))
    np.testing.assert_allclose(ce, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]), reduction="none",
                                                                     label_smoothing=0.1))
    assert loss_name(SL, None) == "ce" and loss_name(ML, {"name": "auto"}) == "bce"
    with pytest.raises(LossConfigError, match="loss.name='focal' does not fit task=single_label"):
        loss_name(SL, {"name": "focal"})


def test_blend_weights_fitted_on_lwlrap():
    from fstag.ensemble.blending import combine, fit_weights_cv

    rng = np.random.default_rng(0)
    y = (rng.random((120, 6)) < 0.3).astype(np.uint8)
    good = np.clip(y * 0.6 + rng.random(y.shape) * 0.5, 0, 1)  # informative
    noise = rng.random(y.shape)  # uninformative
    fit = fit_weights_cv(np.stack([good, noise]), y, "gmean", task=ML)
    assert fit.weights[0] > fit.weights[1]
    assert fit.in_sample >= fit.equal and fit.in_sample == pytest.approx(lwlrap(combine(np.stack([good, noise]),
                                                                                        fit.weights, task=ML), y))
    assert combine(np.stack([good, noise]), None, "gmean", ML).max() <= 1.0  # per label, not renormalised per row


def test_fsdkaggle2019_submission_written_validated_and_scored(tmp_path):
    from fstag.ensemble.submission import (
        SubmissionError,
        score_probabilities,
        validate_probability_submission,
        write_probability_submission,
    )

    labels = ["Bark", "Chirp", "Gong"]
    template = tmp_path / "sample_submission.csv"
    pd.DataFrame({"fname": ["b.wav", "a.wav"], "Gong": 0, "Bark": 0, "Chirp": 0}).to_csv(template, index=False)
    probs = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.7]])  # in the labels' order
    path = write_probability_submission(tmp_path / "s.csv", ["b.wav", "a.wav"], probs, labels, template)
    assert path.read_text().splitlines() == ["fname,Gong,Bark,Chirp", "b.wav,0.100000,0.900000,0.200000",
                                             "a.wav,0.700000,0.300000,0.800000"]  # the template's column order
    validate_probability_submission(path, template, labels)
    path.write_text("fname,Gong,Bark,Chirp\nb.wav,0.1,1.5,0.2\na.wav,0.7,0.3,0.8\n")
    with pytest.raises(SubmissionError, match=r"row 2: column 'Bark' is '1.5', not a probability in \[0, 1\]"):
        validate_probability_submission(path, template, labels)
    truth = pd.DataFrame({"fname": ["a.wav", "b.wav"], "label": ["Chirp,Gong", "Bark"], "usage": ["Public", "Ignored"]})
    scores = score_probabilities(ML, ["b.wav", "a.wav"], probs, labels, truth)
    assert scores["n_scored"] == 1 and scores["lwlrap"] == pytest.approx(1.0)  # a.wav: Chirp, Gong ranked first
    assert scores["lwlrap_public"] == pytest.approx(1.0)


def test_identities_saved_before_tasks_match_the_single_label_defaults():
    """An upgrade of fstag keeps its jobs: a saved identity without the keys added for tasks matches a config that
    has them at the values that reproduce what the job did; another value is a difference."""
    from fstag.runs.identity import differing_keys

    old = {"optimizer.lr": 0.01, "callbacks.model_checkpoint.monitor": "val_acc1"}
    now = {**old, "task.name": "single_label", "task.monitor": "val_acc1", "data.task": "single_label",
           "data.layout": "kaggle2018", "folds.method": "stratified", "loss.name": "auto", "loss.focal_gamma": 2.0,
           "predict.window_reduce": "mean"}
    assert differing_keys(old, now) == []
    assert [k for k, _, _ in differing_keys(old, {**now, "task.name": "multi_label"})] == ["task.name"]


class _Loudness(torch.nn.Module):
    """A real (tiny) network: label 0's logit is a clip window's mean log-mel level, label 1's 1 - 2 x that."""

    def forward(self, x):
        level = x[:, 0].mean(dim=(1, 2))
        return torch.stack([level, 1 - 2 * level], dim=1)


def test_multi_label_inference_averages_sigmoids_over_crops_and_takes_the_max_over_windows():
    from fstag.infer.predictor import predict_probs

    ramp = torch.zeros(3, 4, 40)
    ramp[0] = torch.linspace(-2, 2, 40)  # later windows louder
    silent_floor = np.full((3, 4, 40), -100.0, dtype=np.float32)  # silent: the uninformed row, 0 for every label
    clips = [ramp.numpy(), None, silent_floor]
    kw = dict(crop_frames=10, aug={}, num_classes=2, task=ML, pad_value=0.0)
    probs, silent = predict_probs(_Loudness(), clips, ["a", "b", "c"], mode="windows", hop_frames=10,
                                  window_reduce="max", **kw)
    levels = torch.tensor([ramp[0, :, s:s + 10].mean() for s in (0, 10, 20, 30)])
    np.testing.assert_allclose(probs[0], [torch.sigmoid(levels).max(), torch.sigmoid(1 - 2 * levels).max()], rtol=1e-5)
    np.testing.assert_array_equal(probs[1:], 0.0)
    assert silent.tolist() == [False, False, True]
    mean, _ = predict_probs(_Loudness(), clips[:1], ["a"], mode="windows", hop_frames=10, **kw)
    np.testing.assert_allclose(mean[0], [torch.sigmoid(levels).mean(), torch.sigmoid(1 - 2 * levels).mean()], rtol=1e-5)
    crops, _ = predict_probs(_Loudness(), clips[:1], ["a"], mode="crops", n_passes=3, **kw)
    assert 0 < crops[0, 0] < 1 and 0 < crops[0, 1] < 1 and crops[0].sum() != pytest.approx(1.0)  # not renormalised
