"""stage=self_train: pseudo-labels on a folder of the user's own, unlabelled recordings.

The teachers (``self_train.teachers``: trained runs, resolved as predict.py resolves ``runs=[...]``) tag
every audio file of ``self_train.input`` with predict.py's own code (:func:`fstag.infer.job.read_folder`:
features computed in memory with the job's feature config; :func:`fstag.infer.job.predict_with_runs`: TTA
crops, several teachers combined by geometric mean, unreadable and silent files left out). The clips whose
top-1 probability reaches ``self_train.threshold`` (at most ``self_train.per_class_cap`` per class, the
most confident first: :func:`select_pseudo_labels`) join the job's training rows with the teachers' top-1
label and loss weight ``self_train.weight``; :class:`PseudoLabelledStore` serves them after the feature
cache's rows, so the data module reads both alike. Only audio files are read from the folder: a labels
file beside them is never opened.

What was chosen is saved in the job directory (``pseudo_labels.csv``: file, label, confidence), recorded
in run.json (``self_train``: counts per class, threshold, cap, weight, the teachers' run directories) and
logged to the job's MLflow run (:func:`log_to_mlflow`).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from fstag.core.config import to_plain
from fstag.core.io import write_text_atomic
from fstag.runs.run_dir import RunDir
from fstag.train.datamodule import Rows
from fstag.train.fold_data import TrainingSetupError

log = logging.getLogger(__name__)

PSEUDO_LABELS_CSV = "pseudo_labels.csv"


def select_pseudo_labels(probs: np.ndarray, threshold: float,
                         per_class_cap: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``probs`` (N, C) worth a pseudo-label: ``(indices, labels, confidences)``.

    A row is kept when its top-1 probability (its confidence) is at least ``threshold``; its label is
    the top-1 class (the lowest class id among equal maxima). With ``per_class_cap``, at most that many
    rows per label are kept, the most confident first (equal confidences: the lower row first). The
    result is in row order (int64 indices and labels, float64 confidences)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {probs.shape}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"self_train.threshold={threshold}: a probability in [0, 1]")
    if per_class_cap is not None and int(per_class_cap) < 1:
        raise ValueError(f"self_train.per_class_cap={per_class_cap}: a positive number of clips, or null (no cap)")
    labels = np.argmax(probs, axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    conf = probs[np.arange(len(probs)), labels] if len(probs) else np.zeros(0)
    keep = np.flatnonzero(conf >= float(threshold))
    if per_class_cap is not None:
        order = keep[np.lexsort((keep, -conf[keep]))]  # most confident first, then the lower row
        taken: dict[int, int] = {}
        chosen = []
        for i in order:
            c = int(labels[i])
            if taken.get(c, 0) < int(per_class_cap):
                taken[c] = taken.get(c, 0) + 1
                chosen.append(i)
        keep = np.sort(np.array(chosen, dtype=np.int64))
    keep = keep.astype(np.int64)
    return keep, labels[keep].astype(np.int64), conf[keep]


class PseudoLabelledStore:
    """The train feature store's rows ``0..len(store)-1``, then the pseudo-labelled clips: row
    ``len(store) + j`` is clip ``j``. :class:`fstag.train.datamodule.CropDataset` reads both alike."""

    def __init__(self, store, clips: list[np.ndarray]):
        self.store, self.clips, self.offset = store, list(clips), len(store)

    def __len__(self) -> int:
        return self.offset + len(self.clips)

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        return self.store[i] if i < self.offset else self.clips[i - self.offset]


@dataclass
class PseudoLabels:
    """The teachers' verdict on the folder and the clips kept."""

    folder: Path
    fnames: list[str]          # every audio file of the folder, relative to it
    unusable: np.ndarray       # (N,) bool: unreadable or silent (never kept)
    indices: np.ndarray        # kept files (into fnames)
    labels: np.ndarray         # their class ids (the teachers' top-1)
    confidences: np.ndarray    # their top-1 probabilities
    clips: list[np.ndarray]    # their features (float16, as the feature cache stores them)
    teachers: list[RunDir]

    def table(self, label_names: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"file": [self.fnames[i] for i in self.indices],
                             "label": [label_names[c] for c in self.labels],
                             "confidence": np.round(self.confidences, 6)})

    def per_class(self, label_names: list[str]) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(label_names)) if len(self.labels) else np.zeros(len(label_names), int)
        return {name: int(n) for name, n in zip(label_names, counts)}


# config and teachers ---------------------------------------------------------------------------------
def input_folder(cfg: DictConfig) -> Path:
    """``self_train.input``, checked: a folder holding audio files (a TrainingSetupError names the key)."""
    from fstag.data.audio import list_audio_files

    st = cfg.self_train
    if st.get("input") in (None, ""):
        raise TrainingSetupError("stage=self_train needs self_train.input=/folder/of/recordings: the unlabelled "
                                 "audio to pseudo-label (docs/training.md)")
    folder = Path(str(st.input)).expanduser().resolve()
    if not folder.is_dir():
        raise TrainingSetupError(f"self_train.input={st.input}: {folder} is not a folder")
    if not list_audio_files(folder, list(st.extensions)):
        raise TrainingSetupError(f"self_train.input={st.input}: no audio files in {folder} "
                                 f"(self_train.extensions={list(st.extensions)})")
    check_settings(cfg)
    return folder


def check_settings(cfg: DictConfig) -> None:
    st = cfg.self_train
    try:
        select_pseudo_labels(np.zeros((0, 1)), float(st.threshold), st.per_class_cap)  # its own checks
    except ValueError as exc:
        raise TrainingSetupError(str(exc)) from None
    if float(st.weight) < 0:
        raise TrainingSetupError(f"self_train.weight={st.weight}: a loss weight >= 0")
    if int(st.tta) < 1:
        raise TrainingSetupError(f"self_train.tta={st.tta}: at least 1 crop")


def resolve_teachers(cfg: DictConfig) -> list[RunDir]:
    """``self_train.teachers`` as complete runs with checkpoints (:func:`fstag.runs.members.resolve_members`:
    names, run directories, MLflow run ids, selectors)."""
    from fstag.runs.members import MemberError, resolve_members

    given = cfg.self_train.get("teachers") or []
    specs = [str(given)] if isinstance(given, str) else [str(s) for s in given]
    if not specs:
        raise TrainingSetupError("stage=self_train needs self_train.teachers=[...]: the trained runs whose "
                                 "predictions make the pseudo-labels (names, run dirs, MLflow run ids or selectors)")
    runs_root = Path(str(cfg.paths.runs_dir)) / str(cfg.exp)
    try:
        members = resolve_members(specs, runs_root, str(cfg.mlflow.tracking_uri), str(cfg.data.root),
                                  checkpoints=True, experiment=str(cfg.mlflow.experiment))
    except MemberError as exc:
        raise TrainingSetupError(f"self_train.teachers: {exc}") from None
    job_dir = Path(str(cfg.job_dir)).resolve()
    if any(m.path.resolve() == job_dir for m in members):
        raise TrainingSetupError(f"self_train.teachers names the job itself ({job_dir})")
    return [m.run for m in members]


def check_teachers(teachers: list[RunDir], labels: list[str], feature_key: str) -> None:
    for t in teachers:
        if t.labels != labels:
            raise TrainingSetupError(f"teacher {t.path} was trained on another label set than this job's train.csv")
        if t.feature_key != feature_key:
            raise TrainingSetupError(f"teacher {t.path} used features {t.feature_key}, this job {feature_key}: "
                                     "pseudo-labels are made with the job's own features")


def trained_on_fold(teachers: list[RunDir], fold: int) -> list[str]:
    """The teachers that saw the labels of validation fold ``fold`` (a run of another fold, a retrain_val
    run): through their pseudo-labels the job's validation scores are optimistic."""
    out = []
    for t in teachers:
        f, stage = t.info.get("fold"), str(t.info.get("stage", "train"))
        if f is None or int(f) != int(fold) or stage == "retrain_val":
            out.append(str(t.path))
    return out


# the job's steps ------------------------------------------------------------------------------------------
def pseudo_label(cfg: DictConfig, teachers: list[RunDir], device) -> PseudoLabels:
    """The teachers' predictions on the folder (predict.py's code) and the clips selected from them."""
    from fstag.infer.job import predict_with_runs, read_folder

    st = cfg.self_train
    folder = input_folder(cfg)
    fnames, clips, errors = read_folder(folder, list(st.extensions), to_plain(cfg.features), key="self_train.input")
    settings = OmegaConf.create({"tta": int(st.tta), "hop_frames": None, "seed": int(cfg.predict.seed),
                                 "batch_size": int(cfg.predict.batch_size)})
    probs, errors, _, unusable = predict_with_runs(settings, teachers, clips, fnames, errors, "crops", device)
    usable = np.flatnonzero(~unusable)
    rows, labels, conf = select_pseudo_labels(probs[usable], float(st.threshold), st.per_class_cap)
    indices = usable[rows]
    kept = [np.asarray(clips[i], dtype=np.float16) for i in indices]
    pseudo = PseudoLabels(folder, fnames, unusable, indices, labels, conf, kept, teachers)
    log.info("self_train: %d of %d files of %s pseudo-labelled (threshold %s, cap %s; %d unreadable or silent)",
             len(indices), len(fnames), folder, st.threshold, st.per_class_cap, int(unusable.sum()))
    if not len(indices):
        log.warning("self_train: no file of %s reaches self_train.threshold=%s: the job trains on train.csv alone",
                    folder, st.threshold)
    return pseudo


def with_pseudo_labels(store, rows: Rows, pseudo: PseudoLabels, weight: float) -> tuple[PseudoLabelledStore, Rows]:
    """The store and training rows with the pseudo-labelled clips after the cache's rows; they count as
    unverified labels (``noise=prune`` may drop them)."""
    wrapped = PseudoLabelledStore(store, pseudo.clips)
    n = len(pseudo.clips)
    verified = np.ones(len(rows), dtype=bool) if rows.verified is None else rows.verified
    return wrapped, Rows(
        index=np.concatenate([rows.index, wrapped.offset + np.arange(n, dtype=np.int64)]),
        targets=np.concatenate([rows.targets, pseudo.labels.astype(np.int64)]),
        weights=np.concatenate([rows.weights, np.full(n, float(weight), dtype=np.float32)]).astype(np.float32),
        verified=np.concatenate([verified, np.zeros(n, dtype=bool)]),
    )


def record(cfg: DictConfig, pseudo: PseudoLabels, label_names: list[str], ident: dict, job_dir: Path) -> dict[str, Any]:
    """Write ``pseudo_labels.csv`` into the job directory; return run.json's ``self_train`` entry."""
    st = cfg.self_train
    write_text_atomic(job_dir / PSEUDO_LABELS_CSV, pseudo.table(label_names).to_csv(index=False))
    leaky = trained_on_fold(pseudo.teachers, int(cfg.fold))
    if leaky:
        log.warning("self_train: teachers %s were trained on fold %s's labels: this job's validation scores "
                    "(val_*, oof.npz) are optimistic; teachers of the same fold keep them honest", leaky, cfg.fold)
    return {
        "input": str(pseudo.folder), "files": len(pseudo.fnames), "unusable": int(pseudo.unusable.sum()),
        "selected": len(pseudo.indices), "per_class": pseudo.per_class(label_names),
        "threshold": float(st.threshold), "per_class_cap": None if st.per_class_cap is None else int(st.per_class_cap),
        "weight": float(st.weight), "tta": int(st.tta), "teachers": [str(t.path) for t in pseudo.teachers],
        "teachers_trained_on_val_fold": leaky, "input_sha256": ident.get("self_train.input_sha256"),
        "teachers_sha256": ident.get("self_train.teachers_sha256"), "pseudo_labels": PSEUDO_LABELS_CSV,
    }


def log_to_mlflow(client, run_id: str, job_dir: Path, summary: dict) -> None:
    """The counts as metrics (``pseudo_labels``, ``pseudo_label_files``, ``pseudo_labels.<label>``) and
    pseudo_labels.csv as an artifact of the job's run."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = {"pseudo_labels": summary["selected"], "pseudo_label_files": summary["files"]}
    metrics.update({f"pseudo_labels.{re.sub(r'[^A-Za-z0-9_./ -]', '_', k)}": v for k, v in summary["per_class"].items()})
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    csv = job_dir / PSEUDO_LABELS_CSV
    if csv.is_file():
        client.log_artifact(run_id, str(csv))
