"""The per-class reports of a blend run (:mod:`fstag.evaluate.reports`): on its blended OOF rows and, when
the test split has a labels file, on its scored test rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fstag.ensemble.submission import read_test_labels
from fstag.evaluate.reports import ClassReport, ReportError, log_class_report


def scored_test_rows(labels_csv: str | Path, fnames: list[str], labels) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into ``fnames`` and class targets of the scored clips of a test labels file (usage
    ``Ignored`` left out, as :func:`fstag.ensemble.submission.score_submission` scores)."""
    truth = read_test_labels(labels_csv)
    if "usage" in truth.columns:
        truth = truth[truth["usage"] != "Ignored"]
    row = {f: i for i, f in enumerate(fnames)}
    index = {lab: j for j, lab in enumerate(labels)}
    missing = sorted(set(truth["fname"]) - set(row))
    if missing:
        raise ReportError(f"{labels_csv}: {len(missing)} scored clip(s) have no prediction, e.g. {missing[:5]}")
    unknown = sorted(set(truth["label"]) - set(index))
    if unknown:
        raise ReportError(f"{labels_csv}: label(s) {unknown[:5]} are not among the {len(labels)} labels")
    return truth["fname"].map(row).to_numpy(np.int64), truth["label"].map(index).to_numpy(np.int64)


def log_blend_reports(tracking_uri: str, run_id: str, labels, out_dir: str | Path, oof_probs, oof_targets,
                      test_probs, test_fnames: list[str], labels_csv: str | Path | None) -> list[ClassReport]:
    """The reports of a blend run: on its OOF rows (``oof_probs`` None when the members share none) and,
    when the test split has a labels file, on its scored test rows (metrics ``test_map3/<label>``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    done = []
    if oof_probs is not None:
        done.append(log_class_report(client, run_id, oof_probs, oof_targets, labels, out_dir, "oof", "blend"))
    if labels_csv:
        rows, targets = scored_test_rows(labels_csv, test_fnames, labels)
        done.append(log_class_report(client, run_id, np.asarray(test_probs)[rows], targets, labels, out_dir,
                                     "test", "blend"))
    return [r for r in done if r is not None]
