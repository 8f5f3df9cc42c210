"""The data of one job: the feature cache's stores, train.csv with its fold split, and the train and
validation rows of the job's fold and stage (train: the other folds; retrain_val: the fold itself)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from fstag.core.config import to_plain
from fstag.train.datamodule import Rows
from fstag.data.layout import DatasetLayout, labels_from_train, read_train_csv
from fstag.data.folds import load_or_create_folds

log = logging.getLogger(__name__)


class TrainingSetupError(RuntimeError):
    """A job cannot start (missing features, parent checkpoint, ...); the message says what was looked for."""


@dataclass
class FoldData:
    layout: DatasetLayout
    labels: list[str]
    feature_key: str
    train_store: object
    test_store: object
    table: pd.DataFrame          # train.csv rows with features, with their `fold`
    in_fold: np.ndarray          # rows of the validation fold
    train_rows: Rows
    val_rows: Rows

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


def rows_of(df: pd.DataFrame, store, labels: list[str], mask: np.ndarray, unverified_weight: float) -> Rows:
    lab = {l: i for i, l in enumerate(labels)}
    sub = df[mask]
    return Rows(
        index=np.array([store.index_of(f) for f in sub["fname"]], dtype=np.int64),
        targets=np.array([lab[l] for l in sub["label"]], dtype=np.int64),
        weights=np.where(sub["manually_verified"].to_numpy(), 1.0, unverified_weight).astype(np.float32),
        verified=sub["manually_verified"].to_numpy().astype(bool),
    )


def load_fold_data(cfg: DictConfig) -> FoldData:
    """Everything a job of ``cfg`` (fold, stage, data, features, folds) trains and validates on."""
    fkey, train_store, test_store = open_features(cfg)  # first: its error says to run preprocess.py
    layout = DatasetLayout(Path(str(cfg.data.root)))
    train_df = read_train_csv(layout.train_csv)
    labels = labels_from_train(train_df)
    df = load_or_create_folds(train_df, Path(str(cfg.data.features_dir)), int(cfg.folds.n_splits), int(cfg.folds.seed))
    fold = int(cfg.fold)
    if not 0 <= fold < int(cfg.folds.n_splits):
        raise TrainingSetupError(f"fold={fold} is out of range: folds.n_splits={cfg.folds.n_splits}")
    absent = ~df["fname"].isin(set(train_store.fnames))
    if absent.any():
        log.warning("%d train.csv rows have no features (unreadable or missing audio; see the preprocess report) "
                    "and are left out, e.g. %s", int(absent.sum()), df["fname"][absent].iloc[0])
        df = df[~absent].reset_index(drop=True)
    in_fold = (df["fold"] == fold).to_numpy()
    verified = df["manually_verified"].to_numpy(dtype=bool)
    usable = verified | bool(cfg.data.use_unverified)
    if str(cfg.stage.name) == "retrain_val":
        train_mask, val_mask = in_fold & usable, ~in_fold
    else:
        train_mask, val_mask = ~in_fold & usable, in_fold
    uw = float(cfg.data.unverified_weight)
    return FoldData(layout, labels, fkey, train_store, test_store, df, in_fold,
                    rows_of(df, train_store, labels, train_mask, uw), rows_of(df, train_store, labels, val_mask, uw))
