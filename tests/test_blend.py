"""blend.py and its modules on synthetic run directories built exactly as fstag/runs/run_dir.py describes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fstag.ensemble.job import run_blend
from fstag.ensemble.spec import parse_blend
from fstag.ensemble.blending import (
    BlendError,
    align,
    combine,
    family_oof,
    fit_weights,
    fit_weights_cv,
    group_families,
    shared_oof,
)
from fstag.ensemble.calibration import (
    apply_temperature,
    class_shares,
    cross_validated_temperature,
    expected_calibration_error,
    expected_test_shares,
    fit_temperature,
    log_loss,
    prior_correction,
)
from fstag.core.config import CONFIG_DIR
from fstag.runs.members import RUN_DIR_TAG, MemberError, resolve_member, resolve_members
from fstag.evaluate.metrics import map_at_3
from fstag.runs.run_dir import OOF_NPZ, RUN_JSON, TEST_NPZ, Predictions, job_relpath
from fstag.ensemble.submission import score_submission, validate_submission

REPO = Path(__file__).resolve().parent.parent
LABELS = ["Bark", "Cello", "Flute", "Gong", "Oboe"]
EXP = "demo"


# --- synthetic data ---------------------------------------------------------------------------------
def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def noisy_probs(targets, signal, rng, n_classes=len(LABELS), scale=1.0):
    """Probabilities that favour the true class by ``signal`` (0 = pure noise)."""
    logits = rng.normal(size=(len(targets), n_classes)) * scale
    logits[np.arange(len(targets)), targets] += signal
    return softmax(logits)


def make_dataset(root: Path, n_train=60, n_test=16):
    """data/demo in the Kaggle layout (no audio): train.csv, sample_submission.csv, test labels with usage."""
    data = root / "data" / "demo"
    data.mkdir(parents=True)
    train_y = np.arange(n_train) % len(LABELS)
    train_y[:6] = 0  # uneven class shares for the prior correction
    train = pd.DataFrame(
        {
            "fname": [f"tr{i:03d}.wav" for i in range(n_train)],
            "label": [LABELS[k] for k in train_y],
            "manually_verified": [i % 2 for i in range(n_train)],
        }
    )
    train.to_csv(data / "train.csv", index=False)
    test_fnames = [f"te{i:03d}.wav" for i in range(n_test)]
    test_y = (np.arange(n_test) * 3) % len(LABELS)
    sample = pd.DataFrame({"fname": test_fnames, "label": "Bark Cello Flute"})
    sample.to_csv(data / "sample_submission.csv", index=False)
    usage = ["Public" if i % 2 == 0 else "Private" for i in range(n_test)]
    usage[-2:] = ["Ignored", "Ignored"]
    labels_col = [LABELS[k] for k in test_y]
    labels_col[-1] = "None"  # padding clips carry no real label
    pd.DataFrame({"fname": test_fnames, "label": labels_col, "usage": usage}).to_csv(
        data / "test_post_competition.csv", index=False
    )
    return train, train_y, test_fnames, test_y


def make_run(
    root: Path,
    arch: str,
    aug: str,
    fold: int,
    stage: str,
    oof: Predictions,
    test: Predictions,
    labels=LABELS,
    feature_key="logmel64-0123abcd",
    complete=True,
) -> Path:
    """A finished training job directory as train.py writes it (run.json, oof.npz, test.npz)."""
    path = root / "multirun" / EXP / job_relpath(arch, aug, fold, stage)
    path.mkdir(parents=True)
    info = {
        "arch": arch,
        "aug": aug,
        "fold": fold,
        "stage": stage,
        "name": path.name,
        "labels": list(labels),
        "feature_key": feature_key,
        "features": {"name": "logmel64"},
        "data_name": EXP,
        "mlflow_run_id": None,
        "mlflow_tracking_uri": None,
        "best_val_acc1": 0.5,
        "complete": complete,
        "oof_source": str(path.parent / f"fold_{fold}"),
    }
    (path / RUN_JSON).write_text(json.dumps(info))
    np.savez(
        path / OOF_NPZ,
        fnames=np.array(oof.fnames),
        probs=oof.probs.astype(np.float32),
        targets=oof.targets.astype(np.int64),
    )
    np.savez(path / TEST_NPZ, fnames=np.array(test.fnames), probs=test.probs.astype(np.float32))
    return path


@pytest.fixture
def world(tmp_path):
    """A dataset and six runs: two archs x fold 1 (+ retrain), and cnn_small fold 0 (+ retrain)."""
    rng = np.random.default_rng(7)
    train, train_y, test_fnames, test_y = make_dataset(tmp_path)
    folds = {k: np.flatnonzero(np.arange(len(train)) % 2 == k) for k in (0, 1)}
    runs = {}
    for arch, aug, signal in (("cnn_small", "none", 2.0), ("resnet50", "specmask_concat", 1.0)):
        for fold in (0, 1) if arch == "cnn_small" else (1,):
            rows = folds[fold]
            # a retrain_val run carries its parent's OOF; its test predictions are its own
            y = train_y[rows]
            oof = Predictions([train["fname"][i] for i in rows], noisy_probs(y, signal, rng), y)
            for stage in ("train", "retrain_val"):
                test = Predictions(test_fnames[::-1], noisy_probs(test_y[::-1], signal / 2, rng))
                path = make_run(tmp_path, arch, aug, fold, stage, oof, test)
                runs[path.relative_to(tmp_path / "multirun" / EXP).as_posix().replace("/default/", "/")] = path  # by member name
    return tmp_path, runs


FOLD1 = [
    "cnn_small/none/fold_1",
    "cnn_small/none/fold_1_r",
    "resnet50/specmask_concat/fold_1",
    "resnet50/specmask_concat/fold_1_r",
]


# --- blend maths ------------------------------------------------------------------------------------
def test_geometric_and_arithmetic_mean_by_hand():
    p1 = np.array([[0.5, 0.3, 0.2]])
    p2 = np.array([[0.2, 0.5, 0.3]])
    g = np.array([np.sqrt(0.5 * 0.2), np.sqrt(0.3 * 0.5), np.sqrt(0.2 * 0.3)])
    np.testing.assert_allclose(combine(np.stack([p1, p2])), [g / g.sum()], rtol=1e-12)
    gw = np.array([0.5**0.75 * 0.2**0.25, 0.3**0.75 * 0.5**0.25, 0.2**0.75 * 0.3**0.25])
    np.testing.assert_allclose(combine(np.stack([p1, p2]), [3, 1]), [gw / gw.sum()], rtol=1e-12)
    np.testing.assert_allclose(combine(np.stack([p1, p2]), [1, 1], "mean"), [[0.35, 0.4, 0.25]], rtol=1e-12)
    with pytest.raises(BlendError, match="unknown blend method"):
        combine(np.stack([p1, p2]), None, "median")


def test_align_orders_rows_and_names_missing_fnames():
    preds = Predictions(["b.wav", "a.wav"], np.array([[0.1, 0.9], [0.8, 0.2]]))
    np.testing.assert_array_equal(align(preds, ["a.wav", "b.wav"], "x"), [[0.8, 0.2], [0.1, 0.9]])
    with pytest.raises(BlendError, match=r"member m test.npz: no prediction for 1 of 2 .*'c.wav'"):
        align(preds, ["a.wav", "c.wav"], "member m test.npz")


def test_prior_correction_by_hand():
    probs = np.array([[0.6, 0.3, 0.1]])
    t = np.array([0.5, 0.3, 0.2])
    q = np.full(3, 1 / 3)
    # p' = q p / (q p + t (1 - p)) per class
    raw = np.array(
        [(0.6 / 3) / (0.6 / 3 + 0.5 * 0.4), (0.3 / 3) / (0.3 / 3 + 0.3 * 0.7), (0.1 / 3) / (0.1 / 3 + 0.2 * 0.9)]
    )
    np.testing.assert_allclose(raw, [0.5, 0.1 / 0.31, (1 / 30) / (1 / 30 + 0.18)])
    np.testing.assert_allclose(prior_correction(probs, t, q), [raw / raw.sum()], rtol=1e-12)
    # equal train and test shares leave the probabilities unchanged
    np.testing.assert_allclose(prior_correction(probs, q, q), probs, rtol=1e-12)


def test_class_and_test_shares():
    np.testing.assert_allclose(class_shares(["a", "b", "a", "c"], ["a", "b", "c"]), [0.5, 0.25, 0.25])
    np.testing.assert_allclose(expected_test_shares(None, ["a", "b"]), [0.5, 0.5])
    np.testing.assert_allclose(expected_test_shares({"b": 3, "a": 1}, ["a", "b"]), [0.25, 0.75])
    with pytest.raises(ValueError, match="missing"):
        expected_test_shares({"a": 1}, ["a", "b"])
    with pytest.raises(ValueError, match="no rows of label"):
        class_shares(["a"], ["a", "b"])


def nll(probs, targets):
    return float(-np.mean(np.log(probs[np.arange(len(targets)), targets])))


def test_temperature_fitted_on_overconfident_oof_lowers_nll():
    rng = np.random.default_rng(0)
    y_oof, y_test = rng.integers(0, 5, 400), rng.integers(0, 4, 200)
    oof = noisy_probs(y_oof, 1.0, rng, scale=4.0)  # sharp but often wrong: over-confident
    test = noisy_probs(y_test, 1.0, rng, scale=4.0)
    model = fit_temperature(oof, y_oof)
    calibrated = apply_temperature(model, test)
    assert nll(calibrated, y_test) < nll(test, y_test)
    np.testing.assert_array_equal(calibrated.argmax(1), test.argmax(1))  # ranking is unchanged
    # classes absent from the OOF targets do not change the fit
    keep = y_oof < 4
    a = apply_temperature(fit_temperature(oof[keep], y_oof[keep]), test)
    assert np.isfinite(a).all() and a.shape == test.shape


def test_oof_weights_never_worse_than_equal():
    rng = np.random.default_rng(1)
    for trial in range(5):
        y = rng.integers(0, 5, 120)
        stack = np.stack([noisy_probs(y, s, rng) for s in rng.uniform(0, 2, 3)])
        w = fit_weights(stack, y)
        assert np.isclose(w.sum(), 1.0)
        assert map_at_3(combine(stack, w), y) >= map_at_3(combine(stack, None), y)


def test_oof_weights_beat_equal_when_a_member_is_noise():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 300)
    stack = np.stack([noisy_probs(y, 2.0, rng), noisy_probs(y, 0.0, rng, scale=5.0)])  # second: confident noise
    w = fit_weights(stack, y)
    assert map_at_3(combine(stack, w), y) > map_at_3(combine(stack, None), y)
    assert w[0] > w[1]


def test_families_share_oof_rows_across_folds_and_split_their_weight():
    rng = np.random.default_rng(3)
    y = np.arange(80) % len(LABELS)
    fnames = [f"tr{i:03d}.wav" for i in range(80)]
    fold = np.arange(80) % 2
    infos, oofs, keys = [], [], []
    for arch, signal in (("good", 3.0), ("noise", 0.0)):
        for k in (0, 1):
            rows = np.flatnonzero(fold == k)
            infos.append({"arch": arch, "aug": "none", "stage": "train", "fold": k})
            oofs.append(Predictions([fnames[i] for i in rows], noisy_probs(y[rows], signal, rng, scale=2.0), y[rows]))
            keys.append(f"{arch}/none/fold_{k}")
    fams = group_families(infos)
    assert fams.keys == ["good/none/default", "noise/none/default"] and fams.of_member == [0, 0, 1, 1]
    shared = shared_oof(family_oof(oofs, fams, keys), fams.keys)
    assert len(shared.fnames) == 80  # single members share no row, their families share all of them
    fw = fit_weights(shared.probs, shared.targets)
    equal = map_at_3(combine(shared.probs), shared.targets)
    assert map_at_3(combine(shared.probs, fw), shared.targets) > equal and fw[0] > fw[1]
    mw = fams.member_weights(fw)
    assert mw[0] == mw[1] == pytest.approx(fw[0] / 2) and sum(mw) == pytest.approx(1.0)
    np.testing.assert_allclose(fams.family_weights(mw), fw)
    with pytest.raises(BlendError, match="both hold OOF row"):
        family_oof([oofs[0], oofs[0]], group_families(infos[:2]), ["a", "b"])


def test_cv_score_is_lower_than_an_optimistic_in_sample_score():
    # four members of pure noise: any weighting that beats equal weights on these rows fits the noise
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 60)
    stack = np.stack([softmax(rng.normal(size=(60, 5)) * 2) for _ in range(4)])
    fit = fit_weights_cv(stack, y, folds=5, seed=0)
    assert fit.n_rows == 60 and fit.folds == 5 and not fit.verified_only
    assert fit.in_sample == pytest.approx(map_at_3(combine(stack, fit.weights), y))
    assert fit.in_sample > fit.equal  # the fit found "signal" in noise ...
    assert fit.cv < fit.in_sample - 0.02  # ... that does not hold out of sample
    np.testing.assert_allclose(fit.weights, fit_weights(stack, y))  # final weights: fitted on every row


def test_cv_fit_uses_verified_rows_only_when_there_are_enough():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 100)
    stack = np.stack([noisy_probs(y, s, rng) for s in (2.0, 0.5)])
    verified = np.arange(100) % 4 != 0  # 75 verified rows
    fit = fit_weights_cv(stack, y, verified=verified, min_verified=75)
    assert fit.verified_only and fit.n_rows == 75
    assert fit.equal == pytest.approx(map_at_3(combine(stack[:, verified]), y[verified]))
    fit = fit_weights_cv(stack, y, verified=verified, min_verified=76)
    assert not fit.verified_only and fit.n_rows == 100


def test_weight_ties_go_to_equal_weights_not_to_the_grid_order():
    y = np.zeros(30, dtype=np.int64)
    good = np.tile([0.5, 0.3, 0.2], (30, 1))
    bad = good.copy()
    bad[:10] = [0.2, 0.6, 0.2]  # confidently wrong on a third of the rows
    # identical members: every weighting scores the same, so equal weights stay
    np.testing.assert_allclose(fit_weights(np.stack([good, good, good]), y), [1 / 3] * 3)
    # the bad member first: weights 0 and 0.25 both fix its rows (good/bad > 2.15), the grid tries 0 first;
    # the tie goes to the more equal weighting, so no member is zeroed
    w = fit_weights(np.stack([bad, good]), y)
    assert map_at_3(combine(np.stack([bad, good]), w), y) == 1.0
    np.testing.assert_allclose(w, [0.25, 0.75])


def test_retrain_member_joins_its_parent_family_and_shares_its_weight():
    infos = [{"arch": "a", "aug": "none", "fold": 1, "stage": "train"},
             {"arch": "a", "aug": "none", "fold": 1, "stage": "retrain_val"},
             {"arch": "b", "aug": "none", "fold": 1, "stage": "retrain_val"}]  # a retrain without its parent
    fams = group_families(infos)
    assert fams.keys == ["a/none/default", "b/none/default"] and fams.of_member == [0, 0, 1]
    assert fams.oof_from == [True, False, True] and fams.retrain == [False, True, True]
    oof = Predictions(["x", "y"], np.eye(2), np.array([0, 1]))
    shared = shared_oof(family_oof([oof, oof, oof], fams, ["a1", "a1_r", "b1_r"]), fams.keys)
    assert shared.fnames == ["x", "y"]  # the copy of the parent's OOF is not counted twice
    assert fams.member_weights([0.6, 0.4]) == pytest.approx([0.3, 0.3, 0.4])
    # a retrain_val job with its own retrain.* keys (another variant) still joins its parent's family
    child = {"arch": "a", "aug": "none", "fold": 1, "stage": "retrain_val", "variant": "retrain.max_epochs=3",
             "oof_source": "/runs/demo/a/none/default/fold_1"}
    assert group_families([infos[0], child]).of_member == [0, 0]


def test_ece_and_log_loss_by_hand():
    probs = np.array([
        [0.95, 0.03, 0.02],  # conf 0.95, bin 14, right
        [0.92, 0.05, 0.03],  # conf 0.92, bin 13, wrong
        [0.90, 0.06, 0.04],  # conf 0.90, bin 13, right
        [0.20, 0.55, 0.25],  # conf 0.55, bin 8, right
        [0.50, 0.30, 0.20],  # conf 0.50, bin 7, wrong
    ])
    y = np.array([0, 1, 0, 1, 2])
    # bins 14: |1 - .95| x 1/5; 13: |.5 - .91| x 2/5; 8: |1 - .55| x 1/5; 7: |0 - .5| x 1/5
    assert expected_calibration_error(probs, y) == pytest.approx(0.01 + 0.164 + 0.09 + 0.1)
    assert expected_calibration_error(probs, y, n_bins=1) == pytest.approx(abs(0.6 - 3.82 / 5))
    assert log_loss(probs, y) == pytest.approx(-np.mean(np.log([0.95, 0.05, 0.90, 0.55, 0.20])))


def test_cross_validated_temperature_keeps_rankings_and_is_out_of_sample():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 5, 200)
    probs = noisy_probs(y, 1.0, rng, scale=4.0)  # over-confident
    parts = [np.arange(k, 200, 4) for k in range(4)]
    after = cross_validated_temperature(probs, y, parts)
    np.testing.assert_array_equal(np.argsort(-after, axis=1), np.argsort(-probs, axis=1))
    assert log_loss(after, y) < log_loss(probs, y)
    assert expected_calibration_error(after, y) < expected_calibration_error(probs, y)
    held_out = apply_temperature(fit_temperature(probs[np.setdiff1d(np.arange(200), parts[0])],
                                                 y[np.setdiff1d(np.arange(200), parts[0])]), probs[parts[0]])
    np.testing.assert_allclose(after[parts[0]], held_out)


def test_shared_oof_keeps_common_rows_in_first_member_order():
    a = Predictions(["x", "y", "z"], np.eye(3), np.array([0, 1, 2]))
    b = Predictions(["z", "x"], np.eye(3)[[2, 0]], np.array([2, 0]))
    s = shared_oof([a, b], ["a", "b"])
    assert s.fnames == ["x", "z"] and s.probs.shape == (2, 2, 3)
    np.testing.assert_array_equal(s.targets, [0, 2])
    c = Predictions(["x"], np.eye(3)[:1], np.array([1]))
    with pytest.raises(BlendError, match="disagree on the OOF target of 'x'"):
        shared_oof([a, c], ["a", "c"])


def test_parse_blend_weights_and_checks():
    base = {"name": "t", "submission": "/x.csv"}
    spec = parse_blend({**base, "members": ["a", {"run": "b", "weight": 3}]})
    assert spec.members == ["a", "b"] and spec.weights == [1.0, 3.0] and spec.method == "gmean"
    with pytest.raises(BlendError, match="both given"):
        parse_blend({**base, "members": [{"run": "a", "weight": 1}], "weights": "oof"})
    with pytest.raises(BlendError, match="2 numbers for 1 members"):
        parse_blend({**base, "members": ["a"], "weights": [1, 2]})
    with pytest.raises(BlendError, match="calibration"):
        parse_blend({**base, "members": ["a"], "calibration": "platt"})


# --- members ----------------------------------------------------------------------------------------
def test_member_errors_name_what_was_looked_for(world):
    root, runs = world
    runs_root = root / "multirun" / EXP
    with pytest.raises(MemberError) as err:
        resolve_members(["cnn_small/none/fold_7", "cnn_small/none/fold_1"], runs_root, "sqlite:///unused.db")
    assert str(runs_root / "cnn_small/none/fold_7") in str(err.value)

    preds = _preds_of(runs["cnn_small/none/fold_1"])
    other = make_run(root, "odd", "none", 1, "train", *preds, labels=LABELS[::-1])
    with pytest.raises(MemberError, match=r"member odd/none/fold_1 has a different label set from member cnn_small/"):
        resolve_members(["cnn_small/none/fold_1", str(other)], runs_root, "unused")

    make_run(root, "feat", "none", 1, "train", *preds, feature_key="mfcc-1")
    with pytest.raises(MemberError, match=r"feature_key 'mfcc-1' but member cnn_small/none/fold_1 has 'logmel64-012"):
        resolve_members(["cnn_small/none/fold_1", "feat/none/fold_1"], runs_root, "unused")

    make_run(root, "half", "none", 1, "train", *preds, complete=False)
    with pytest.raises(MemberError, match="half/none/fold_1: run is not complete"):
        resolve_members(["half/none/fold_1"], runs_root, "unused")

    with pytest.raises(MemberError, match="same run directory"):
        resolve_members(["cnn_small/none/fold_1", str(runs["cnn_small/none/fold_1"])], runs_root, "unused")

    members = resolve_members(FOLD1, runs_root, "unused")
    assert [m.key for m in members] == FOLD1


def _preds_of(path: Path):
    from fstag.runs.run_dir import RunDir

    run = RunDir.open(path)
    return run.oof(), run.test()


def test_member_by_mlflow_run_id(world, tmp_path):
    from mlflow.tracking import MlflowClient

    from fstag.runs.tracking import ensure_experiment

    root, runs = world
    uri = f"sqlite:///{tmp_path / 'ids.db'}"
    exp_id = ensure_experiment(uri, "ids", str(tmp_path / "art"))
    run_dir = runs["resnet50/specmask_concat/fold_1"]
    run_id = MlflowClient(uri).create_run(exp_id, tags={RUN_DIR_TAG: str(run_dir)}).info.run_id
    assert resolve_member(run_id, root / "nowhere", uri).path == run_dir
    missing = "0123456789abcdef0123456789abcdef"
    with pytest.raises(MemberError, match=f"MLflow run {missing} not found in tracking store {uri}"):
        resolve_member(missing, root, uri)


# --- the job ----------------------------------------------------------------------------------------
def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        return hydra_compose(config_name="ensemble", overrides=overrides)


def test_no_shared_oof_rows_is_a_clear_error(world, monkeypatch):
    root, _ = world
    monkeypatch.setenv("FSTAG_ROOT", str(root))
    members = "[cnn_small/none/fold_0,resnet50/specmask_concat/fold_1]"  # other families, other folds
    cfg = compose([f"blend.members={members}", "blend.weights=oof"])
    pattern = r"blend.weights=oof needs OOF rows .* share none \(cnn_small/none/fold_0: 30 rows, resnet50/specmask_c"
    with pytest.raises(BlendError, match=pattern):
        run_blend(cfg, root / "out")


def run_blend_py(args, root: Path, db: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FSTAG_"))}
    env.update(FSTAG_ROOT=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    proc = subprocess.run(
        [sys.executable, str(REPO / "blend.py"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_blend_py_end_to_end_rebuilds_identically_and_logs_to_mlflow(world, tmp_path):
    from mlflow.tracking import MlflowClient

    root, runs = world
    db = tmp_path / "mlflow.db"
    members = "[" + ",".join(FOLD1) + "]"
    first = run_blend_py(
        ["blend.name=e2e", f"blend.members={members}", "blend.weights=oof", "blend.calibration=prior"], root, db
    )
    submission = root / "submissions" / "e2e.csv"
    assert f"submission: {submission}" in first.stdout
    assert first.stdout.strip().splitlines()[-1].startswith("test MAP@3 ")
    assert "blend, equal weights" in first.stdout
    data = root / "data" / "demo"
    validate_submission(submission, data / "sample_submission.csv", LABELS)
    built = submission.read_bytes()

    (saved,) = (root / "outputs" / "blend" / "e2e").glob("*/config.yaml")
    config = saved.read_text()
    assert str(runs["resnet50/specmask_concat/fold_1_r"]) in config and "weights: oof" not in config
    copy = tmp_path / "saved"
    copy.mkdir()
    shutil.copy(saved, copy / "config.yaml")
    submission.unlink()
    run_blend_py(["--config-path", str(copy), "--config-name", "config"], tmp_path, db)
    assert submission.read_bytes() == built

    client = MlflowClient(f"sqlite:///{db}")
    (exp,) = [e for e in client.search_experiments() if e.name == "fstag-demo"]
    logged = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'blend/e2e'")
    assert len(logged) == 2
    run = logged[-1]  # the first blend
    scored = score_submission(submission, data / "test_post_competition.csv", LABELS)
    assert run.data.metrics["test_map3"] == pytest.approx(scored["map3"])
    assert run.data.metrics["test_map3_public"] == pytest.approx(scored["map3_public"])
    assert run.data.metrics["test_map3_private"] == pytest.approx(scored["map3_private"])
    assert run.data.metrics["oof_map3"] >= run.data.metrics["oof_map3_equal_weights"]
    assert "oof_map3/resnet50/specmask_concat/fold_1_r" in run.data.metrics
    # the OOF weights' score on the rows they were fitted on and out of sample (5-fold CV), both logged
    m = run.data.metrics
    assert {"oof_map3_in_sample", "oof_map3_cv", "oof_map3_equal_weights_fit_rows"} <= set(m)
    assert m["oof_map3_in_sample"] == pytest.approx(m["oof_map3"]) and m["oof_fit_n"] == 30
    assert m["oof_map3_in_sample"] >= m["oof_map3_equal_weights_fit_rows"] and 0 <= m["oof_map3_cv"] <= 1
    assert f"in-sample {m['oof_map3_in_sample']:.4f}, 5-fold cross-validated {m['oof_map3_cv']:.4f}" in first.stdout
    # each retrain_val member takes an equal share of its parent's family weight, and the log says so
    w = json.loads(run.data.params["weights"])
    assert w[0] == pytest.approx(w[1]) and w[2] == pytest.approx(w[3])
    assert json.loads(run.data.params["families"]) == {"cnn_small/none/default": FOLD1[:2],
                                                       "resnet50/specmask_concat/default": FOLD1[2:]}
    assert ("cnn_small/none/fold_1_r: retrain_val run carrying its parent's OOF, so OOF rows cannot weigh it; "
            "it shares the weight of family cnn_small/none/default equally") in first.stdout
    assert run.data.params["method"] == "gmean" and run.data.params["calibration"] == "prior"
    assert run.data.params["weights_mode"] == "oof"
    assert json.loads(run.data.params["members"]) == FOLD1
    assert sum(json.loads(run.data.params["weights"])) == pytest.approx(1.0)
    assert {"config.yaml", "e2e.csv", "probs.npz"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_temperature_keeps_the_submission_and_scores_its_probabilities(world, monkeypatch, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    root, _ = world
    monkeypatch.setenv("FSTAG_ROOT", str(root))
    uri = f"sqlite:///{tmp_path / 'cal.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    members = "[" + ",".join(FOLD1) + "]"
    submission = root / "submissions" / "t.csv"
    run_blend(compose([f"blend.members={members}", "blend.name=t"]), tmp_path / "none")
    plain = submission.read_bytes()
    metrics = run_blend(compose([f"blend.members={members}", "blend.name=t", "blend.calibration=temperature"]),
                        tmp_path / "temp")
    assert submission.read_bytes() == plain  # the same rankings, so the same top 3
    out = capsys.readouterr().out
    assert "keeps every row's ranking, so the submission's top 3 and its MAP@3 are the same" in out
    with np.load(tmp_path / "none" / "probs.npz") as a, np.load(tmp_path / "temp" / "probs.npz") as b:
        assert list(b["labels"]) == LABELS and list(b["fnames"]) == list(a["fnames"])
        np.testing.assert_array_equal(np.argsort(-a["probs"], axis=1), np.argsort(-b["probs"], axis=1))
        assert not np.allclose(a["probs"], b["probs"], atol=1e-4)  # but other probabilities
    keys = ("oof_logloss_before", "oof_logloss_after", "oof_ece_before", "oof_ece_after", "temperature")
    (logged,) = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("fstag-demo").experiment_id],
        filter_string="attributes.run_name = 'blend/t' and params.calibration = 'temperature'")
    for k in keys:
        assert logged.data.metrics[k] == pytest.approx(metrics[k])
    assert 0 <= metrics["oof_ece_after"] <= 1 and metrics["oof_logloss_after"] > 0


def test_runs_of_different_fold_splits_are_not_blended(world):
    root, runs = world
    runs_root = root / "multirun" / EXP
    for name, digest in (("cnn_small/none/fold_1", "aaaa"), ("resnet50/specmask_concat/fold_1", "bbbb")):
        info = json.loads((runs[name] / RUN_JSON).read_text())
        info["fold_split"] = {"n_splits": 5, "seed": 2018 if digest == "aaaa" else 7, "train_csv_sha256": "c" * 64,
                              "digest": digest}
        (runs[name] / RUN_JSON).write_text(json.dumps(info))
    with pytest.raises(MemberError) as err:
        resolve_members(FOLD1, runs_root, "unused")
    msg = str(err.value)
    assert ("member resnet50/specmask_concat/fold_1 was trained on split bbbb (n_splits=5, seed=7, "
            "train.csv sha256 cccccccccccc) but member cnn_small/none/fold_1 on split aaaa (n_splits=5, seed=2018") in msg
    assert msg.count("different fold splits") == 1  # runs without the record (older runs) are not refused
    resolve_members(FOLD1[:2], runs_root, "unused")


def test_demo_blend_config_in_process(world, monkeypatch, tmp_path):
    root, _ = world
    monkeypatch.setenv("FSTAG_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'demo.db'}")
    # conf/blend/demo.yaml as shipped, restricted to the aug this fixture has runs for
    members = "[cnn_small/none/fold_0,cnn_small/none/fold_0_r,cnn_small/none/fold_1,cnn_small/none/fold_1_r]"
    metrics = run_blend(compose([f"blend.members={members}"]), tmp_path / "out")
    assert "oof_map3/cnn_small/none/fold_0_r" in metrics
    assert metrics["oof_n_shared"] == 60  # the train and retrain families each cover folds 0 and 1
    assert 0 <= metrics["test_map3"] <= 1
    validate_submission(root / "submissions" / "demo.csv", root / "data" / "demo" / "sample_submission.csv", LABELS)
    saved = (tmp_path / "out" / "config.yaml").read_text()
    assert "- 0.25\n" in saved and str(root / "multirun" / EXP / "cnn_small/none/default/fold_0_r") in saved


def test_short_member_names_find_a_job_trained_on_another_data_root(tmp_path):
    from fstag.runs.identity import data_digest
    from fstag.runs.members import resolve_member

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("fname,label,manually_verified\na.wav,Bark,1\n")
    job = tmp_path / "runs" / "resnet18" / "robust" / f"data@{data_digest(data)[:8]}" / "fold_0"
    job.mkdir(parents=True)
    (job / "run.json").write_text('{"name": "fold_0", "labels": ["Bark"], "feature_key": "k", "complete": true}')
    assert resolve_member("resnet18/robust/fold_0", tmp_path / "runs", "unused", str(data)).path == job
    assert resolve_member("resnet18/robust/fold_0", tmp_path / "runs", "unused").path == job  # the only one
    (job.parent.parent / "data@00000000" / "fold_0").mkdir(parents=True)
    with pytest.raises(MemberError, match="resnet18/robust/fold_0"):
        resolve_member("resnet18/robust/fold_0", tmp_path / "runs", "unused")  # two: ambiguous without data.root
