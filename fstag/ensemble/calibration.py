"""Probability calibration of a blend: the seed's class-prior correction and OOF-fitted temperature scaling,
and the scores that measure calibration (log-loss, expected calibration error).

Temperature scaling divides every row's log-probabilities by one T > 0, which keeps each row's ranking:
it cannot change a top-3 submission or its MAP@3, only the probabilities (``probs.npz``). The prior
correction shifts each class by its own factor, so it can reorder a row's labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from fstag.evaluate.metrics import EPS


class CalibrationError(ValueError):
    """Calibration inputs are inconsistent (shares of the wrong length, classes missing from train)."""


# --- prior correction ------------------------------------------------------------------------------
def class_shares(train_labels: Sequence[str], labels: list[str]) -> np.ndarray:
    """Each label's share of the rows of train.csv, in ``labels`` order."""
    counts = {label: 0 for label in labels}
    for label in train_labels:
        if label not in counts:
            raise CalibrationError(f"train.csv label {label!r} is not one of the blend's {len(labels)} labels")
        counts[label] += 1
    shares = np.array([counts[label] for label in labels], dtype=np.float64)
    if np.any(shares == 0):
        absent = [label for label in labels if counts[label] == 0]
        raise CalibrationError(f"train.csv has no rows of label(s) {absent[:5]}; their prior is undefined")
    return shares / shares.sum()


def expected_test_shares(value, labels: list[str]) -> np.ndarray:
    """The assumed test share of each label: ``None`` = uniform 1/C, a list in ``labels`` order, or a
    mapping label -> share covering every label; normalised to sum to 1."""
    if value is None:
        return np.full(len(labels), 1.0 / len(labels))
    if isinstance(value, Mapping):
        missing = [label for label in labels if label not in value]
        if missing or len(value) != len(labels):
            raise CalibrationError(
                f"prior.test_share must give a share for exactly the {len(labels)} labels; "
                f"missing {missing[:5]}, unknown {sorted(set(value) - set(labels))[:5]}"
            )
        value = [value[label] for label in labels]
    shares = np.asarray(value, dtype=np.float64)
    if shares.shape != (len(labels),) or np.any(~np.isfinite(shares)) or np.any(shares <= 0):
        raise CalibrationError(f"prior.test_share must be {len(labels)} positive numbers, got {value!r}")
    return shares / shares.sum()


def prior_correction(probs, train_share, test_share) -> np.ndarray:
    """The seed's prior shift per class, p' = q·p / (q·p + t·(1−p)), then rows renormalised to sum to 1.

    ``probs`` (N, C); ``train_share`` t and ``test_share`` q: (C,) class shares of train and test.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)
    q = np.asarray(test_share, dtype=np.float64)[None, :]
    t = np.asarray(train_share, dtype=np.float64)[None, :]
    corrected = q * p / (q * p + t * (1.0 - p))
    return corrected / corrected.sum(axis=1, keepdims=True)


# --- temperature scaling ---------------------------------------------------------------------------
class _LogProbClassifier(ClassifierMixin, BaseEstimator):
    """A fitted 'classifier' over C classes whose input already is its decision function (log-probabilities).

    It lets scikit-learn's temperature scaling calibrate predictions made elsewhere.
    """

    def __init__(self, n_classes: int = 2):
        self.n_classes = n_classes

    def fit(self, X=None, y=None):
        self.classes_ = np.arange(self.n_classes)
        return self

    def decision_function(self, X):
        return np.asarray(X, dtype=np.float64)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)


def _log(probs) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))


def fit_temperature(probs, targets) -> CalibratedClassifierCV:
    """Fit temperature scaling (``CalibratedClassifierCV(FrozenEstimator(...), method="temperature")``)
    on (N, C) OOF probabilities and their integer targets.

    Classes absent from ``targets`` are added as zero-weight rows, so scikit-learn sees all C classes
    without them changing the fit; the single all-rows split calibrates on every row (prefit semantics).
    """
    logp = _log(probs)
    targets = np.asarray(targets, dtype=np.int64)
    n, c = logp.shape
    absent = np.setdiff1d(np.arange(c), targets)
    x = np.vstack([logp, np.full((len(absent), c), np.log(1.0 / c))])
    y = np.concatenate([targets, absent])
    weight = np.concatenate([np.ones(n), np.zeros(len(absent))])
    everything = np.arange(len(y))
    model = CalibratedClassifierCV(
        FrozenEstimator(_LogProbClassifier(c).fit()), method="temperature", cv=[(everything, everything)]
    )
    with warnings.catch_warnings():
        # The frozen estimator ignores sample weights by design; they are meant for the calibrator only.
        warnings.filterwarnings("ignore", message="Since FrozenEstimator does not appear to accept")
        return model.fit(x, y, sample_weight=weight)


def temperature_of(model: CalibratedClassifierCV) -> float:
    """The fitted temperature T (probabilities become softmax(log p / T))."""
    return float(1.0 / model.calibrated_classifiers_[0].calibrators[0].beta_)


def apply_temperature(model: CalibratedClassifierCV, probs) -> np.ndarray:
    """Calibrated (N, C) probabilities from a model fitted by :func:`fit_temperature`."""
    return model.predict_proba(_log(probs))


def cross_validated_temperature(probs, targets, parts) -> np.ndarray:
    """(N, C) probabilities each calibrated by a temperature fitted on the other ``parts`` (row index
    arrays covering ``range(N)``): out-of-sample calibrated probabilities, to score the calibration."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(parts) < 2:
        raise CalibrationError(f"cross-validating a temperature needs at least 2 parts of the OOF rows, got {len(parts)}")
    out = np.empty_like(probs)
    everything = np.arange(len(targets))
    for part in parts:
        rest = np.setdiff1d(everything, part)
        out[part] = apply_temperature(fit_temperature(probs[rest], targets[rest]), probs[part])
    return out


# --- calibration scores ----------------------------------------------------------------------------
def log_loss(probs, targets) -> float:
    """Mean negative log-probability of the true class (probabilities clipped at ``EPS``)."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(targets)), targets], EPS, 1.0))))


def expected_calibration_error(probs, targets, n_bins: int = 15) -> float:
    """Top-1 ECE: rows binned by their top probability into ``n_bins`` equal bins of (0, 1] (bin b holds
    b/n < conf <= (b+1)/n), then the sum over bins of (rows in bin / N) x |accuracy - mean confidence|."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        inside = bins == b
        ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)
