"""The per-class reports of a blend run (:mod:`fstag.evaluate.reports`): on its blended OOF rows and, when
the test split has labels, on its scored test rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fstag.core.task import SINGLE_LABEL, Task, get_task, split_labels
from fstag.ensemble.submission import read_test_labels
from fstag.evaluate.reports import ClassReport, ReportError, log_class_report


def scored_test_rows(truth, fnames: list[str], labels, task: Task | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into ``fnames`` and the targets (class indices; multi-label: a 0/1 matrix) of the scored
    clips of the test labels (a file or a table; usage ``Ignored`` left out, as the submission is scored)."""
    task = task or get_task(SINGLE_LABEL)
    source = "the test labels" if isinstance(truth, pd.DataFrame) else str(truth)
    truth = truth if isinstance(truth, pd.DataFrame) else read_test_labels(truth)
    if "usage" in truth.columns:
        truth = truth[truth["usage"] != "Ignored"]
    row = {f: i for i, f in enumerate(fnames)}
    index = {lab: j for j, lab in enumerate(labels)}
    missing = sorted(set(truth["fname"]) - set(row))
    if missing:
        raise ReportError(f"{source}: {len(missing)} scored clip(s) have no prediction, e.g. {missing[:5]}")
    named = {lab for c in truth["label"] for lab in (split_labels(c) if task.multi_label else [c])}
    unknown = sorted(named - set(index))
    if unknown:
        raise ReportError(f"{source}: label(s) {unknown[:5]} are not among the {len(labels)} labels")
    rows = truth["fname"].map(row).to_numpy(np.int64)
    if task.multi_label:
        return rows, task.encode(truth["label"].tolist(), labels, source)
    return rows, truth["label"].map(index).to_numpy(np.int64)


def log_blend_reports(tracking_uri: str, run_id: str, labels, out_dir: str | Path, oof_probs, oof_targets,
                      test_probs, test_fnames: list[str], truth, task: Task | None = None) -> list[ClassReport]:
    """The reports of a blend run: on its OOF rows (``oof_probs`` None when the members share none) and,
    when the test split has labels (``truth``: a file or a table, else None), on its scored test rows
    (metrics ``test_map3/<label>``; multi-label ``test_lwlrap/<label>``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri) if isinstance(tracking_uri, str) else tracking_uri  # or a client
    done = []
    if oof_probs is not None:
        done.append(log_class_report(client, run_id, oof_probs, oof_targets, labels, out_dir, "oof", "blend", task=task))
    if truth is not None:
        rows, targets = scored_test_rows(truth, test_fnames, labels, task)
        done.append(log_class_report(client, run_id, np.asarray(test_probs)[rows], targets, labels, out_dir,
                                     "test", "blend", task=task))
    return [r for r in done if r is not None]
