"""The data of one job: the feature cache's stores, the layout's train table with its fold split, and the
train and validation rows of the job's fold and stage (train: the other folds; retrain_val: the fold
itself). Targets follow the task (:mod:`fstag.core.task`); each row's loss weight and first epoch follow its
source (``data.sources.<source>``: ``use``, ``weight``, ``from_epoch``) or, without one, ``manually_verified``
(``data.use_unverified``, ``data.unverified_weight``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from fstag.core.config import to_plain
from fstag.core.task import Task, task_of_cfg
from fstag.train.datamodule import Rows
from fstag.data.layouts import Layout, open_layout
from fstag.data.folds import FoldsError, fold_index, load_or_create_folds, split_of

log = logging.getLogger(__name__)


class TrainingSetupError(RuntimeError):
    """A job cannot start (missing features, parent checkpoint, ...); the message says what was looked for."""


@dataclass
class FoldData:
    layout: Layout
    task: Task
    labels: list[str]
    feature_key: str
    train_store: object
    test_store: object
    table: pd.DataFrame          # train.csv rows with features, with their `fold`
    in_fold: np.ndarray          # rows of the validation fold
    train_rows: Rows
    val_rows: Rows
    fold_split: dict | None = None  # the split's record (fstag.data.folds.fold_split) for run.json

    @property
    def fold_fnames(self) -> list[str]:
        """The validation fold's clips, in train.csv order (the rows of oof.npz)."""
        return self.table["fname"][self.in_fold].tolist()


def open_features(cfg: DictConfig):
    """(feature key, train store, test store) of the job's feature config; a clear error when not cached."""
    from fstag.data.feature_store import FeatureStore, feature_dir
    from fstag.data.feature_config import FeatureConfig, feature_key

    fcfg = FeatureConfig.from_cfg(to_plain(cfg.features))
    fdir = feature_dir(cfg.data.features_dir, fcfg)
    try:
        train_store = FeatureStore.open(fdir, "train")
        test_store = FeatureStore.open(fdir, "test")
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise TrainingSetupError(
            f"features for data={cfg.data.name} not found in {fdir} ({exc}); "
            f"run `python preprocess.py data={cfg.data.name} data.root={cfg.data.root}` first"
        ) from exc
    return feature_key(fcfg), train_store, test_store


SOURCE_KEYS = ("use", "weight", "from_epoch")


def source_settings(data_cfg: DictConfig, sources, known=()) -> dict[str, dict]:
    """``data.sources`` checked against the train table's sources: ``{source: {use, weight, from_epoch}}``
    (only the sources the config names); an unknown source or key is a :class:`TrainingSetupError`. A source
    in ``known`` (the layout's possible sources) that this copy lacks (FSDKaggle2019 without train_noisy.csv)
    has no rows to apply to: logged and left out."""
    given = to_plain(data_cfg.get("sources")) or {}
    present = sorted(set(sources))
    out = {}
    for name, settings in given.items():
        if name not in present and name in known:
            log.info("data.sources.%s: this data set has no %s rows (its train rows come from %s)", name, name, present)
            continue
        if name not in present:
            raise TrainingSetupError(f"data.sources.{name}: this data set's train rows come from {present}")
        settings = dict(settings or {})
        unknown = sorted(set(settings) - set(SOURCE_KEYS))
        if unknown:
            raise TrainingSetupError(f"data.sources.{name}: unknown key(s) {unknown}; expected {list(SOURCE_KEYS)}")
        weight, start = float(settings.get("weight", 1.0)), int(settings.get("from_epoch", 0) or 0)
        if weight < 0 or start < 0:
            raise TrainingSetupError(f"data.sources.{name}: weight and from_epoch must be >= 0, got {settings}")
        out[name] = {"use": bool(settings.get("use", True)), "weight": weight, "from_epoch": start}
    return out


def rows_of(df: pd.DataFrame, store, labels: list[str], mask: np.ndarray, unverified_weight: float,
            task: Task | None = None, sources: dict[str, dict] | None = None) -> Rows:
    sub = df[mask]
    verified = sub["manually_verified"].to_numpy().astype(bool)
    weights = np.where(verified, 1.0, unverified_weight).astype(np.float32)
    start = np.zeros(len(sub), dtype=np.int64)
    for name, settings in (sources or {}).items():
        of = (sub["source"] == name).to_numpy()
        weights[of] = settings["weight"]
        start[of] = settings["from_epoch"]
    if task is None or not task.multi_label:
        lab = {l: i for i, l in enumerate(labels)}
        targets = np.array([lab[l] for l in sub["label"]], dtype=np.int64)
    else:
        targets = task.encode(sub["label"].tolist(), labels)
    return Rows(
        index=np.array([store.index_of(f) for f in sub["fname"]], dtype=np.int64),
        targets=targets, weights=weights, verified=verified, start_epoch=start if start.any() else None,
    )


def load_fold_data(cfg: DictConfig) -> FoldData:
    """Everything a job of ``cfg`` (fold, stage, data, task, features, folds) trains and validates on."""
    fkey, train_store, test_store = open_features(cfg)  # first: its error says to run preprocess.py
    layout = open_layout(cfg.data)
    task = task_of_cfg(cfg)
    table = layout.train_table()
    labels = layout.labels()
    method = str(cfg.folds.get("method", "stratified"))
    try:
        fold = fold_index(cfg.fold, method, int(cfg.folds.n_splits))
        df = load_or_create_folds(table, Path(str(cfg.data.features_dir)), int(cfg.folds.n_splits),
                                  int(cfg.folds.seed), task.multi_label, method)
    except FoldsError as exc:
        raise TrainingSetupError(str(exc)) from None
    split = split_of(layout, Path(str(cfg.data.features_dir)), int(cfg.folds.n_splits), int(cfg.folds.seed),
                     task.multi_label, method, table=table)
    sources = source_settings(cfg.data, df["source"], getattr(layout, "sources", ()))
    unused = [name for name, s in sources.items() if not s["use"]]
    if unused:
        df = df[~df["source"].isin(unused)].reset_index(drop=True)
    absent = ~df["fname"].isin(set(train_store.fnames))
    if absent.any():
        log.warning("%d train rows have no features (unreadable or missing audio; see the preprocess report) "
                    "and are left out, e.g. %s", int(absent.sum()), df["fname"][absent].iloc[0])
        df = df[~absent].reset_index(drop=True)
    in_fold = (df["fold"] == fold).to_numpy()
    verified = df["manually_verified"].to_numpy(dtype=bool)
    usable = verified | bool(cfg.data.use_unverified)
    in_folds = (df["fold"] >= 0).to_numpy()  # fold -1: rows that only ever train (FSDKaggle2019's noisy clips)
    if str(cfg.stage.name) == "retrain_val":
        train_mask, val_mask = in_fold & usable, ~in_fold & in_folds
    else:
        train_mask, val_mask = ~in_fold & usable, in_fold
    uw = float(cfg.data.unverified_weight)
    return FoldData(layout, task, labels, fkey, train_store, test_store, df, in_fold,
                    rows_of(df, train_store, labels, train_mask, uw, task, sources),
                    rows_of(df, train_store, labels, val_mask, uw, task), split)
