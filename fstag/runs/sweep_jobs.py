"""A launch's job records and how a job that died is settled (docs/failures.md).

Each job of a launch has a record, ``<runs_dir>/<exp>/.sweeps/<parent run id>/jobs/<num>-<digest>.json``
(:mod:`fstag.runs.catalog` reads them): written ``RUNNING`` when the job starts (its directory, pid, host,
launch and log file) and rewritten when it ends, ``COMPLETED``, ``FAILED`` or ``KILLED`` with its ``cause``.
A job that cannot write its own end (killed by a signal, the out-of-memory killer, a crash in native code)
is settled by whoever sees it die: its launcher (:mod:`fstag.runs.isolated_launcher`,
:mod:`fstag.runs.submitit_launchers`), the launch's end (:mod:`fstag.runs.hydra_callbacks`), or the next
launch in the same ``exp`` when the launcher itself died (:func:`repair_stale`). Settling a job:

- its MLflow run ends FAILED (a crash, a kill) or KILLED (stopped with its launch) unless it had finished,
  with the tags ``fstag.failure`` (the cause) and ``fstag.failure_log`` (its log file);
- ``failure.json`` in its job directory (``status``, ``cause``, ``log_file``, ``ended``) says so to whoever
  lists the jobs; the job's next start removes it and moves the run's failure tag to
  ``fstag.previous_failure``;
- its record is rewritten with the status and cause.

Rerunning the same command resumes such a job from its ``last.ckpt`` into the same run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path

from fstag.core.io import write_json_atomic
from fstag.runs.catalog import SWEEP_JOBS, SWEEPS_DIR
from fstag.runs.job_guard import LAUNCH_ENV, parse_launch, process_alive, process_start, signal_name
from fstag.runs.run_dir import FAILURE_JSON, MLFLOW_RUN_ID_FILE, RUN_JSON

log = logging.getLogger(__name__)

RUNNING, COMPLETED, FAILED, KILLED = "RUNNING", "COMPLETED", "FAILED", "KILLED"
FAILURE_TAG = "fstag.failure"            # a FAILED / KILLED run's cause
FAILURE_LOG_TAG = "fstag.failure_log"    # ... and its log file
PREVIOUS_FAILURE_TAG = "fstag.previous_failure"  # the cause of its last failure, once it runs again
# FAILURE_JSON (fstag.runs.run_dir): in a job directory, why its last attempt ended without finishing

# What the launching process knows about its launch beyond the records (set by fstag's launchers).
LAUNCH = {"stopped": None, "not_started": []}


def jobs_folder(sweep_dir: str | Path, parent_run_id: str) -> Path:
    return Path(sweep_dir) / SWEEPS_DIR / parent_run_id / SWEEP_JOBS


def record_path(folder: Path, num: int, job_dir: str | None, overrides: list[str] | None = None) -> Path:
    key = str(job_dir) if job_dir else " ".join(overrides or [])
    return folder / f"{int(num):05d}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.json"


def read_records(folder: Path) -> list[tuple[Path, dict]]:
    out = []
    for f in sorted(Path(folder).glob("*.json")):
        try:
            out.append((f, json.loads(f.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def find_record(folder: Path, num: int, launch: str | None) -> tuple[Path, dict] | None:
    """The record of job ``num`` of the launch ``launch`` (a resumed Optuna study's launches share a folder)."""
    for path, rec in read_records(folder):
        if int(rec.get("num", -1)) == int(num) and (launch is None or rec.get("launch") in (None, launch)):
            return path, rec
    return None


def start_record(folder: Path, num: int, job_dir: str, overrides: list[str], log_file: str | None) -> Path:
    """The job's record as it starts (``RUNNING``), written by the job's own process."""
    path = record_path(folder, num, job_dir)
    write_json_atomic(path, {
        "job_dir": str(job_dir), "num": int(num), "status": RUNNING, "started": time.time(), "overrides": overrides,
        "pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": socket.gethostname(),
        "launch": os.environ.get(LAUNCH_ENV), "log_file": log_file, "mlflow_run_id": _run_id_of(job_dir),
    })
    return path


def _run_id_of(job_dir: str | None) -> str | None:
    if not job_dir:
        return None
    try:
        return (Path(job_dir) / MLFLOW_RUN_ID_FILE).read_text().strip() or None
    except OSError:
        return None


def _complete(job_dir: str | None) -> bool:
    try:
        return bool(job_dir) and json.loads((Path(job_dir) / RUN_JSON).read_text()).get("complete", False)
    except (OSError, json.JSONDecodeError):
        return False


def _store_answers(uri: str) -> bool:
    """Whether the tracking store answers now (an http server away would hold each call for MLflow's whole
    retry budget, minutes: then the runs are left to the files, a warning says so)."""
    try:
        from fstag.runs.journal import server_answers
    except ImportError:  # noqa: BLE001
        return True
    return server_answers(str(uri))


def mark_run(uri: str | None, run_id: str | None, status: str, cause: str, log_file: str | None = None,
             keep_known: bool = False) -> str | None:
    """End an MLflow run ``status`` (FAILED / KILLED) with its cause, unless it finished. With ``keep_known``, a
    run its own job already closed with a cause keeps it (the job knew better than whoever saw it die).
    Returns the cause the run carries, or None when the store could not be reached (a warning says so; the
    job's failure.json and record still tell)."""
    if not uri or not run_id:
        return None
    if not keep_known and _through_journal(run_id, status, cause, log_file):
        return cause
    if str(run_id).startswith("local-"):  # a placeholder: the store has no such run yet (its journal creates it)
        log.warning("MLflow run of placeholder %s not created yet: not marked %s (%s)", run_id, status, cause)
        return None
    if not _store_answers(uri):
        log.warning("MLflow store %s does not answer: run %s not marked %s (%s); its failure.json and record say it",
                    uri, run_id, status, cause)
        return None
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(str(uri))
        run = client.get_run(run_id)
        if run.info.status == "FINISHED":
            return cause
        known = run.data.tags.get(FAILURE_TAG)
        if keep_known and known and run.info.status in (FAILED, KILLED):
            return known
        client.set_tag(run_id, FAILURE_TAG, cause[:5000])
        if log_file:
            client.set_tag(run_id, FAILURE_LOG_TAG, str(log_file))
        if run.info.status != status:
            client.set_terminated(run_id, status)
        return cause
    except Exception as exc:  # noqa: BLE001  (the tracking store may be away: the files still say it)
        log.warning("could not mark MLflow run %s %s (%s): %s: %s", run_id, status, cause, type(exc).__name__, exc)
        return None


def _through_journal(run_id: str, status: str, cause: str, log_file: str | None, wait_s: float = 15.0) -> bool:
    """In a job's own process, its run's calls go through its open journal (:mod:`fstag.runs.journal`), after
    whatever it journaled before (Lightning's FAILED at an exception): the tags and status are journaled
    there, in order, and the journal given ``wait_s`` to send them. False when this process holds no
    journal of the run."""
    try:
        from fstag.runs.journal import find_open

        journal = find_open(run_id)
        if journal is None:
            return False
        client = journal.client()
        current = journal.current_id
        client.set_tag(current, FAILURE_TAG, cause[:5000])
        if log_file:
            client.set_tag(current, FAILURE_LOG_TAG, str(log_file))
        client.set_terminated(current, status)
        journal.flush(wait_s)
        return True
    except Exception as exc:  # noqa: BLE001  (fall back to the store itself)
        log.debug("journal of run %s: %s", run_id, exc)
        return False


def settle(path: Path | None, record: dict, status: str, cause: str, uri: str | None,
           log_file: str | None = None, died: bool = True) -> dict:
    """Close a job that ended without finishing: its MLflow run, ``failure.json`` in its directory and its
    record (see the module docstring). A job that ``died`` (seen from outside) whose run.json is complete
    had finished after all (killed while leaving) and is recorded COMPLETED; a complete job that failed
    in its own process (a changed config in a used directory) keeps its finished run. Returns the record
    as written."""
    job_dir = record.get("job_dir") or None
    log_file = log_file or record.get("log_file")
    run_id = _run_id_of(job_dir) or record.get("mlflow_run_id")
    record = {**record, "status": status, "cause": cause, "ended": time.time(), "log_file": log_file,
              "mlflow_run_id": run_id}
    if not _complete(job_dir):
        # the run first (on a full disk the files below may not be written); a dead job's own cause wins
        cause = mark_run(uri, run_id, status, cause, log_file, keep_known=died) or cause
        if died and cause != record["cause"]:
            record.update(cause=cause)
        if job_dir and Path(job_dir).is_dir():
            _write(Path(job_dir) / FAILURE_JSON, {"status": status, "cause": cause, "log_file": log_file,
                                                  "ended": record["ended"], "mlflow_run_id": run_id})
    elif died:  # it finished after all (killed while leaving): nothing failed
        record.update(status=COMPLETED, cause=None)
    if path is not None:
        _write(path, record)
    return record


def _write(path: Path, obj: dict) -> None:
    try:
        write_json_atomic(path, obj)
    except OSError as exc:  # a full disk (what may have killed the job): the MLflow run still says it
        log.warning("could not write %s: %s", path, exc)


# What a write to a full disk raises besides OSError(ENOSPC): torch.save's zip writer
DISK_FULL_MARKERS = ("No space left", "unexpected pos", "PytorchStreamWriter failed", "iostream error",
                     "database or disk is full")


def disk_note(exc: BaseException, where: str | Path | None) -> str:
    """``"; <free> free on the disk of <where>: is it full?"`` when ``exc`` (or what it was raised from) looks
    like a write to a full disk, else ''."""
    import errno
    import shutil

    chain, seen = [], exc
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    full = any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain) or \
        any(m in str(e) for e in chain for m in DISK_FULL_MARKERS)
    if not full or not where:
        return ""
    try:
        folder = Path(where)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
    except OSError:
        return "; the disk looks full"
    return f"; {free / 2**20:.1f} MiB free on the disk of {where}: is it full?"


def clear_failure(job_dir: str | Path, uri: str | None) -> None:
    """A job that failed before starts again: drop its failure.json, keep the cause as the run's
    ``fstag.previous_failure`` tag and remove ``fstag.failure`` (its run is RUNNING again)."""
    f = Path(job_dir) / FAILURE_JSON
    if not f.is_file():
        return
    try:
        old = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    run_id = _run_id_of(str(job_dir))
    if uri and run_id and not str(run_id).startswith("local-") and _store_answers(uri):
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(str(uri))
            tags = client.get_run(run_id).data.tags
            if FAILURE_TAG in tags:
                client.set_tag(run_id, PREVIOUS_FAILURE_TAG, tags[FAILURE_TAG])
                client.delete_tag(run_id, FAILURE_TAG)
            if FAILURE_LOG_TAG in tags:
                client.delete_tag(run_id, FAILURE_LOG_TAG)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not clear the failure tags of MLflow run %s: %s", run_id, exc)
    f.unlink(missing_ok=True)
    if old.get("cause"):
        log.info("%s: its last attempt %s (%s); resuming", job_dir, "was stopped" if old.get("status") == KILLED
                 else "failed", old["cause"])


def job_label(record: dict, sweep_dir: str | Path | None = None) -> str:
    """A job's name in a table: its directory below the sweep folder, else its overrides."""
    job_dir = record.get("job_dir")
    if job_dir:
        try:
            return str(Path(job_dir).relative_to(Path(sweep_dir))) if sweep_dir else str(job_dir)
        except ValueError:
            return str(job_dir)
    return " ".join(record.get("overrides") or []) or f"job #{record.get('num', '?')}"


def failure_table(failed: list[dict], sweep_dir: str | Path | None, n_jobs: int, title: str,
                  not_started: list[list[str]] | None = None) -> str:
    """The table a launch prints at its end when jobs failed: job, cause, log file."""
    rows = [(job_label(r, sweep_dir), str(r.get("cause") or r.get("status", "")), str(r.get("log_file") or ""))
            for r in failed]
    rows += [(" ".join(o), "not started: the launch was stopped", "") for o in not_started or []]
    head = ("job", "cause", "log")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(2)]
    lines = [f"{title}: {len(failed)} of {n_jobs} job(s) did not finish" +
             (f", {len(not_started)} not started" if not_started else ""),
             f"  {head[0]:<{widths[0]}}  {head[1]:<{widths[1]}}  {head[2]}"]
    lines += [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows]
    lines.append("The same command (once their cause is dealt with) resumes them from their last checkpoints and "
                 "skips the finished jobs.")
    return "\n".join(lines)


def repair_stale(sweeps_dir: Path, uri: str | None) -> int:
    """Settle the launches of ``sweeps_dir`` (``<runs_dir>/<exp>/.sweeps``) whose launching process is gone
    without closing them (killed with SIGKILL, a lost machine): their jobs still RUNNING whose process is gone
    too end KILLED, and their parent runs too. Only launches on this host can be checked. A launch that ended
    while its tracking store did not answer (its record's ``parent_end``) has its parent run ended now, when the
    same store answers. Returns the number of jobs settled."""
    settled = 0
    for f in sorted(Path(sweeps_dir).glob("*.json")):
        if f.name.startswith("optuna-"):
            continue
        try:
            rec = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        launch = rec.get("launch")
        parsed = parse_launch(launch)
        if rec.get("ended"):
            _send_parent_end(f, rec, uri)
            continue
        if parsed is None or process_alive(*parsed) is not False:
            continue
        cause = f"stopped: its launch (pid {parsed[1]}) ended without closing it"
        parent = rec.get("mlflow_parent_run_id")
        for path, job in read_records(jobs_folder(sweeps_dir.parent, parent)) if parent else []:
            if job.get("status") != RUNNING or job.get("launch") != launch:
                continue
            if job.get("pid") and process_alive(str(job.get("host")), int(job["pid"]),
                                                str(job.get("pid_start") or "")) is not False:
                continue  # still running (it stops itself: its watchdog sees the launcher gone), or on another host
            settle(path, job, KILLED, cause, uri)
            settled += 1
            log.warning("job %s of an earlier launch %s: marked KILLED", job.get("job_dir"), cause)
        rec = {**rec, "ended": time.time(), "status": KILLED, "cause": cause}
        ended = end_parent(uri, parent, KILLED, cause, only_running=True) if parent else True
        if not ended and not str(parent).startswith("local-"):
            rec[PARENT_END] = {"status": KILLED, "cause": cause}  # the store did not answer: a later launch sends it
        write_json_atomic(f, rec)
    return settled


PARENT_END = "parent_end"  # in a launch record: the parent run's end the store did not answer for (sent later)


def _send_parent_end(launch_file: Path, rec: dict, uri: str | None) -> None:
    """A launch that ended while its store did not answer left its parent run RUNNING: end it now, in the same
    store only (the launch record's ``tracking_uri``), when it answers."""
    pending = rec.get(PARENT_END)
    parent = rec.get("mlflow_parent_run_id")
    if not pending or not parent or not uri or rec.get("tracking_uri") != str(uri) or not _store_answers(uri):
        return
    if end_parent(uri, parent, str(pending.get("status") or FAILED), pending.get("cause"), only_running=True):
        log.info("the sweep's parent run %s (launch %s) ended %s now that %s answers", parent, launch_file.name,
                 pending.get("status"), uri)
        rec = {k: v for k, v in rec.items() if k != PARENT_END}
        _write(launch_file, rec)


def end_parent(uri: str | None, run_id: str | None, status: str, cause: str | None = None,
               only_running: bool = False) -> bool:
    """End a sweep's parent run ``status`` with its cause. Returns whether the store has it ended (False: the
    store did not answer or refused, a warning says so; a placeholder id, a launch that has no parent run in
    MLflow: nothing to end)."""
    if not uri or not run_id or str(run_id).startswith("local-"):
        return False
    if not _store_answers(uri):
        log.warning("MLflow store %s does not answer: the sweep's parent run %s not marked %s", uri, run_id, status)
        return False
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(str(uri))
        run = client.get_run(run_id)
        if only_running and run.info.status != "RUNNING":
            return True
        if cause:
            client.set_tag(run_id, FAILURE_TAG, cause[:5000])
        elif FAILURE_TAG in run.data.tags:  # a resumed Optuna study's parent that failed before
            client.delete_tag(run_id, FAILURE_TAG)
        client.set_terminated(run_id, status)
        return True
    except Exception as exc:  # noqa: BLE001
        log.warning("could not end the sweep's parent run %s %s: %s: %s", run_id, status, type(exc).__name__, exc)
        return False


def stop_cause(signum: int) -> str:
    return f"stopped: the launch received {signal_name(signum)}"

