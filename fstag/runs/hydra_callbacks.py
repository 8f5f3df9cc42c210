"""Hydra callbacks. ``MlflowSweepCallback`` prepares the MLflow store once before any job of a multirun
starts (parallel jobs creating a new SQLite schema at once can corrupt it) and opens the launch's parent
run that groups its jobs in the MLflow UI:

- each launch (``python train.py -m ...``) has its own parent, so sweeps in one ``exp``, one after the other
  or at the same time, keep theirs; an Optuna study with a storage keeps one parent over its resumptions;
- the parent's id reaches each job through the job's own process (``on_job_start`` sets
  ``FSTAG_MLFLOW_PARENT_RUN_ID``), whatever the launcher (basic in-process, joblib workers, submitit
  processes or SLURM jobs: the callback travels pickled with each job, its run id with it);
- with ``hydra/launcher=joblib`` on GPUs (:mod:`fstag.runs.isolated_launcher`), each job's process leases a
  slot of its own, a GPU shared by at most ``launcher.jobs_per_gpu`` jobs (:func:`fstag.runs.launchers.lease_gpu`);
- in a job that runs in a process of its own, :func:`fstag.runs.job_guard.guard_job` turns SIGTERM, SIGINT,
  SIGHUP and its launcher's death into a KILLED run, and a crash in native code writes its traceback into
  the job's log;
- against a tracking server (``http(s)://``), the experiment it creates keeps the server's artifact
  store (``mlflow server --serve-artifacts``), so the artifacts are where anyone with the server finds them;
- each launch has a name: ``sweep_name=<name>`` or its start time (``20261130-101500``); its parent run is
  ``sweep/<exp>/<name>`` (``search/<exp>/<study>`` for Optuna), which the member selector ``sweep:<name>``
  finds (:mod:`fstag.runs.selectors`);
- each job writes its record to ``<runs_dir>/<exp>/.sweeps/<parent run id>/jobs/`` when it starts (RUNNING:
  its directory, pid, host, log file) and when it ends (COMPLETED, FAILED or KILLED with its cause): what
  the launch ran, a job it found complete included (:mod:`fstag.runs.sweep_jobs`);
- a failed job's run ends FAILED, a stopped one's KILLED, with the cause as its ``fstag.failure`` tag; a
  job that died without closing its run is settled by its launcher or, at the latest, by the launch's end
  (or, when the launcher itself was killed, by the next launch in the same ``exp``:
  :func:`fstag.runs.sweep_jobs.repair_stale`);
- the launch ends in ``on_multirun_end`` or, when it ended with an error or was stopped (Hydra's sweeper
  raises a failed job's error and skips ``on_multirun_end``), in an ``atexit`` hook: either way the parent
  is FINISHED, FAILED (a job failed) or KILLED (the launch was stopped: SIGINT, SIGTERM, SIGHUP end it with
  :class:`fstag.runs.job_guard.LaunchStopped`), carries the best child's optimised metric
  (``best_<metric>``), its run name and overrides, the run ids of the launch's jobs (tag
  ``fstag.sweep.run_ids``) and the sweep's summary table and plot (:mod:`fstag.runs.sweep_summary`,
  artifacts ``sweep_summary/``), and a table of the jobs that did not finish (job, cause, log file) is
  printed to stderr;
- a tracking server (``http(s)://``) that does not answer never stops a launch: asked first (``/health``),
  at the launch's start it leaves the launch without a parent run in MLflow (a warning says so): its local
  records are named by a placeholder ``local-<32 hex>`` (``sweep:<name>`` and the runs listing find them),
  its jobs get no parent id and journal their own runs (:mod:`fstag.runs.journal`; ``python -m fstag.runs
  sync`` sends them later); at the launch's end the parent run's calls are skipped with a warning (the
  summary is still written under ``.sweeps/<id>/``, the failure table still printed) and the parent's end
  is sent by the next launch in the same ``exp`` that finds the store answering;
- with the Optuna sweeper and a storage, a study interrupted earlier resumes: ``n_trials`` counts the
  trials already finished, and a trial that was killed is run again with the same parameters (its job
  directory is the same, so it resumes from its last checkpoint).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fstag.core.io import write_json_atomic
from fstag.runs.catalog import SWEEP_JOBS, SWEEPS_DIR
from fstag.runs.journal import LOCAL_PREFIX, is_local_id, server_answers
from fstag.runs.tracking import PARENT_RUN_ENV, ensure_experiment, log_params_flat

log = logging.getLogger(__name__)
SUMMARY_ARTIFACTS = "sweep_summary"  # the parent run's artifact folder of the sweep's summary


def _is_optuna(config: DictConfig) -> bool:
    return "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).lower()


def _maximize(config: DictConfig) -> bool:
    if _is_optuna(config):
        return "max" in str(OmegaConf.select(config, "hydra.sweeper.direction", default="maximize")).lower()
    return not str(config.get("optimized_metric", "val_map3")).endswith("loss")


def _resume_study(config: DictConfig) -> str | None:
    """Prepare a stored Optuna study for the sweeper: re-enqueue killed trials, count finished ones.

    Runs before Hydra instantiates the sweeper from the same config, so ``n_trials`` is set to the trials
    still to run. Returns the study name (None without a storage).
    """
    storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
    if not storage:
        return None
    import optuna
    from optuna.trial import TrialState

    name = str(OmegaConf.select(config, "hydra.sweeper.study_name", default=None) or "optuna")
    try:
        study = optuna.load_study(study_name=name, storage=str(storage))
    except KeyError:  # a new study
        return name
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    for t in trials:
        if t.state == TrialState.RUNNING:  # killed with its sweep: run it again (its job resumes)
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            study.enqueue_trial(dict(t.params), skip_if_exists=False)
            log.info("Optuna study %s: trial %d was interrupted; running it again with %s", name, t.number, t.params)
    n_trials = int(config.hydra.sweeper.n_trials)
    left = max(0, n_trials - done)
    with read_write(config.hydra.sweeper), open_dict(config.hydra.sweeper):
        config.hydra.sweeper.n_trials = left
    log.info("Optuna study %s resumes: %d of %d trials finished, %d to go", name, done, n_trials, left)
    return name


def _leases_gpus(config: DictConfig) -> bool:
    """Whether the launcher runs each job in a process that may lease a GPU slot: fstag's joblib launcher
    (:mod:`fstag.runs.isolated_launcher`) or Hydra's joblib plugin."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="")).lower()
    return "joblib" in target or "isolated_launcher" in target


def _joblib_slots(config: DictConfig) -> tuple[list[str], int]:
    """(GPUs, jobs per GPU) to spread joblib workers over: ``launcher.gpus`` (null: the visible CUDA devices)
    and ``launcher.jobs_per_gpu`` (fstag.runs.launchers); no GPUs for the other launchers."""
    if not _leases_gpus(config):
        return [], 1
    from fstag.runs.launchers import launch_plan

    node = OmegaConf.select(config, "launcher", default=None)
    return launch_plan(OmegaConf.to_container(node, resolve=True) if node is not None else None)


def _log_file(config: DictConfig) -> str | None:
    """The job's Hydra log file (``hydra.job_logging``'s file handler), where its failure is told."""
    try:
        found = OmegaConf.select(config, "hydra.job_logging.handlers.file.filename", default=None)
        if found:
            return str(found)
        return str(Path(str(config.hydra.runtime.output_dir)) / f"{config.hydra.job.name}.log")
    except Exception:  # noqa: BLE001
        return None


def _cause_of(exc: BaseException, job_dir: Path | None = None) -> str:
    """A failed job's cause: its error's type and first line (and, for a write to a full disk, the disk's free
    space: :func:`fstag.runs.sweep_jobs.disk_note`)."""
    from fstag.runs.sweep_jobs import disk_note

    text = str(exc).strip().splitlines()
    cause = f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
    return cause + disk_note(exc, job_dir)


def _default_signal(signum: int) -> None:
    """What the signal does without a handler: SIGINT raises KeyboardInterrupt, the others end the process."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


LAUNCHER_SIDE = ("_config", "_launch_file", "_ended", "_stopping", "_signals", "_old_handlers")  # not pickled into the jobs


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self._run_id: str | None = None
        self._uri: str | None = None
        self._gpus: list[str] = []
        self._per_gpu = 1
        self._launch: str | None = None
        self._sweep_dir: str | None = None
        self._run_name: str | None = None    # the parent's run name (its would-be name, for a placeholder)
        self._sweep_name: str | None = None
        # the launching process only
        self._config: DictConfig | None = None
        self._launch_file: Path | None = None
        self._ended = False
        self._stopping: int | None = None
        self._signals = 0
        self._old_handlers: dict = {}
        self._job_failed = False

    def __getstate__(self) -> dict:
        return {k: (None if k in LAUNCHER_SIDE else v) for k, v in self.__dict__.items()}

    # multirun --------------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import fstag.runs.resolvers  # noqa: F401
        from mlflow.tracking import MlflowClient

        from fstag.runs import job_guard, sweep_jobs

        uri = str(config.mlflow.tracking_uri)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        # launches in this exp whose launcher died without closing them (SIGKILL): their runs end KILLED (each
        # call to the store there asks it first; a resumed Optuna study's parent is set RUNNING again below)
        sweep_jobs.repair_stale(sweep_dir / SWEEPS_DIR, uri)
        overrides = " ".join(config.hydra.overrides.task)
        optuna = _is_optuna(config)
        study = _resume_study(config) if optuna else None
        study_file = sweep_dir / SWEEPS_DIR / f"optuna-{study}.json" if study else None
        sweep_name = str(OmegaConf.select(config, "sweep_name", default=None) or study or time.strftime("%Y%m%d-%H%M%S"))
        name = f"search/{config.exp}/{sweep_name}" if optuna else f"sweep/{config.exp}/{sweep_name}"
        # a tracking server that does not answer would hold each call below for MLflow's whole retry budget and
        # then fail the launch before any job starts: asked first (a SQLite or file store always "answers")
        why = None if server_answers(uri) else "does not answer"
        run_id = run_name = None
        if why is None:
            try:
                # (against a tracking server, ensure_experiment keeps the server's own artifact store)
                exp_id = ensure_experiment(uri, str(config.mlflow.experiment), str(config.mlflow.artifact_location))
                client = MlflowClient(uri)
                if study_file is not None and study_file.is_file():  # a stored study resumes into its parent
                    run_id = json.loads(study_file.read_text()).get("mlflow_parent_run_id")
                    try:
                        if is_local_id(run_id):
                            raise ValueError(run_id)
                        client.update_run(run_id, status="RUNNING")
                    except Exception:  # noqa: BLE001  (gone from the store: a new parent)
                        run_id = None
                if run_id is None:
                    tags = {"fstag.sweep_dir": str(sweep_dir), "fstag.overrides": overrides,
                            "fstag.exp": str(config.exp), "fstag.sweeper": "optuna" if optuna else "grid",
                            "fstag.optimized_metric": str(config.optimized_metric), "fstag.sweep_name": sweep_name}
                    if study:
                        tags["fstag.optuna_study"] = study
                    run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
                    if study_file is not None:
                        write_json_atomic(study_file, {"mlflow_parent_run_id": run_id, "study": study})
                parent = client.get_run(run_id)
                run_name = parent.info.run_name
                sweep_name = parent.data.tags.get("fstag.sweep_name", sweep_name)  # a resumed study keeps its own
            except Exception as exc:  # noqa: BLE001
                if not uri.startswith(("http://", "https://")):
                    raise  # a local store that fails would fail every job too: say it now
                why, run_id = f"failed ({type(exc).__name__}: {str(exc).strip()[:300]})", None
        if run_id is None:
            # the launch goes on without its parent in MLflow: a placeholder names its local records only (sweep:<name>
            # and the runs listing read them); the jobs get no parent id (a run whose parent the store lacks is worse
            # than none); a stored Optuna study keeps its parent for the next launch that finds the server
            run_id, run_name = LOCAL_PREFIX + uuid.uuid4().hex, name
            log.warning("MLflow store %s %s: the launch goes on without a parent run in MLflow (its records in %s "
                        "name it by the placeholder %s); each job journals its own run, sent when the store answers "
                        "again, or by `python -m fstag.runs sync` once it does",
                        uri, why, sweep_dir / SWEEPS_DIR, run_id)
        self._launch = job_guard.launch_id()
        os.environ[job_guard.LAUNCH_ENV] = self._launch  # every job of the launch inherits it
        short = run_id[:len(LOCAL_PREFIX) + 8] if is_local_id(run_id) else run_id[:8]
        self._launch_file = sweep_dir / SWEEPS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{short}.json"
        write_json_atomic(self._launch_file,
                          {"mlflow_parent_run_id": run_id, "name": sweep_name, "run_name": run_name,
                           "overrides": list(config.hydra.overrides.task), "pid": os.getpid(), "study": study,
                           "launch": self._launch, "host": socket.gethostname(), "status": "RUNNING",
                           "tracking_uri": uri, "started": time.time()})
        self._run_id, self._uri, self._sweep_dir, self._config = run_id, uri, str(sweep_dir), config
        self._run_name, self._sweep_name = run_name, sweep_name
        self._gpus, self._per_gpu = _joblib_slots(config)
        # in this process, for fstag's launchers to find the launch's job records (a placeholder too); each job's
        # process sets it again in on_job_start, as its run's parent, or removes a placeholder
        os.environ[PARENT_RUN_ENV] = run_id
        sweep_jobs.LAUNCH.update(stopped=None, not_started=[])
        atexit.register(self._at_exit)
        self._handle_stop_signals()
        if not is_local_id(run_id):
            log.info("MLflow parent run %s for this launch (%s)", run_id, overrides)

    def _handle_stop_signals(self) -> None:
        """In the launching process: SIGINT, SIGTERM and SIGHUP stop the launch (:class:`LaunchStopped`
        unwinds the job running in this process, with Hydra's basic launcher, and the sweeper; the
        ``atexit`` hook then closes the sweep). fstag's launchers take these signals over while they wait
        for their jobs. A third signal while the sweep is being closed leaves at once."""
        from fstag.runs import job_guard, sweep_jobs

        launcher = os.getpid()

        def stop(signum, frame):
            if os.getpid() != launcher:  # a process forked from this one (a DataLoader worker): as before
                _default_signal(signum)
                return
            self._signals += 1
            if self._stopping is None and not sweep_jobs.LAUNCH.get("stopped") and not self._ended:
                self._stopping = signum
                sweep_jobs.LAUNCH["stopped"] = signum
                log.error("%s: stopping", sweep_jobs.stop_cause(signum))
                raise job_guard.LaunchStopped(signum)
            if self._signals >= 3:  # stopping already, or closing the sweep: a third signal leaves at once
                os._exit(128 + signum)

        for sig in job_guard.STOP_SIGNALS:
            try:
                self._old_handlers[sig] = signal.signal(sig, stop)
            except ValueError:  # not the main thread
                return

    def _restore_signals(self) -> None:
        for sig, old in (self._old_handlers or {}).items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        self._old_handlers = {}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._end_launch(config, errored=False)

    def _at_exit(self) -> None:
        """The launch ended without on_multirun_end: a job failed (the sweeper raised its error) or the launch
        was stopped."""
        if self._ended or not self._run_id or self._config is None:
            return
        try:
            self._end_launch(self._config, errored=True)
        except BaseException as exc:  # noqa: BLE001  (at exit: say it, never hide the launch's own error)
            log.warning("could not close the sweep: %s: %s", type(exc).__name__, exc)

    def _end_launch(self, config: DictConfig, errored: bool) -> None:
        if self._ended or not self._run_id:
            return
        self._ended = True
        from mlflow.tracking import MlflowClient

        from fstag.runs import job_guard, sweep_jobs

        stopped = sweep_jobs.LAUNCH.get("stopped") or self._stopping
        client = MlflowClient(self._uri)
        folder = sweep_jobs.jobs_folder(self._sweep_dir, self._run_id)
        # jobs of this launch that never closed (their process died, or ran in this one when it was stopped)
        mine = []
        for path, rec in sweep_jobs.read_records(folder):
            if rec.get("launch") not in (None, self._launch):
                continue
            if rec.get("status") == sweep_jobs.RUNNING:
                pid = int(rec.get("pid") or 0)
                here = pid == os.getpid()
                alive = job_guard.process_alive(str(rec.get("host")), pid, str(rec.get("pid_start") or "")) \
                    if pid and not here else False
                # on another host (a cluster job) it is gone only if this launch waited for it (on_multirun_end)
                if alive is False or (alive is None and not errored):
                    cause = sweep_jobs.stop_cause(stopped) if stopped else (
                        "ended without closing its run (its process is gone)" if not here else
                        "ended without closing its run (the launch ended with an error)")
                    rec = sweep_jobs.settle(path, rec, sweep_jobs.KILLED if stopped else sweep_jobs.FAILED, cause,
                                            self._uri)
            mine.append(rec)
        failed = [r for r in mine if r.get("status") in (sweep_jobs.FAILED, sweep_jobs.KILLED)]
        not_started = list(sweep_jobs.LAUNCH.get("not_started") or [])
        status = "KILLED" if stopped else "FAILED" if (failed or errored or self._job_failed) else "FINISHED"
        cause = sweep_jobs.stop_cause(stopped) if stopped else (
            f"{len(failed)} of {len(mine)} job(s) failed" if failed else "the launch ended with an error" if status == "FAILED"
            else None)
        # the parent run's calls, after one question to the store (a server away would hold each for MLflow's
        # whole retry budget); none of them may turn a finished sweep into a crash
        online = self._parent_answers()
        if online:
            try:
                self._log_best(config, client)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not log the sweep's best run on its MLflow parent run %s: %s: %s", self._run_id,
                            type(exc).__name__, exc)
        try:
            self._summarise(config, client if online else None)
        except Exception as exc:  # noqa: BLE001  (a summary must not turn a finished sweep into a failed one)
            log.warning("could not write the sweep's summary: %s: %s", type(exc).__name__, exc)
        ended = online and sweep_jobs.end_parent(self._uri, self._run_id, status, cause)
        if self._launch_file is not None:
            try:
                rec = json.loads(self._launch_file.read_text())
                rec = {**rec, "ended": time.time(), "status": status, "cause": cause, "failed_jobs": len(failed)}
                if not ended and not is_local_id(self._run_id):  # the next launch in this exp sends it (repair_stale)
                    rec[sweep_jobs.PARENT_END] = {"status": status, "cause": cause}
                write_json_atomic(self._launch_file, rec)
            except (OSError, json.JSONDecodeError):
                pass
        if failed or not_started:
            title = (f"{self._run_name} (MLflow parent run {self._run_id})" if not is_local_id(self._run_id) else
                     f"sweep {self._sweep_name} (no MLflow parent run: the store did not answer at its start)")
            table = sweep_jobs.failure_table(failed, self._sweep_dir, len(mine) + len(not_started), title, not_started)
            sys.stderr.write(table + "\n")
            sys.stderr.flush()
            log.error("%s", table.splitlines()[0])
        if self._gpus:
            from fstag.runs.launchers import lease_folder

            shutil.rmtree(lease_folder(self._run_id), ignore_errors=True)
        self._restore_signals()

    def _parent_answers(self) -> bool:
        """Whether the launch's parent run can be written now: it exists in MLflow (not a placeholder) and the
        store answers. Otherwise one warning says what is skipped and where the launch's records are."""
        folder = Path(str(self._sweep_dir)) / SWEEPS_DIR / str(self._run_id)
        if is_local_id(self._run_id):
            log.warning("this launch has no MLflow parent run (the store %s did not answer at its start): its summary "
                        "is under %s; its jobs' runs reach MLflow as the store answers, or with `python -m fstag.runs "
                        "sync`", self._uri, folder)
            return False
        if not server_answers(str(self._uri)):
            log.warning("MLflow store %s does not answer: the sweep's parent run %s is not ended nor given its best "
                        "run and summary now (its summary is under %s; the next launch in this exp ends the parent "
                        "run once the store answers; the jobs' runs: `python -m fstag.runs sync`)",
                        self._uri, self._run_id, folder)
            return False
        return True

    def _log_best(self, config: DictConfig, client) -> None:
        """The best child's optimised metric, run name and overrides on the parent run."""
        metric = f"best_{config.get('optimized_metric', 'val_map3')}"
        children = client.search_runs(
            [client.get_run(self._run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self._run_id}'", max_results=5000)
        scored = [r for r in children if math.isfinite(r.data.metrics.get(metric, math.nan))]
        if not scored:
            return
        sign = 1 if _maximize(config) else -1
        best = max(scored, key=lambda r: sign * r.data.metrics[metric])
        client.log_metric(self._run_id, metric, best.data.metrics[metric])
        client.set_tag(self._run_id, "fstag.best_run", best.info.run_name)
        client.set_tag(self._run_id, "fstag.best_run_id", best.info.run_id)
        best_params = {f"best.{k[len('fstag.override.'):]}": v for k, v in best.data.tags.items()
                       if k.startswith("fstag.override.")}
        best_params["best.run"] = best.info.run_name
        have = client.get_run(self._run_id).data.params
        log_params_flat(client, self._run_id, {k: v for k, v in best_params.items() if have.get(k, v) == v and k not in have})
        log.info("best of the sweep: %s %s = %.4f", best.info.run_name, metric, best.data.metrics[metric])

    def _summarise(self, config: DictConfig, client) -> None:
        """The launch's summary table and plot, beside its job records and (with a ``client``: the parent run
        exists and the store answers) on its parent run."""
        from fstag.runs.sweep_summary import latest_per_job, swept_keys, write_summary

        folder = Path(str(config.hydra.sweep.dir)) / SWEEPS_DIR / self._run_id
        records = []
        for f in sorted((folder / SWEEP_JOBS).glob("*.json")):
            try:
                records.append(json.loads(f.read_text()))
            except json.JSONDecodeError:
                continue
        if not records:
            return
        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) if _is_optuna(config) else None
        keys = swept_keys(list(config.hydra.overrides.task), OmegaConf.to_container(params) if params else None)
        metric = str(config.get("optimized_metric", "val_map3"))
        title = f"{self._run_name or self._sweep_name}: {' '.join(config.hydra.overrides.task)}"
        paths = write_summary(records, keys, metric, _maximize(config), folder, title)
        if client is None:
            log.info("sweep summary (%d jobs): %s", len(latest_per_job(records)), paths[1])
            return
        for p in paths:
            client.log_artifact(self._run_id, str(p), SUMMARY_ARTIFACTS)
        ids = list(dict.fromkeys(str(r.get("mlflow_run_id")) for r in records
                                 if r.get("mlflow_run_id") and not is_local_id(r.get("mlflow_run_id"))))
        client.set_tag(self._run_id, "fstag.sweep.run_ids", ",".join(ids)[:5000])
        from fstag.runs.tracking import ui_command, ui_url

        exp_id = client.get_run(self._run_id).info.experiment_id
        serve = ui_command(self._uri)
        log.info("sweep summary (%d jobs): %s; in the MLflow UI%s: %s", len(latest_per_job(records)), paths[1],
                 f" ({serve})" if serve else "", ui_url(self._uri, exp_id, self._run_id))

    # each job, in its own process --------------------------------------------------------------------
    def _job_paths(self, config: DictConfig) -> tuple[Path, Path] | None:
        """(job directory, its record's folder), None when the config does not resolve (the job failed
        before it had a directory)."""
        if not self._run_id:
            return None
        try:
            job_dir = Path(str(config.job_dir))
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception:  # noqa: BLE001
            return None
        from fstag.runs.sweep_jobs import jobs_folder

        return job_dir, jobs_folder(sweep_dir, self._run_id)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from fstag.runs import job_guard, sweep_jobs

        if self._run_id and not is_local_id(self._run_id):
            os.environ[PARENT_RUN_ENV] = self._run_id  # the job's run is its child
        elif is_local_id(self._run_id) or is_local_id(os.environ.get(PARENT_RUN_ENV)):
            os.environ.pop(PARENT_RUN_ENV, None)  # a launch without its parent in MLflow: the job's run has none
        log_file = _log_file(config)
        job_guard.guard_job()  # a job in a process of its own: stop signals, its launcher's death
        job_guard.write_faults_to(log_file)
        paths = self._job_paths(config)
        if paths is not None:
            job_dir, folder = paths
            num = int(OmegaConf.select(config, "hydra.job.num", default=0) or 0)
            overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
            sweep_jobs.start_record(folder, num, str(job_dir), overrides, log_file)
            sweep_jobs.clear_failure(job_dir, OmegaConf.select(config, "mlflow.tracking_uri", default=None))
        if self._gpus and str(OmegaConf.select(config, "trainer.devices", default=1)) == "1":
            from fstag.runs.launchers import lease_gpu

            # a slot a dead job held is free once its process (and its DataLoader workers) are gone
            lease_gpu(self._gpus, self._run_id or str(os.getppid()), self._per_gpu, wait_s=30)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from fstag.runs import job_guard, sweep_jobs

        status = getattr(getattr(job_return, "status", None), "name", "UNKNOWN")
        exc = getattr(job_return, "_return_value", None) if status == "FAILED" else None
        stopped = isinstance(exc, job_guard.JobStopped)
        paths = self._job_paths(config)
        uri = str(config.mlflow.tracking_uri)
        if paths is not None:
            job_dir, folder = paths
            num = int(OmegaConf.select(config, "hydra.job.num", default=0) or 0)
            path = sweep_jobs.record_path(folder, num, str(job_dir))
            try:
                record = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                record = {"job_dir": str(job_dir), "num": num, "launch": os.environ.get(job_guard.LAUNCH_ENV),
                          "overrides": [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]}
            if status == "FAILED":
                cause = exc.cause if stopped else _cause_of(exc, job_dir) if isinstance(exc, BaseException) else "failed"
                sweep_jobs.settle(path, record, sweep_jobs.KILLED if stopped else sweep_jobs.FAILED, cause, uri,
                                  _log_file(config), died=False)
            else:
                from fstag.runs.run_dir import MLFLOW_RUN_ID_FILE

                id_file = job_dir / MLFLOW_RUN_ID_FILE
                try:
                    write_json_atomic(path, {**record, "status": status, "ended": time.time(), "cause": None,
                                             "mlflow_run_id": id_file.read_text().strip() if id_file.is_file() else None})
                except OSError as exc2:
                    log.warning("could not write the job's record %s: %s", path, exc2)
        if status != "FAILED":
            return
        self._job_failed = True
        if self._run_id:
            try:
                job_dir_text = str(config.job_dir)
            except Exception:  # noqa: BLE001  (the config itself is broken)
                job_dir_text = "None"
            log.error("job %s %s", job_dir_text, "was stopped" if stopped else "failed")
            if is_local_id(self._run_id):
                pass  # no parent run in MLflow: the job's record tells it
            elif not server_answers(uri):
                log.warning("MLflow store %s does not answer: the sweep's parent run %s not tagged with its failed job "
                            "(the job's record under %s says it)", uri, self._run_id, self._sweep_dir)
            else:
                from mlflow.tracking import MlflowClient

                try:
                    MlflowClient(uri).set_tag(self._run_id, "fstag.failed_job", job_dir_text)
                except Exception as exc2:  # noqa: BLE001  (the store went away: the job's record says it)
                    log.warning("could not tag the sweep's MLflow parent run %s with its failed job: %s: %s",
                                self._run_id, type(exc2).__name__, exc2)
            if stopped and exc.launcher_gone:  # nobody else will close the sweep
                sweep_jobs.end_parent(uri, self._run_id, "KILLED", exc.cause, only_running=True)
