"""stage=retrain_val: the train run a retrain_val job starts from (found, checked against the job's split,
config, labels and features) and the record of which weights it started from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from fstag.core.io import write_json_atomic
from fstag.core.task import task_of_cfg
from fstag.data.folds import describe_split, same_split, split_of
from fstag.data.layouts import open_layout
from fstag.models.module import TaggingModule, plain_state_dict
from fstag.runs.catalog import describe_siblings
from fstag.runs.identity import differing_keys, format_diff, job_variant, task_overrides
from fstag.runs.run_dir import BEST_CKPT, CHECKPOINT_DIR, RUN_JSON, RunDir, RunDirError
from fstag.train.fold_data import TrainingSetupError

INIT_FROM_JSON = "init_from.json"  # a retrain_val job's record of the parent checkpoint it started from


def state_digest(state_dict: dict) -> str:
    """sha256 over a state dict's tensors in key order (which weights a retrain_val job started from)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def previous_init_from(job_dir: Path) -> dict | None:
    """A resumed retrain_val job started from its parent earlier: keep what the first start recorded."""
    p = job_dir / INIT_FROM_JSON
    return json.loads(p.read_text()) if p.is_file() else None


def parent_run(cfg: DictConfig, labels: list[str], fkey: str, ident: dict) -> RunDir:
    """The complete train run of this retrain_val job's arch/aug/variant/fold, on the same split, config
    (less stage and retrain keys), labels and features; a :class:`TrainingSetupError` says what differs."""
    parent_dir = Path(str(cfg.stage.parent))
    try:
        parent = RunDir.open(parent_dir)
    except RunDirError as exc:
        _, items = job_variant(task_overrides(), "train", str(cfg.data.root), cfg.data)
        extra = "".join(f" {i}" for i in items if "@" not in i)
        group = f"arch={cfg.arch.name} aug={cfg.aug.name} fold={cfg.fold}"

        def command(found: list[str], variant: str) -> str:
            spelled = "".join(f" '{i}'" if "," in i else f" {i}" for i in found if "@" not in i)
            return f"python train.py stage=retrain_val {group}{spelled}"

        siblings = describe_siblings(parent_dir.parents[3], str(cfg.arch.name), str(cfg.aug.name), parent_dir.name,
                                     [i for i in items if "@" not in i], command)
        raise TrainingSetupError(
            f"stage=retrain_val needs the train run of {group} "
            f"(variant {parent_dir.parent.name}): looked for {parent_dir / RUN_JSON} and "
            f"{parent_dir / CHECKPOINT_DIR / BEST_CKPT}, not found. "
            f"Train it first: python train.py {group}{extra}." + siblings
        ) from exc
    split = split_of(open_layout(cfg.data), Path(str(cfg.data.features_dir)), int(cfg.folds.n_splits),
                     int(cfg.folds.seed), task_of_cfg(cfg).multi_label, str(cfg.folds.get("method", "stratified")))
    if not same_split(parent.info.get("fold_split"), split):
        raise TrainingSetupError(
            f"retrain_val job {cfg.job_dir} uses {describe_split(split)} but its parent run {parent_dir} was trained "
            f"on {describe_split(parent.info.get('fold_split'))}: its validation fold is other rows; retrain_val "
            "with the parent's folds.* settings and train.csv, or train a parent on this split")
    saved = (parent.info.get("identity") or {})
    diff = differing_keys(saved, ident, ignore=("stage", "retrain")) if saved else []
    if diff:
        raise TrainingSetupError(
            f"parent run {parent_dir} was trained with another config: {format_diff(diff)}; retrain it, "
            "or retrain_val with the settings it was trained with")
    if not parent.complete or not parent.best_checkpoint.is_file():
        raise TrainingSetupError(f"parent run {parent_dir} is not complete (no {parent.best_checkpoint}); finish it first")
    if parent.labels != labels or parent.feature_key != fkey:
        raise TrainingSetupError(f"parent run {parent_dir} was trained with another label set or feature config")
    return parent


def start_from_parent(module: TaggingModule, parent: RunDir, job_dir: Path, write: bool) -> dict:
    """Load the parent's best weights into ``module``; record which (``init_from.json`` when ``write``)."""
    state = plain_state_dict(torch.load(parent.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    module.load_state_dict(state)
    init_from = {"checkpoint": str(parent.best_checkpoint), "state_sha256": state_digest(state)}
    if write:
        write_json_atomic(job_dir / INIT_FROM_JSON, init_from)
    return init_from
