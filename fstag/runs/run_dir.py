"""The on-disk contract of one training job's directory, shared by train.py, predict.py and blend.py.

A job directory (``<runs_root>/<exp>/<arch>/<aug>/<variant>/fold_<k>[_r|_st]``; the variant is ``default`` or
the job's other overrides, see fstag.runs.identity) holds:

- ``config.yaml``   the job's resolved config (Hydra's own copy is under ``.hydra/``)
- ``mlflow_run_id`` the job's MLflow run id (written when the run opens)
- ``identity.json`` the config digest that decides whether a rerun may reuse the directory
- ``checkpoints/best.ckpt`` (best by ``task.monitor``, val_acc1 or val_lwlrap: weights, hyper-parameters, epoch; with the optimizer state when
                    ``checkpoint.best_weights_only=false``) and ``checkpoints/last.ckpt`` (the whole state)
- ``run.json``      identity: arch, aug, fold, stage, variant, name, ``task`` (single_label | multi_label; absent
                    in runs made before tasks: single_label), labels, feature key and config, data layout, fold
                    split (``fold_split``: n_splits, seed, the label files' sha256, digest), MLflow ids, the best
                    checkpoint's monitored metric (``best_monitor``; ``best_val_acc1`` single-label) and the
                    best epoch's metrics (``best_metrics``: ``val_*``; a retrain_val job's ``fit_*``, measured on
                    rows it trained on, with its parent's ``val_*`` in ``parent_metrics``), the OOF scores
                    (``oof_map3``/``oof_acc1`` or ``oof_lwlrap``/``oof_map``), ``timings`` (where the job's time
                    went: fstag.train.timings), ``complete``
- ``oof.npz``       out-of-fold predictions: ``fnames``, ``probs`` (N, C) float32, ``targets`` (N,) int64 class
                    indices (multi-label: an (N, C) 0/1 matrix). A retrain_val job trained on its fold, so it
                    carries its parent's OOF (``oof_source`` in run.json says so).
- ``test.npz``      test predictions: ``fnames``, ``probs`` (N, C) float32 (TTA passes combined as the task
                    says: geometric mean, or the mean sigmoid probability per label)
- ``failure.json``  why the job's last attempt ended without finishing (killed, crashed): ``status``, ``cause``,
                    ``log_file``; the next attempt removes it
- ``pseudo_labels.csv`` a stage=self_train job's pseudo-labelled clips of its folder: ``file``, ``label``,
                    ``confidence`` (run.json's ``self_train`` says how they were chosen)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RUN_JSON = "run.json"
OOF_NPZ = "oof.npz"
TEST_NPZ = "test.npz"
CONFIG_YAML = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
BEST_CKPT = "best.ckpt"
LAST_CKPT = "last.ckpt"
# The MLflow tag of a train.py run that names its run directory (how an MLflow run id finds the files).
MLFLOW_RUN_DIR_TAG = "fstag.run_dir"
# Why a job's last attempt ended without finishing (``status`` FAILED/KILLED, ``cause``, ``log_file``, ``ended``),
# written by the launcher's guard (fstag.runs.sweep_jobs) and dropped when the job runs again.
FAILURE_JSON = "failure.json"
# The job's MLflow run id, written when the run is opened (a resumed job, a DDP rank or a failed job's
# callback finds the run by it).
MLFLOW_RUN_ID_FILE = "mlflow_run_id"


class RunDirError(FileNotFoundError):
    """A run directory, or a file it should hold, is missing or malformed; the message names the path."""


# The job folder's suffix of each stage (conf/stage/<stage>.yaml's ``suffix``).
STAGE_SUFFIX = {"train": "", "retrain_val": "_r", "self_train": "_st"}


def job_name(fold: int, stage: str) -> str:
    """``fold_<k>`` for stage train, ``fold_<k>_r`` for retrain_val, ``fold_<k>_st`` for self_train."""
    return f"fold_{int(fold)}" + STAGE_SUFFIX.get(stage, "")


def job_relpath(arch: str, aug: str, fold: int, stage: str, variant: str = "default") -> Path:
    """Where a job lives below ``<runs_root>/<exp>``: ``<arch>/<aug>/<variant>/fold_<k>[_r]``."""
    return Path(arch) / aug / variant / job_name(fold, stage)


def mlflow_run_name(arch: str, aug: str, fold: int, stage: str, variant: str = "default") -> str:
    """``<arch>/<aug>/<variant>/fold_<k>[_r]``: the job's path below its experiment folder."""
    return f"{arch}/{aug}/{variant}/{job_name(fold, stage)}"


@dataclass
class Predictions:
    fnames: list[str]
    probs: np.ndarray
    targets: np.ndarray | None = None


@dataclass
class RunDir:
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path)
        run_json = path / RUN_JSON
        if not run_json.is_file():
            raise RunDirError(f"{path}: not a training run directory ({RUN_JSON} not found)")
        try:
            info = json.loads(run_json.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{run_json}: malformed JSON: {exc}") from exc
        return cls(path=path, info=info)

    # identity --------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.info.get("name", self.path.name))

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def feature_key(self) -> str:
        return str(self.info["feature_key"])

    @property
    def fold_split(self) -> dict | None:
        """The fold split the run was trained on (``fstag.data.folds.fold_split``); None for older runs."""
        return self.info.get("fold_split") or None

    @property
    def complete(self) -> bool:
        return bool(self.info.get("complete", False))

    # files -----------------------------------------------------------------------------------------
    @property
    def best_checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR / BEST_CKPT

    @property
    def last_checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR / LAST_CKPT

    def _load(self, fname: str, with_targets: bool) -> Predictions:
        p = self.path / fname
        if not p.is_file():
            raise RunDirError(f"{p}: predictions not found (did the run finish?)")
        with np.load(p, allow_pickle=False) as z:
            return Predictions(
                fnames=[str(f) for f in z["fnames"]],
                probs=z["probs"].astype(np.float64),
                targets=z["targets"].astype(np.int64) if with_targets and "targets" in z else None,
            )

    def oof(self) -> Predictions:
        return self._load(OOF_NPZ, with_targets=True)

    def test(self) -> Predictions:
        return self._load(TEST_NPZ, with_targets=False)
