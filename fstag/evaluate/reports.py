"""Per-class reports of predictions (what a model gets wrong): CSV tables, PNG charts and MLflow metrics.

Plain functions of ``probs`` (N, C), ``targets`` and ``labels`` (C names). Single-label (``targets`` (N,)
class indices): per-class MAP@3, top-1 and AP, the confusion matrix and the top confusions. Multi-label
(``targets`` an (N, C) 0/1 matrix): per-class lwlrap (and its share of the overall lwlrap) and AP
(:func:`multi_label_table`). Images are drawn on matplotlib's Agg canvas (no display, no pyplot state); the
numbers come from scikit-learn.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fstag.core.io import write_text_atomic, write_with
from fstag.runs.tracking import metric_name

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"  # the folder in a job / blend directory and the MLflow artifact path
DPI = 100
TOP_CONFUSIONS = 20
TABLE_COLUMNS = ["label", "support", "predicted", "acc1", "ap", "map3", "map3_contribution"]
MULTI_LABEL_COLUMNS = ["label", "support", "predicted", "ap", "lwlrap", "lwlrap_contribution"]
THRESHOLD = 0.5  # a multi-label report's "predicted": rows whose probability for the label is at least this
CONFUSION_COLUMNS = ["true", "predicted", "count", "share_of_true"]
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


class ReportError(ValueError):
    """Predictions that cannot be reported (shapes, labels, empty); the message says what is wrong."""


@dataclass
class ClassReport:
    """What :func:`write_class_report` wrote: the per-class table, overall MAP@3, files and metrics."""

    split: str
    table: pd.DataFrame
    map3: float
    files: list[Path] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def check_inputs(probs, targets, labels) -> tuple[np.ndarray, np.ndarray]:
    """``probs`` as float64 (N, C) and ``targets`` as int64 (N,), checked against each other and ``labels``."""
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if probs.ndim != 2 or targets.ndim != 1 or probs.shape[0] != targets.shape[0]:
        raise ReportError(f"probs {probs.shape} and targets {targets.shape} do not match: need (N, C) and (N,)")
    if probs.shape[1] != len(labels):
        raise ReportError(f"probs has {probs.shape[1]} classes but {len(labels)} labels were given")
    if len(targets) == 0:
        raise ReportError("no rows to report on (0 predictions)")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ReportError(f"targets must be class indices, got dtype {targets.dtype}")
    bad = (targets < 0) | (targets >= len(labels))
    if bad.any():
        raise ReportError(f"target {int(targets[bad][0])} is not a class index 0..{len(labels) - 1}")
    return probs, targets.astype(np.int64)


def ap_at_3_rows(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's AP@3 (1, 1/2, 1/3 for a true label ranked 1st, 2nd, 3rd, else 0); their mean is
    :func:`fstag.evaluate.metrics.map_at_3` (same stable tie rule: the lower class index first)."""
    top3 = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    weights = np.array([1.0, 1.0 / 2, 1.0 / 3])[: top3.shape[1]]
    return ((top3 == targets[:, None]) * weights).sum(axis=1)


def class_table(probs, targets, labels) -> pd.DataFrame:
    """One row per class: ``support`` (true rows), ``predicted`` (rows predicted top-1), ``acc1`` (top-1
    recall), ``ap`` (one-vs-rest average precision), ``map3`` (mean AP@3 of its rows) and
    ``map3_contribution`` (its rows' AP@3 summed over all N rows: the column sums to the overall MAP@3).
    Classes without rows get NaN for ``acc1``, ``ap`` and ``map3`` and 0 contribution."""
    from sklearn.metrics import average_precision_score

    probs, targets = check_inputs(probs, targets, labels)
    n, n_classes = probs.shape
    pred = probs.argmax(axis=1)
    row_ap3 = ap_at_3_rows(probs, targets)
    support = np.bincount(targets, minlength=n_classes)
    hits = np.bincount(targets, weights=(pred == targets).astype(np.float64), minlength=n_classes)
    ap3_sum = np.bincount(targets, weights=row_ap3, minlength=n_classes)
    ap = np.full(n_classes, np.nan)
    for c in np.flatnonzero(support):
        ap[c] = average_precision_score(targets == c, probs[:, c])
    with np.errstate(invalid="ignore", divide="ignore"):
        acc1 = np.where(support > 0, hits / support, np.nan)
        map3 = np.where(support > 0, ap3_sum / support, np.nan)
    return pd.DataFrame({
        "label": list(labels), "support": support, "predicted": np.bincount(pred, minlength=n_classes),
        "acc1": acc1, "ap": ap, "map3": map3, "map3_contribution": ap3_sum / n,
    })[TABLE_COLUMNS]


def multi_label_table(probs, targets, labels, threshold: float = THRESHOLD) -> pd.DataFrame:
    """One row per label of a multi-label task: ``support`` (rows with the label), ``predicted`` (rows at or
    above ``threshold``), ``ap`` (average precision), ``lwlrap`` (the label's mean precision over its true
    rows) and ``lwlrap_contribution`` (lwlrap x the label's share of true pairs: the column sums to the
    overall lwlrap). Labels without rows get NaN and 0 contribution."""
    from fstag.evaluate.metrics import class_average_precision, per_class_lwlrap

    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets)
    if probs.ndim != 2 or y.shape != probs.shape:
        raise ReportError(f"probs {probs.shape} and targets {y.shape} do not match: need two (N, C) arrays")
    if probs.shape[1] != len(labels):
        raise ReportError(f"probs has {probs.shape[1]} classes but {len(labels)} labels were given")
    if len(y) == 0:
        raise ReportError("no rows to report on (0 predictions)")
    per_class, weight = per_class_lwlrap(probs, y)
    return pd.DataFrame({
        "label": list(labels), "support": (y > 0).sum(axis=0), "predicted": (probs >= threshold).sum(axis=0),
        "ap": class_average_precision(probs, y), "lwlrap": per_class,
        "lwlrap_contribution": np.nan_to_num(per_class * weight),
    })[MULTI_LABEL_COLUMNS]


def multi_label_chart_figure(table: pd.DataFrame, overall: float, title: str = ""):
    """Horizontal bars of each label's lwlrap (worst at the top), with its AP as a marker."""
    return _bars_figure(table, "lwlrap", "lwlrap", overall, [("ap", "o", 14, "tab:orange", "AP")], "label", title)


def confusion_counts(probs, targets, labels) -> np.ndarray:
    """(C, C) counts of rows by true class (rows) and top-1 predicted class (columns)."""
    from sklearn.metrics import confusion_matrix

    probs, targets = check_inputs(probs, targets, labels)
    return confusion_matrix(targets, probs.argmax(axis=1), labels=np.arange(len(labels)))


def normalise_rows(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of a true class's rows predicted as each class); empty rows stay 0."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def top_confusions(counts: np.ndarray, labels, n: int = TOP_CONFUSIONS) -> pd.DataFrame:
    """The ``n`` most frequent off-diagonal (true, predicted) pairs with their count and share of the true
    class's rows; most frequent first, ties by share, then by class order."""
    counts = np.asarray(counts)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    share = normalise_rows(counts)[t, p]
    order = np.lexsort((p, t, -share, -off[t, p]))[:n]
    return pd.DataFrame({
        "true": [labels[i] for i in t[order]], "predicted": [labels[j] for j in p[order]],
        "count": off[t, p][order].astype(np.int64), "share_of_true": share[order],
    })[CONFUSION_COLUMNS]


def confusion_figsize(n_classes: int) -> tuple[float, float]:
    """Inches of the confusion-matrix figure: about 0.25 in (25 px at DPI) a class, at least 5 in."""
    side = max(5.0, 0.25 * n_classes + 2.5)
    return side + 1.0, side  # the extra width holds the colour bar


def chart_figsize(n_classes: int) -> tuple[float, float]:
    """Inches of the per-class bar chart: 0.2 in a class row, at least 3 in high."""
    return 9.0, max(3.0, 0.2 * n_classes + 1.5)


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _font_size(n_classes: int) -> float:
    return 9.0 if n_classes <= 20 else 7.0


def confusion_figure(counts: np.ndarray, labels, title: str = ""):
    """The confusion matrix normalised by true class (rows sum to 1), every class labelled on both axes."""
    n_classes = len(labels)
    norm = normalise_rows(counts)
    fig = _new_figure(confusion_figsize(n_classes))
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fs = _font_size(n_classes)
    ticks = np.arange(n_classes)
    ax.set_xticks(ticks, labels=list(labels), rotation=90, fontsize=fs)
    ax.set_yticks(ticks, labels=list(labels), fontsize=fs)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true")
    n = int(np.asarray(counts).sum())
    ax.set_title(f"{title + ': ' if title else ''}confusion, normalised by true class ({n} rows)", fontsize=fs + 2)
    if n_classes <= 12:  # the shares as text where they fit
        for i, j in zip(*np.nonzero(norm)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=fs,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=fs)
    fig.tight_layout()
    return fig


def class_chart_figure(table: pd.DataFrame, map3: float, title: str = ""):
    """Horizontal bars of each class's MAP@3 (worst at the top) with its top-1 accuracy and AP as markers."""
    markers = [("acc1", "|", 80, "black", "top-1 accuracy"), ("ap", "o", 14, "tab:orange", "AP (one-vs-rest)")]
    return _bars_figure(table, "map3", "MAP@3", map3, markers, "class", title)


def _bars_figure(table: pd.DataFrame, column: str, name: str, overall: float, markers, noun: str, title: str):
    """One bar per row of ``table`` for ``column`` (worst at the top), ``markers`` ``(column, marker, size,
    colour, legend)`` beside it, the overall score as a dashed line; rows labelled with their support."""
    t = table.sort_values([column, "label"], ascending=[False, True], na_position="first").reset_index(drop=True)
    n_classes = len(t)
    fig = _new_figure(chart_figsize(n_classes))
    ax = fig.add_subplot()
    y = np.arange(n_classes)
    fs = _font_size(n_classes)
    ax.barh(y, t[column].fillna(0.0), color="#9ecae1", height=0.8, label=name)
    for col, marker, size, colour, legend in markers:
        ax.scatter(t[col], y, marker=marker, s=size, color=colour, label=legend, zorder=3)
    ax.axvline(overall, color="tab:red", linestyle="--", label=f"overall {name} {overall:.3f}")
    ax.set_yticks(y, labels=[f"{lab} ({s})" for lab, s in zip(t["label"], t["support"])], fontsize=fs)
    ax.set_ylim(-0.6, n_classes - 0.4)
    ax.set_xlim(0.0, 1.0)
    ax.tick_params(axis="x", labelsize=fs)
    ax.grid(axis="x", alpha=0.3)
    nouns = "classes" if noun == "class" else f"{noun}s"
    ax.set_xlabel(f"score ({nouns} without rows: no bar)", fontsize=fs + 1)
    ax.legend(fontsize=fs, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{title + ': ' if title else ''}per {noun} (true rows in brackets)", fontsize=fs + 2)
    fig.tight_layout()
    return fig


def save_png(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG of exactly its size in pixels (figsize x DPI), atomically."""
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return Path(path)


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    write_text_atomic(path, df.to_csv(index=False))
    return path


def metric_prefix(split: str) -> str:
    """``map3/<label>`` for OOF rows, ``<split>_map3/<label>`` for other splits (``test_map3/<label>``)."""
    return "" if split == "oof" else f"{split}_"


def write_class_report(probs, targets, labels, out_dir: str | Path, split: str = "oof",
                       title: str = "", n_confusions: int = TOP_CONFUSIONS, task=None) -> ClassReport:
    """Write ``<split>_per_class.csv``/``.png``, ``<split>_confusion.png`` and ``<split>_top_confusions.csv``
    into ``out_dir``; return the table and the per-class MAP@3 metrics (classes without rows left out).
    A multi-label ``task``: ``<split>_per_class.csv``/``.png`` and per-label lwlrap metrics (no confusions:
    a clip has several true labels). ``ClassReport.map3`` then holds the overall lwlrap."""
    out = Path(out_dir)
    if task is not None and task.multi_label:
        table = multi_label_table(probs, targets, labels)
        overall = float(table["lwlrap_contribution"].sum())
        heading = f"{title} {split}".strip()
        files = [_write_csv(table, out / f"{split}_per_class.csv"),
                 save_png(multi_label_chart_figure(table, overall, heading), out / f"{split}_per_class.png")]
        prefix = metric_prefix(split)
        metrics = {metric_name(f"{prefix}lwlrap/{lab}"): float(v)
                   for lab, v in zip(table["label"], table["lwlrap"]) if np.isfinite(v)}
        return ClassReport(split=split, table=table, map3=overall, files=files, metrics=metrics)
    table = class_table(probs, targets, labels)
    counts = confusion_counts(probs, targets, labels)
    map3 = float(table["map3_contribution"].sum())
    heading = f"{title} {split}".strip()
    files = [
        _write_csv(table, out / f"{split}_per_class.csv"),
        save_png(class_chart_figure(table, map3, heading), out / f"{split}_per_class.png"),
        save_png(confusion_figure(counts, labels, heading), out / f"{split}_confusion.png"),
        _write_csv(top_confusions(counts, labels, n_confusions), out / f"{split}_top_confusions.csv"),
    ]
    prefix = metric_prefix(split)
    metrics = {metric_name(f"{prefix}map3/{lab}"): float(v)
               for lab, v in zip(table["label"], table["map3"]) if np.isfinite(v)}
    return ClassReport(split=split, table=table, map3=map3, files=files, metrics=metrics)


def log_class_report(client, run_id: str, probs, targets, labels, out_dir: str | Path, split: str = "oof",
                     title: str = "", task=None) -> ClassReport | None:
    """Write the report (:func:`write_class_report`) and log its files to the MLflow run under ``reports/``
    and its per-class MAP@3 metrics in one ``log_batch``. With no rows it logs a warning and returns None."""
    if len(np.asarray(targets)) == 0:
        log.warning("no %s rows: the per-class report of run %s is skipped", split, run_id)
        return None
    from mlflow.entities import Metric

    report = write_class_report(probs, targets, labels, out_dir, split, title, task=task)
    for path in report.files:
        client.log_artifact(run_id, str(path), REPORTS_DIR)
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, 0) for k, v in sorted(report.metrics.items())]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])
    return report
