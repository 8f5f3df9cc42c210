"""``python -m fstag.runs``: an experiment's training jobs, one row each, filtered by member selectors.

    python -m fstag.runs                                   # every job of exp (default: the data set's name)
    python -m fstag.runs 'sweep:lr' --sort val_map3        # one launch's jobs, best first
    python -m fstag.runs --sort score                      # by the task's held-out score (val_map3 / val_lwlrap)

Every score shown is held-out: a retrain_val job trained on its validation fold, so its ``val_*`` cells show
its train parent's scores and its ``oof_*`` cells score the OOF predictions it carries, its parent's, both
marked ``^`` (and it is sorted by them); its own in-sample scores are ``fit_*`` (``--as json`` has them). The columns follow the jobs' tasks: val_acc1, val_map3, oof_map3 (single-label),
val_lwlrap, val_map, oof_lwlrap (multi-label).
    python -m fstag.runs 'cnn_small/*/*/fold_*' --as members   # the YAML list blend.members takes
    python -m fstag.runs --sweeps                          # the experiment's sweeps (launches)
    python -m fstag.runs --source mlflow mlflow.tracking_uri=http://127.0.0.1:5000

The config is composed by Hydra from conf/runs.yaml like the entry points' (``exp=``, ``data=``,
``mlflow.tracking_uri=`` and any of its keys); arguments with ``=`` are overrides, others selectors
(``--select`` takes a selector that has ``=``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fstag.core.task import SINGLE_LABEL, get_task
from fstag.runs.catalog import Catalog, JobRecord, load_catalog, task_metrics
from fstag.runs.selectors import SelectorError, select

FORMATS = ("table", "members", "csv", "json")
COLUMNS = ("job", "variant", "fold", "stage", "complete", "val_acc1", "val_map3", "oof_map3", "epochs", "mlflow_run_id")
FROM_PARENT = "^"  # a cell holding a retrain_val job's parent's held-out score
SORT_BY_TASK = "score"  # --sort score: the task's own held-out validation score


def columns_for(recs: list[JobRecord]) -> tuple[str, ...]:
    """The listing's columns: the scores of the jobs' tasks (single-label's when there are no jobs)."""
    tasks = list(dict.fromkeys(r.task for r in recs)) or [SINGLE_LABEL]
    scores = list(dict.fromkeys(m for t in tasks for m in task_metrics(t)))
    return ("job", "variant", "fold", "stage", "complete", *scores, "epochs", "mlflow_run_id")


def sort_metric(sort: str, recs: list[JobRecord]) -> str:
    """``--sort score`` as the jobs' task's validation metric (the first job's task when they differ)."""
    if sort != SORT_BY_TASK:
        return sort
    return get_task(recs[0].task if recs else SINGLE_LABEL).val_metric


def compose(overrides: list[str]) -> DictConfig:
    """conf/runs.yaml with these overrides, as Hydra composes the entry points' configs."""
    import fstag.runs.resolvers  # noqa: F401  (the ${fstag.*} resolvers of conf/)
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from fstag.core.config import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="runs", overrides=overrides)


def catalog_of(cfg: DictConfig) -> Catalog:
    return load_catalog(Path(str(cfg.paths.runs_dir)) / str(cfg.exp), str(cfg.mlflow.tracking_uri),
                        str(cfg.mlflow.experiment), str(cfg.source))


def rows(cfg: DictConfig, catalog: Catalog) -> list[JobRecord]:
    """The jobs the config's selectors pick (all jobs, complete or not, without selectors), sorted."""
    picked: list[JobRecord] = []
    selectors = cfg.select
    selectors = [selectors] if isinstance(selectors, str) else list(selectors or [])
    if selectors:
        seen = set()
        for s in selectors:
            for rec in select(str(s), catalog):
                if rec.name not in seen:
                    seen.add(rec.name)
                    picked.append(rec)
    else:
        picked = list(catalog.jobs)
    if cfg.sort:
        metric = sort_metric(str(cfg.sort), picked)
        by_name = {r.name: r for r in catalog.jobs}

        def key(r: JobRecord):  # ties (a retrain_val job and its parent's score): the job's own score first
            v, parent = r.heldout(metric, by_name)
            return (not math.isfinite(v), -v if math.isfinite(v) else 0.0, parent, r.name)

        return sorted(picked, key=key)
    return sorted(picked, key=lambda r: r.name)


def _cells(r: JobRecord, columns: tuple[str, ...], by_name: dict[str, JobRecord]) -> dict[str, str]:
    def f(name: str) -> str:
        v, parent = r.heldout(name, by_name)
        return (f"{v:.4f}" + (FROM_PARENT if parent else "")) if math.isfinite(v) else "-"

    cells = {"job": r.key, "variant": r.variant, "fold": str(r.fold), "stage": r.stage,
             "complete": "yes" if r.complete else f"no ({r.status})" if r.status else "no",
             "epochs": "-" if r.epochs is None else str(r.epochs), "mlflow_run_id": r.run_id or "-"}
    cells.update({c: f(c) for c in columns if c not in cells and c != "job"})
    return {c: cells[c] for c in columns}


def member_spec(r: JobRecord) -> str:
    """How blend.members names a job: its short name when its directory is here, else ``runs:/<id>``."""
    return r.key if r.path is not None else f"runs:/{r.run_id}"


def render(recs: list[JobRecord], fmt: str, catalog: Catalog) -> str:
    if fmt == "members":
        return OmegaConf.to_yaml(OmegaConf.create([member_spec(r) for r in recs])) if recs else "[]\n"
    columns = columns_for(recs)
    by_name = {r.name: r for r in catalog.jobs}
    cells = [_cells(r, columns, by_name) for r in recs]
    if fmt == "json":
        return json.dumps([{**c, "name": r.name, "task": r.task, "cause": r.cause, "path": str(r.path) if r.path else None,
                            "sweeps": r.sweeps, "scores": r.metrics, "parent_scores": r.parent_metrics}
                           for c, r in zip(cells, recs)], indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        w.writeheader()
        w.writerows(cells)
        return buf.getvalue()
    if not recs:
        return f"no jobs in {catalog.where}\n"
    widths = {c: max(len(c), *(len(x[c]) for x in cells)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(x[c].ljust(widths[c]) for c in columns) for x in cells]
    lines.append(f"{len(recs)} job(s) from {catalog.where}")
    if any(FROM_PARENT in v for x in cells for v in x.values()):
        lines.append(f"({FROM_PARENT} retrain_val: its train parent's held-out scores; it trained on its own validation "
                     "fold, and its in-sample fit_* scores are in --as json)")
    return "\n".join(lines) + "\n"


def render_sweeps(catalog: Catalog) -> str:
    if not catalog.sweeps:
        return f"no sweeps in {catalog.where}\n"
    lines = ["sweep  parent_run_id  jobs  overrides"]
    for s in catalog.sweeps:
        jobs = len(s.get("jobs") or s.get("job_run_ids") or [])
        lines.append(f"{s.get('name') or '?'}  {s['mlflow_parent_run_id']}  {jobs}  {' '.join(s.get('overrides') or [])}")
    return "\n".join(lines) + f"\n(select one with sweep:<name>)\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fstag.runs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("args", nargs="*", help="selectors, and Hydra overrides (key=value)")
    ap.add_argument("--select", action="append", default=[], metavar="SELECTOR", help="a selector (may contain '=')")
    ap.add_argument("--sort", metavar="METRIC", help="score (the task's held-out validation score) | val_map3 | val_acc1 | "
                    "oof_map3 | val_lwlrap | val_map | oof_lwlrap | epochs, best first")
    ap.add_argument("--as", dest="fmt", choices=FORMATS, help="output format (default: table)")
    ap.add_argument("--source", choices=("auto", "local", "mlflow"), help="where the jobs are read from")
    ap.add_argument("--sweeps", action="store_true", help="list the experiment's sweeps instead")
    a = ap.parse_args(argv)
    overrides = [x for x in a.args if "=" in x]
    selectors = [x for x in a.args if "=" not in x] + a.select
    if selectors:
        overrides.append("select=[" + ",".join(json.dumps(s) for s in selectors) + "]")
    for key, value in (("sort", a.sort), ("as", a.fmt), ("source", a.source)):
        if value:
            overrides.append(f"{key}={value}")
    cfg = compose(overrides)
    if str(cfg["as"]) not in FORMATS:
        print(f"as={cfg['as']}: expected one of {FORMATS}", file=sys.stderr)
        return 2
    catalog = catalog_of(cfg)
    if a.sweeps:
        sys.stdout.write(render_sweeps(catalog))
        return 0
    try:
        recs = rows(cfg, catalog)
    except SelectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(recs, str(cfg["as"]), catalog))
    return 0
