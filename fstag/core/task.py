"""The task's shape: what differs between single-label and multi-label tagging, in one place.

Every package asks this module instead of branching on its own: a data layout says which task its labels
make (``data.task``; conf/task/<name>.yaml, overridable with ``task=``), a run records it (run.json
``task``, the MLflow tag ``fstag.task``), and predict.py, blend.py, the runs listing and the selectors read
it from the run. Runs recorded before fstag knew tasks are single-label (:func:`task_of`).

| question                    | single_label (FSDKaggle2018)          | multi_label (FSDKaggle2019, FSD50K)      |
|-----------------------------|---------------------------------------|------------------------------------------|
| targets                     | class index per clip, int64 (N,)      | 0/1 per label, uint8 (N, C)              |
| scores from logits          | softmax                               | sigmoid                                  |
| loss                        | cross-entropy (+ label smoothing)     | BCE-with-logits (+ smoothing) or focal   |
| metrics (primary first)     | MAP@3, top-1 accuracy                 | lwlrap, mAP (macro average precision)    |
| best checkpoint by          | val_acc1 (the seed's choice)          | val_lwlrap                               |
| combining crops and members | geometric mean, renormalised per row  | per label, no renormalisation            |
| folds                       | stratified K-fold                     | multi-label stratified K-fold            |
| submission                  | ``fname,label``: the top 3 labels     | ``fname,<label>...``: one probability each |

The metric functions themselves live in :mod:`fstag.evaluate.metrics`, the losses in :mod:`fstag.models`;
this module holds the names and the rules, as plain data, so that the bookkeeping packages (runs, data)
read them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"
LABEL_SEPARATOR = ","  # a multi-label cell: labels joined by commas (FSDKaggle2019's `labels` column)


class TaskError(ValueError):
    """An unknown task, or labels that do not fit the task; the message names the key or row."""


@dataclass(frozen=True)
class Task:
    """One task shape. ``metrics``: the score names, the primary (the one runs are ranked by) first;
    ``monitor``: the validation metric the best checkpoint and early stopping use by default."""

    name: str
    multi_label: bool
    metrics: tuple[str, ...]
    monitor: str
    description: str

    @property
    def primary(self) -> str:
        """The score runs, blends and searches are ranked by: ``map3`` or ``lwlrap``."""
        return self.metrics[0]

    @property
    def val_metric(self) -> str:
        """``val_<primary>``: the listing's, the selectors' and the MLflow URL's default ranking."""
        return f"val_{self.primary}"

    @property
    def val_metrics(self) -> tuple[str, ...]:
        """The validation metrics a job logs each epoch (``val_loss`` besides)."""
        return tuple(f"val_{m}" for m in self.metrics)

    @property
    def oof_metrics(self) -> tuple[str, ...]:
        """The OOF scores run.json records (``oof_map3``, ``oof_acc1`` / ``oof_lwlrap``, ``oof_map``)."""
        return tuple(f"oof_{m}" for m in self.metrics)

    @property
    def renormalise(self) -> bool:
        """Whether combined probabilities are made to sum to 1 per row (single-label only)."""
        return not self.multi_label

    # targets ----------------------------------------------------------------------------------------
    def encode(self, cells: Sequence[str], labels: Sequence[str], source: str = "labels") -> np.ndarray:
        """Targets from label cells: class indices (single-label) or a 0/1 matrix (multi-label, each cell
        :data:`LABEL_SEPARATOR`-joined). An unknown label is a :class:`TaskError` naming ``source`` and row."""
        index = {lab: j for j, lab in enumerate(labels)}
        if not self.multi_label:
            out = np.empty(len(cells), dtype=np.int64)
            for i, cell in enumerate(cells):
                if cell not in index:
                    raise TaskError(f"{source}: row {i}: label {cell!r} is not one of the {len(labels)} labels")
                out[i] = index[cell]
            return out
        out = np.zeros((len(cells), len(labels)), dtype=np.uint8)
        for i, cell in enumerate(cells):
            for lab in split_labels(cell):
                if lab not in index:
                    raise TaskError(f"{source}: row {i}: label {lab!r} is not one of the {len(labels)} labels")
                out[i, index[lab]] = 1
        return out

    def check_targets(self, targets: np.ndarray, n_labels: int, what: str = "targets") -> np.ndarray:
        """``targets`` checked against the task's shape; returned as int64 (N,) or uint8 (N, C)."""
        t = np.asarray(targets)
        if self.multi_label:
            if t.ndim != 2 or t.shape[1] != n_labels:
                raise TaskError(f"{what}: a multi-label task needs a (N, {n_labels}) 0/1 matrix, got shape {t.shape}")
            return (t > 0.5).astype(np.uint8) if t.dtype.kind == "f" else t.astype(np.uint8)
        if t.ndim != 1:
            raise TaskError(f"{what}: a single-label task needs (N,) class indices, got shape {t.shape}")
        return t.astype(np.int64)


TASKS: dict[str, Task] = {
    SINGLE_LABEL: Task(SINGLE_LABEL, False, ("map3", "acc1"), "val_acc1",
                       "one label per clip: softmax, cross-entropy, MAP@3"),
    MULTI_LABEL: Task(MULTI_LABEL, True, ("lwlrap", "map"), "val_lwlrap",
                      "any number of labels per clip: sigmoid per label, BCE, lwlrap and mAP"),
}
# What each metric name means, for tables and docs.
METRIC_TITLES = {"map3": "MAP@3", "acc1": "top-1", "lwlrap": "lwlrap", "map": "mAP"}


def get_task(name: Any) -> Task:
    """The task called ``name``; an unknown name is a :class:`TaskError` listing the known ones."""
    key = str(name)
    if key not in TASKS:
        raise TaskError(f"task={key!r}: choose one of {', '.join(TASKS)}")
    return TASKS[key]


def task_of(info: Mapping[str, Any] | None) -> Task:
    """The task a run recorded (run.json ``task``); runs made before tasks existed are single-label."""
    return get_task((info or {}).get("task") or SINGLE_LABEL)


def task_of_cfg(cfg: Any) -> Task:
    """The task of a composed config (``task.name``; single-label when the config has none)."""
    node = cfg.get("task") if hasattr(cfg, "get") else None
    name = node.get("name") if hasattr(node, "get") else node
    return get_task(name or SINGLE_LABEL)


def uninformed(task: Task, num_classes: int) -> float:
    """The probability every label gets for a clip the model cannot hear (unreadable, silent): 1/C for a
    single-label task (uniform), 0 for a multi-label one (no sound event: no label, above any threshold)."""
    return 0.0 if task.multi_label else 1.0 / max(num_classes, 1)


def split_labels(cell: str) -> list[str]:
    """The labels of a multi-label cell (``"Bark,Chirp"``), stripped; empty parts dropped."""
    return [p.strip() for p in str(cell).split(LABEL_SEPARATOR) if p.strip()]


def join_labels(labels: Sequence[str]) -> str:
    return LABEL_SEPARATOR.join(labels)


def metric_title(name: str) -> str:
    """``val_lwlrap`` -> ``val lwlrap``; ``map3`` -> ``MAP@3``: a readable column title."""
    prefix, _, base = str(name).rpartition("_") if str(name).startswith(("val_", "oof_", "fit_", "test_")) else ("", "", name)
    title = METRIC_TITLES.get(base, base)
    return f"{prefix} {title}".strip()
