"""The jobs of one experiment, as rows: read from the job directories below ``<runs_dir>/<exp>`` or, with
no local copy, from the MLflow tracking store alone; and the sweeps (launches) that made them.

A :class:`JobRecord` is what ``python -m fstag.runs`` lists and what the member selectors of blend.py and
predict.py (:mod:`fstag.runs.selectors`) choose from. A sweep is one launch of ``train.py -m``: its MLflow
parent run (``sweep/<exp>/<sweep_name>``) and, on disk, ``<runs_dir>/<exp>/.sweeps/<parent run id>/jobs/``,
one record per job the launch ran (a job that was already complete counts too: the launch finished it).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fstag.core.task import SINGLE_LABEL, get_task
from fstag.runs.identity import DEFAULT_VARIANT, IDENTITY_JSON, VARIANT_JSON
from fstag.runs.run_dir import FAILURE_JSON, MLFLOW_RUN_DIR_TAG, RUN_JSON, STAGE_SUFFIX, job_name

log = logging.getLogger(__name__)

SWEEPS_DIR = ".sweeps"  # below <runs_dir>/<exp>: one launch record per sweep, and its jobs' records
SWEEP_JOBS = "jobs"      # <runs_dir>/<exp>/.sweeps/<parent run id>/jobs/<job>.json
METRICS = ("val_acc1", "val_map3", "oof_map3")  # a single-label job's listed scores (see task_metrics)
_JOB = re.compile(r"fold_(\d+)(_r|_st)?")  # train, retrain_val, self_train


def task_metrics(task_name: str) -> tuple[str, ...]:
    """The scores the listing shows for a task: its validation metrics (single-label: val_acc1, val_map3, in
    the order the listing always had) and its primary OOF score."""
    task = get_task(task_name)
    vals = ("val_acc1", "val_map3") if task.name == SINGLE_LABEL else task.val_metrics
    return (*vals, f"oof_{task.primary}")


@dataclass
class JobRecord:
    """One training job: where it is (a local directory and/or an MLflow run) and how it scored."""

    arch: str
    aug: str
    variant: str
    job: str                      # fold_<k>, fold_<k>_r (retrain_val) or fold_<k>_st (self_train)
    path: Path | None = None      # the local job directory (None: known from the tracking store only)
    run_id: str | None = None     # its MLflow run
    complete: bool = False
    status: str = ""              # the MLflow run's status, or complete / running / incomplete locally
    # the best epoch's val_* (a retrain_val job's: fit_*, in-sample) and the oof_* scores
    metrics: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    overrides: list[str] = field(default_factory=list)         # the variant's items
    sweeps: list[str] = field(default_factory=list)            # parent run ids of the launches that ran it
    task: str = SINGLE_LABEL
    parent_metrics: dict[str, float] = field(default_factory=dict)  # retrain_val: its train parent's val_* scores
    cause: str = ""               # why its last attempt ended unfinished (failure.json), when it did

    @property
    def name(self) -> str:
        """``<arch>/<aug>/<variant>/fold_<k>[_r]``: the job's path below its experiment folder."""
        return f"{self.arch}/{self.aug}/{self.variant}/{self.job}"

    @property
    def key(self) -> str:
        """The short name: ``<arch>/<aug>/fold_<k>[_r]`` for the default variant, else :attr:`name`."""
        return f"{self.arch}/{self.aug}/{self.job}" if self.variant == DEFAULT_VARIANT else self.name

    @property
    def fold(self) -> int:
        return int(_JOB.fullmatch(self.job).group(1))

    @property
    def stage(self) -> str:
        suffix = _JOB.fullmatch(self.job).group(2) or ""
        return next(stage for stage, s in STAGE_SUFFIX.items() if s == suffix)

    @property
    def family(self) -> tuple[str, str, str]:
        return (self.arch, self.aug, self.variant)

    @property
    def parent_name(self) -> str:
        """The train job a retrain_val job starts from (itself for a train job)."""
        return f"{self.arch}/{self.aug}/{self.variant}/fold_{self.fold}"

    @property
    def spec(self) -> str:
        """How a member list names it: the local directory when it is here, else ``runs:/<run id>``."""
        if self.path is not None and (self.path / RUN_JSON).is_file():
            return str(self.path.resolve())
        if self.run_id:
            return f"runs:/{self.run_id}"
        return str(self.path)

    def metric(self, name: str) -> float:
        """The job's own score ``name`` (``val_map3``, ``fit_map3``, ``oof_lwlrap``, ``epochs``; NaN if absent)."""
        if name in ("epochs", "epochs_trained"):
            return float("nan") if self.epochs is None else float(self.epochs)
        return float(self.metrics.get(name.removeprefix("best_"), float("nan")))

    def heldout(self, name: str, by_name: dict[str, "JobRecord"] | None = None) -> tuple[float, bool]:
        """``(score, from_parent)``: a held-out score to rank the job by. A retrain_val job trained on its
        validation fold, so its ``val_*`` scores are its train parent's (recorded in its run.json, else read
        from the parent's record in ``by_name``), and its ``oof_*`` ones score the OOF predictions it carries,
        its parent's; ``from_parent`` says so. Other metrics are the job's own."""
        name = name.removeprefix("best_")
        if self.stage != "retrain_val" or not name.startswith(("val_", "oof_")):
            return self.metric(name), False
        if name.startswith("oof_"):
            return self.metric(name), True
        if name in self.parent_metrics:
            return float(self.parent_metrics[name]), True
        parent = (by_name or {}).get(self.parent_name)
        return (parent.metric(name) if parent is not None else float("nan")), True


def _nan(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _own_metrics(info: dict, retrain: bool) -> dict[str, float]:
    """A run.json's scores: the best epoch's (``val_*``; a retrain_val job's ``fit_*``: it "validated" on rows
    its parent trained on, and runs recorded before that name were saved as ``val_*``) and the ``oof_*`` ones."""
    best = {str(k): _nan(v) for k, v in (info.get("best_metrics") or {}).items()}
    if "best_val_acc1" in info and not retrain:
        best.setdefault("val_acc1", _nan(info["best_val_acc1"]))
    if retrain:
        best = {("fit_" + k[4:] if k.startswith("val_") else k): v for k, v in best.items()}
    oof = {str(k): _nan(v) for k, v in info.items() if str(k).startswith("oof_") and str(k) != "oof_source"}
    return {**best, **oof}


# local ------------------------------------------------------------------------------------------------
def read_job(job_dir: Path) -> JobRecord | None:
    """The record of a job directory ``.../<arch>/<aug>/<variant>/fold_<k>[_r]`` (None when it is not one)."""
    job_dir = Path(job_dir)
    if len(job_dir.parts) < 4 or not job_dir.is_dir():
        return None
    arch, aug, variant, job = job_dir.parts[-4:]
    if not _JOB.fullmatch(job):
        return None
    rec = JobRecord(arch=arch, aug=aug, variant=variant, job=job, path=job_dir)
    run_json = job_dir / RUN_JSON
    if run_json.is_file():
        try:
            info = json.loads(run_json.read_text())
        except json.JSONDecodeError:
            log.warning("%s: malformed JSON, listed as incomplete", run_json)
            info = {}
        rec.complete = bool(info.get("complete", False))
        rec.status = "complete" if rec.complete else "incomplete"
        rec.run_id = info.get("mlflow_run_id")
        rec.task = str(info.get("task") or SINGLE_LABEL)
        rec.metrics = _own_metrics(info, job.endswith("_r"))
        rec.parent_metrics = {str(k): _nan(v) for k, v in (info.get("parent_metrics") or {}).items()}
        rec.epochs = info.get("epochs_trained")
        rec.overrides = [str(o) for o in info.get("overrides") or []]
    else:
        rec.status = "running" if (job_dir / "checkpoints").is_dir() else "started"
        failure = job_dir / FAILURE_JSON  # its last attempt was killed or crashed (fstag.runs.sweep_jobs)
        if failure.is_file():
            try:
                why = json.loads(failure.read_text())
                rec.status = str(why.get("status") or "failed").lower()
                rec.cause = str(why.get("cause") or "")
            except json.JSONDecodeError:
                rec.status = "failed"
        ident = job_dir / IDENTITY_JSON
        if ident.is_file():
            rec.overrides = [str(o) for o in json.loads(ident.read_text()).get("overrides") or []]
        id_file = job_dir / "mlflow_run_id"
        if id_file.is_file():
            rec.run_id = id_file.read_text().strip() or None
    return rec


def local_sweeps(exp_dir: Path) -> list[dict]:
    """The launch records of ``exp_dir`` (oldest first): ``{mlflow_parent_run_id, name, overrides, ...,
    jobs: [job directory, ...]}``."""
    out, seen = [], set()
    folder = Path(exp_dir) / SWEEPS_DIR
    for f in sorted(folder.glob("*.json")):
        if f.name.startswith("optuna-"):  # a resumable study's record, not a launch
            continue
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        run_id = rec.get("mlflow_parent_run_id")
        if not run_id or run_id in seen:  # a resumed Optuna study keeps its parent over launches
            continue
        seen.add(run_id)
        jobs = []
        for j in sorted((folder / run_id / SWEEP_JOBS).glob("*.json")):
            try:
                jobs.append(json.loads(j.read_text()))
            except json.JSONDecodeError:
                continue
        rec["jobs"] = jobs
        rec.setdefault("name", "")
        out.append(rec)
    return out


def local_jobs(exp_dir: str | Path) -> list[JobRecord]:
    """Every job directory below ``exp_dir`` (``<arch>/<aug>/<variant>/fold_<k>[_r]``), sorted by name."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return []
    found = []
    for d in exp_dir.glob("*/*/*/fold_*"):
        if d.is_dir() and not any(p.startswith(".") for p in d.relative_to(exp_dir).parts):
            if (d / RUN_JSON).is_file() or (d / IDENTITY_JSON).is_file():
                rec = read_job(d)
                if rec is not None:
                    found.append(rec)
    by_path = {r.path.resolve(): r for r in found}
    for sweep in local_sweeps(exp_dir):
        for j in sweep["jobs"]:
            rec = by_path.get(Path(str(j.get("job_dir", ""))).resolve())
            if rec is not None and sweep["mlflow_parent_run_id"] not in rec.sweeps:
                rec.sweeps.append(sweep["mlflow_parent_run_id"])
            if rec is not None and rec.status in ("running", "started") and _process_gone(j):
                rec.status, rec.cause = "killed", f"its process (pid {j.get('pid')}) is gone; rerun the command to resume it"
    return sorted(found, key=lambda r: r.name)


def _process_gone(record: dict) -> bool:
    """Whether a job record says RUNNING for a process of this host that no longer runs (a job or launcher
    killed before it could record its end)."""
    if str(record.get("status", "")).upper() != "RUNNING" or not record.get("pid"):
        return False
    from fstag.runs.job_guard import process_alive

    try:
        return process_alive(str(record.get("host", "")), int(record["pid"]), str(record.get("pid_start") or "")) is False
    except (TypeError, ValueError):
        return False


# MLflow -----------------------------------------------------------------------------------------------
def _experiment_id(client, experiment: str) -> str | None:
    exp = client.get_experiment_by_name(experiment)
    return None if exp is None else exp.experiment_id


def _search_all(client, exp_id: str, filter_string: str = "") -> list:
    out, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string=filter_string, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def mlflow_sweeps(tracking_uri: str, experiment: str, exp: str | None = None) -> list[dict]:
    """The sweep parent runs of an MLflow experiment (of the ``exp`` folder's jobs only, when given) in the
    tracking store, oldest first, with their jobs' run ids."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return []
    parents = _search_all(client, exp_id, "tags.`fstag.sweeper` != ''")
    runs = _search_all(client, exp_id)
    out = []
    for p in sorted(parents, key=lambda r: r.info.start_time or 0):
        if exp is not None and p.data.tags.get("fstag.exp") != exp:
            continue
        pid = p.info.run_id
        jobs = {r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == pid}
        listed = p.data.tags.get("fstag.sweep.run_ids", "")
        jobs |= {x for x in listed.split(",") if x}
        out.append({"mlflow_parent_run_id": pid, "name": p.data.tags.get("fstag.sweep_name", ""),
                    "run_name": p.info.run_name, "job_run_ids": sorted(jobs)})
    return out


def mlflow_jobs(tracking_uri: str, experiment: str, exp: str | None = None) -> list[JobRecord]:
    """The train.py runs of MLflow ``experiment`` in the tracking store (tag ``fstag.run_dir``), sorted by
    name; only those of the ``exp`` folder when given (one MLflow experiment holds every exp of a data set)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return []
    out: dict[str, JobRecord] = {}
    for r in sorted(_search_all(client, exp_id), key=lambda r: r.info.start_time or 0):
        tags, m = r.data.tags, r.data.metrics
        if MLFLOW_RUN_DIR_TAG not in tags or "fstag.arch" not in tags:
            continue
        if exp is not None and tags.get("fstag.exp") != exp:
            continue
        stage = tags.get("fstag.stage", "train")
        job = job_name(int(tags.get("fstag.fold", 0)), stage)
        epochs = m.get("epochs_trained")
        best = {k[len("best_"):]: v for k, v in m.items() if k.startswith("best_")}
        if stage == "retrain_val":  # runs logged before retrain_val's in-sample scores were named fit_*
            best = {("fit_" + k[4:] if k.startswith("val_") else k): v for k, v in best.items()}
        oof = {k: v for k, v in m.items() if k.startswith("oof_") and "/" not in k}
        rec = JobRecord(
            arch=tags["fstag.arch"], aug=tags.get("fstag.aug", "none"), variant=tags.get("fstag.variant", DEFAULT_VARIANT),
            job=job, path=None, run_id=r.info.run_id, status=r.info.status,
            complete=r.info.status == "FINISHED" and bool(oof),
            metrics={**best, **oof},
            epochs=None if epochs is None else int(epochs),
            overrides=sorted(f"{k[len('fstag.override.'):]}={v}" for k, v in tags.items() if k.startswith("fstag.override.")),
            task=tags.get("fstag.task", SINGLE_LABEL),
            parent_metrics={k[len("parent_"):]: v for k, v in m.items() if k.startswith("parent_val_")},
        )
        local = Path(tags[MLFLOW_RUN_DIR_TAG])
        if (local / RUN_JSON).is_file():
            rec.path = local
        prev = out.get(rec.name)
        if prev is None or rec.complete or not prev.complete:  # the newest complete run of a job directory
            out[rec.name] = rec
    recs = sorted(out.values(), key=lambda r: r.name)
    by_id = {r.run_id: r for r in recs}
    for sweep in mlflow_sweeps(tracking_uri, experiment, exp):
        for rid in sweep["job_run_ids"]:
            if rid in by_id:
                by_id[rid].sweeps.append(sweep["mlflow_parent_run_id"])
    return recs


@dataclass
class Catalog:
    """An experiment's jobs and sweeps from one source (``local`` or ``mlflow``)."""

    source: str
    jobs: list[JobRecord]
    sweeps: list[dict]
    where: str

    def sweep_ids(self, name_or_id: str) -> list[str]:
        """The parent run ids of the launches called ``name_or_id``: a run id (or its first 8+ characters),
        a sweep name (``sweep_name``, the part after ``sweep/<exp>/``) or a whole run name."""
        key = str(name_or_id).strip()
        out = []
        for s in self.sweeps:
            pid, name = s["mlflow_parent_run_id"], str(s.get("name") or "")
            run_name = str(s.get("run_name") or "")
            if key == pid or (len(key) >= 8 and pid.startswith(key)) or key in (name, run_name) \
                    or (run_name and run_name.split("/")[-1] == key):
                out.append(pid)
        return out

    def describe_sweeps(self) -> str:
        if not self.sweeps:
            return "none"
        return ", ".join(f"{s.get('name') or '?'} ({s['mlflow_parent_run_id'][:8]})" for s in self.sweeps[-12:])


def load_catalog(exp_dir: str | Path, tracking_uri: str | None, experiment: str | None, source: str = "auto") -> Catalog:
    """The jobs of an experiment: ``local`` (job directories below ``exp_dir``), ``mlflow`` (the tracking
    store alone), or ``auto``: local when any job is there, else the tracking store."""
    if source not in ("auto", "local", "mlflow"):
        raise ValueError(f"source must be auto, local or mlflow, got {source!r}")
    if source in ("auto", "local"):
        jobs = local_jobs(exp_dir)
        if jobs or source == "local":
            sweeps = local_sweeps(exp_dir)
            return Catalog("local", jobs, sweeps, str(exp_dir))
    if not tracking_uri or not experiment:
        return Catalog("mlflow", [], [], str(tracking_uri))
    exp = Path(exp_dir).name  # <runs_dir>/<exp>: the exp folder's jobs, as train.py tags them
    return Catalog("mlflow", mlflow_jobs(tracking_uri, experiment, exp), mlflow_sweeps(tracking_uri, experiment, exp),
                   f"experiment {experiment!r} (exp {exp}) in {tracking_uri}")


# what exists, for errors ------------------------------------------------------------------------------
def _variant_items(variant_dir: Path) -> list[str]:
    f = variant_dir / VARIANT_JSON
    if f.is_file():
        try:
            return [str(i) for i in json.loads(f.read_text()).get("overrides") or []]
        except json.JSONDecodeError:
            return []
    name = variant_dir.name
    return [] if name == DEFAULT_VARIANT else name.split(",")


def sibling_variants(exp_dir: str | Path, arch: str, aug: str, job: str) -> list[tuple[str, list[str], bool]]:
    """The variants of ``<arch>/<aug>`` that have a job ``job``: ``(variant, its override items, complete)``."""
    out = []
    base = Path(exp_dir) / arch / aug
    for d in sorted(base.glob(f"*/{job}")):
        if (d / RUN_JSON).is_file() or (d / IDENTITY_JSON).is_file():
            rec = read_job(d)
            out.append((d.parent.name, _variant_items(d.parent), bool(rec and rec.complete)))
    return out


def describe_siblings(exp_dir: str | Path, arch: str, aug: str, job: str, wanted: list[str], command) -> str:
    """A sentence listing the existing variants of ``<arch>/<aug>/*/<job>``, how each differs from the
    ``wanted`` override items, and ``command(items)``: the command that would use it. Empty when none."""
    found = sibling_variants(exp_dir, arch, aug, job)
    if not found:
        others = sorted({p.parent.name + "/" + p.name for p in (Path(exp_dir) / arch / aug).glob("*/fold_*")
                         if (p / RUN_JSON).is_file() or (p / IDENTITY_JSON).is_file()})
        return (f" No variant of {arch}/{aug} has a {job} in {exp_dir}" + (f" (it has: {', '.join(others[:12])})" if others else "")
                + ". List the experiment's jobs: python -m fstag.runs")
    lines = []
    want = set(wanted)
    for variant, items, complete in found:
        have = set(items)
        diff = [f"+{i}" for i in sorted(have - want)] + [f"-{i}" for i in sorted(want - have)]
        lines.append(f"{arch}/{aug}/{variant}/{job} ({'complete' if complete else 'not complete'}; "
                     f"differs by {' '.join(diff) or 'nothing'}): {command(items, variant)}")
    return f" Existing variants of {arch}/{aug}/{job}:\n    " + "\n    ".join(lines)
