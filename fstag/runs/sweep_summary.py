"""A sweep's summary, written when its launch ends and logged to its MLflow parent run (``sweep_summary/``),
so the parent's page compares the sweep in one click:

- ``summary.csv`` and ``summary.html``: one row per job of the launch (job, status, each swept key's value,
  its task's held-out scores: val_acc1, val_map3, oof_map3, or val_lwlrap, val_map, oof_lwlrap; epochs, MLflow
  run id), best first by the sweep's optimised metric; a retrain_val job's scores are its train parent's (it
  trained on its validation fold), and a ``held_out`` column says so (``parent``); when a job
  did not finish, its status is ``failed`` or ``killed`` (stopped with its launch) and two more columns say
  why and where to look: ``cause`` (e.g. ``killed by SIGKILL (signal 9; ...)``) and ``log`` (its log file);
- ``summary.png``: the optimised metric against each swept key, and against the job order (with the best
  so far: an Optuna search's history).

A job's row comes from its job directory (run.json), read by :func:`fstag.runs.catalog.read_job`.
"""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path
from typing import Any

from fstag.core.io import write_text_atomic
from fstag.runs.catalog import METRICS, read_job, task_metrics



def swept_keys(task_overrides: list[str], sweeper_params: dict | None = None) -> list[str]:
    """The keys a launch sweeps: its overrides with several values (``fold=0,1``), and an Optuna
    sweeper's ``params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = [ov.key_or_group for ov in OverridesParser.create().parse_overrides([str(o) for o in task_overrides])
            if ov.is_sweep_override()]
    keys += [str(k) for k in (sweeper_params or {}) if str(k) not in keys]
    return keys


def _values(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides:
        key, sep, value = str(o).lstrip("+~").partition("=")
        if sep:
            out[key] = value
    return out


def latest_per_job(job_records: list[dict]) -> list[dict]:
    """One record per job directory, its latest attempt: a job that died and ran again in a later launch of
    the same parent (a resumed Optuna study) has a record of each attempt."""
    latest: dict[str, dict] = {}
    others = []
    for j in job_records:
        if not j.get("job_dir"):
            others.append(j)
            continue
        when = float(j.get("ended") or j.get("started") or 0)
        seen = latest.get(str(j["job_dir"]))
        if seen is None or when >= float(seen.get("ended") or seen.get("started") or 0):
            latest[str(j["job_dir"])] = j
    return [*latest.values(), *others]


def rows(job_records: list[dict], keys: list[str]) -> list[dict[str, Any]]:
    """One row per job (``{job_dir, status, num, overrides}`` as the sweep callback writes them; the latest
    attempt of a job that ran more than once)."""
    job_records = latest_per_job(job_records)
    out = []
    # in the order the jobs ended (a resumed Optuna study's launches number their jobs from 0 each)
    for i, j in enumerate(sorted(job_records, key=lambda j: (float(j.get("ended", 0)), int(j.get("num", 0))))):
        rec = read_job(Path(str(j["job_dir"])))
        values = _values(j.get("overrides") or [])
        row: dict[str, Any] = {"num": i}
        row["job"] = rec.name if rec else (Path(str(j["job_dir"])).name if j.get("job_dir")
                                           else " ".join(j.get("overrides") or []) or f"job #{j.get('num', '?')}")
        status = str(j.get("status", ""))
        row["status"] = {"FAILED": "failed", "KILLED": "killed"}.get(status) or (rec.status if rec else "missing")
        if status in ("FAILED", "KILLED"):
            row["cause"], row["log"] = str(j.get("cause") or ""), str(j.get("log_file") or "")
        row.update({k: values.get(k, "") for k in keys})
        row["_scores"] = list(task_metrics(rec.task)) if rec else list(METRICS)
        for m in row["_scores"]:
            row[m], parent = rec.heldout(m) if rec else (math.nan, False)
            if parent:
                row["held_out"] = "parent"
        row["epochs"] = "" if rec is None or rec.epochs is None else rec.epochs
        row["mlflow_run_id"] = (rec.run_id if rec else None) or j.get("mlflow_run_id") or ""
        out.append(row)
    return out


def _sorted(table: list[dict], metric: str, maximize: bool) -> list[dict]:
    def key(r):
        v = r.get(metric.removeprefix("best_"), math.nan)
        v = v if isinstance(v, float) and math.isfinite(v) else None
        return (v is None, -(v or 0.0) if maximize else (v or 0.0), r["num"])

    return sorted(table, key=key)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.4f}"
    return str(v)


FAILURE_COLUMNS = ("cause", "log")  # only in a summary with a job that did not finish


def _columns(table: list[dict], keys: list[str]) -> list[str]:
    scores = list(dict.fromkeys(m for r in table for m in r.get("_scores", METRICS))) or list(METRICS)
    extra = [c for c in ("held_out", *FAILURE_COLUMNS) if any(c in r for r in table)]
    return ["job", "status", *keys, *scores, "epochs", "mlflow_run_id", *extra]


def to_csv(table: list[dict], keys: list[str]) -> str:
    cols = _columns(table, keys)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in table:
        w.writerow([_fmt(r.get(c, "")) for c in cols])
    return buf.getvalue()


def to_html(table: list[dict], keys: list[str], title: str, metric: str) -> str:
    cols = _columns(table, keys)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for i, r in enumerate(table):
        style = ' class="best"' if i == 0 and r.get("status") == "complete" else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}"
        "th{background:#f3f3f3}tr.best{background:#e8f5e9;font-weight:bold}</style></head><body>"
        f"<h3>{html.escape(title)}</h3><p>{len(table)} job(s), best first by {html.escape(metric)}.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></body></html>\n"
    )


def _as_number(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def to_png(table: list[dict], keys: list[str], metric: str, maximize: bool, path: Path, title: str) -> None:
    """The metric against each swept key and against the job order, on matplotlib's Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = metric.removeprefix("best_")
    done = sorted((r for r in table if isinstance(r.get(m), float) and math.isfinite(r[m])), key=lambda r: r["num"])
    panels = [k for k in keys] + ["history"]
    fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=100)
    FigureCanvasAgg(fig)
    for i, key in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ys = [r[m] for r in done]
        if key == "history":
            xs = [r["num"] for r in done]
            ax.plot(xs, ys, "o", label=m)
            best, acc = [], None
            for y in ys:
                acc = y if acc is None else (max(acc, y) if maximize else min(acc, y))
                best.append(acc)
            ax.step(xs, best, where="post", label="best so far")
            ax.set_xlabel("job (launch order)")
            ax.legend(fontsize=8)
        else:
            raw = [str(r.get(key, "")) for r in done]
            nums = _as_number(raw)
            if nums is not None:
                ax.plot(nums, ys, "o")
                if nums and min(nums) > 0 and max(nums) / min(nums) >= 20:
                    ax.set_xscale("log")
            else:
                cats = sorted(set(raw))
                ax.plot([cats.index(v) for v in raw], ys, "o")
                ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=8)
            ax.set_xlabel(key)
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def write_summary(job_records: list[dict], keys: list[str], metric: str, maximize: bool, out_dir: Path,
                  title: str) -> list[Path]:
    """Write summary.csv, summary.html and summary.png of a launch's jobs into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = _sorted(rows(job_records, keys), metric, maximize)
    paths = [out_dir / "summary.csv", out_dir / "summary.html", out_dir / "summary.png"]
    write_text_atomic(paths[0], to_csv(table, keys))
    write_text_atomic(paths[1], to_html(table, keys, title, metric))
    to_png(table, keys, metric, maximize, paths[2], title)
    return paths
