"""Hydra callbacks. ``MlflowSweepCallback`` prepares the MLflow store once before any job of a multirun
starts (parallel jobs creating a new SQLite schema at once can corrupt it) and opens the launch's parent
run that groups its jobs in the MLflow UI:

- each launch (``python train.py -m ...``) has its own parent, so sweeps in one ``exp``, one after the other
  or at the same time, keep theirs; an Optuna study with a storage keeps one parent over its resumptions;
- the parent's id reaches each job through the job's own process (``on_job_start`` sets
  ``FSTAG_MLFLOW_PARENT_RUN_ID``), whatever the launcher (basic in-process, joblib workers, submitit
  processes or SLURM jobs: the callback travels pickled with each job, its run id with it);
- with ``hydra/launcher=joblib`` on GPUs, each worker process leases a slot of its own, a GPU shared by at
  most ``launcher.jobs_per_gpu`` workers (:func:`fstag.runs.launchers.lease_gpu`);
- against a tracking server (``http(s)://``), the experiment it creates keeps the server's artifact
  store (``mlflow server --serve-artifacts``), so the artifacts are where anyone with the server finds them;
- each launch has a name: ``sweep_name=<name>`` or its start time (``20261130-101500``); its parent run is
  ``sweep/<exp>/<name>`` (``search/<exp>/<study>`` for Optuna), which the member selector ``sweep:<name>``
  finds (:mod:`fstag.runs.selectors`);
- each job, ending, writes its record (job directory, status, overrides) to
  ``<runs_dir>/<exp>/.sweeps/<parent run id>/jobs/``: what the launch ran, a job it found complete included;
- a failed job marks its own run and the parent FAILED; at the end the parent is FINISHED unless a job
  failed, and carries the best child's optimised metric (``best_<metric>``), its run name and overrides,
  the run ids of the launch's jobs (tag ``fstag.sweep.run_ids``) and the sweep's summary table and plot
  (:mod:`fstag.runs.sweep_summary`, artifacts ``sweep_summary/``);
- with the Optuna sweeper and a storage, a study interrupted earlier resumes: ``n_trials`` counts the
  trials already finished, and a trial that was killed is run again with the same parameters (its job
  directory is the same, so it resumes from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from fstag.core.io import write_json_atomic
from fstag.runs.catalog import SWEEP_JOBS, SWEEPS_DIR
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


def _joblib_slots(config: DictConfig) -> tuple[list[str], int]:
    """(GPUs, jobs per GPU) to spread joblib workers over: ``launcher.gpus`` (null: the visible CUDA devices)
    and ``launcher.jobs_per_gpu`` (fstag.runs.launchers); no GPUs for the other launchers."""
    if "joblib" not in str(OmegaConf.select(config, "hydra.launcher._target_", default="")).lower():
        return [], 1
    from fstag.runs.launchers import launch_plan

    node = OmegaConf.select(config, "launcher", default=None)
    return launch_plan(OmegaConf.to_container(node, resolve=True) if node is not None else None)


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self._run_id: str | None = None
        self._uri: str | None = None
        self._gpus: list[str] = []
        self._per_gpu = 1

    # multirun --------------------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import fstag.runs.resolvers  # noqa: F401
        from mlflow.tracking import MlflowClient

        uri = str(config.mlflow.tracking_uri)
        # (against a tracking server, ensure_experiment keeps the server's own artifact store)
        exp_id = ensure_experiment(uri, str(config.mlflow.experiment), str(config.mlflow.artifact_location))
        client = MlflowClient(uri)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = " ".join(config.hydra.overrides.task)
        optuna = _is_optuna(config)
        study = _resume_study(config) if optuna else None
        study_file = sweep_dir / SWEEPS_DIR / f"optuna-{study}.json" if study else None
        run_id = None
        sweep_name = str(OmegaConf.select(config, "sweep_name", default=None) or study or time.strftime("%Y%m%d-%H%M%S"))
        if study_file is not None and study_file.is_file():
            run_id = json.loads(study_file.read_text()).get("mlflow_parent_run_id")
            try:
                client.update_run(run_id, status="RUNNING")
            except Exception:
                run_id = None
        if run_id is None:
            name = f"search/{config.exp}/{sweep_name}" if optuna else f"sweep/{config.exp}/{sweep_name}"
            tags = {"fstag.sweep_dir": str(sweep_dir), "fstag.overrides": overrides, "fstag.exp": str(config.exp),
                    "fstag.sweeper": "optuna" if optuna else "grid", "fstag.optimized_metric": str(config.optimized_metric),
                    "fstag.sweep_name": sweep_name}
            if study:
                tags["fstag.optuna_study"] = study
            run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
            if study_file is not None:
                write_json_atomic(study_file, {"mlflow_parent_run_id": run_id, "study": study})
        run_name = client.get_run(run_id).info.run_name
        sweep_name = client.get_run(run_id).data.tags.get("fstag.sweep_name", sweep_name)  # a resumed study keeps its own
        write_json_atomic(sweep_dir / SWEEPS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{run_id[:8]}.json",
                          {"mlflow_parent_run_id": run_id, "name": sweep_name, "run_name": run_name,
                           "overrides": list(config.hydra.overrides.task), "pid": os.getpid(), "study": study})
        self._run_id, self._uri = run_id, uri
        self._gpus, self._per_gpu = _joblib_slots(config)
        os.environ[PARENT_RUN_ENV] = run_id
        log.info("MLflow parent run %s for this launch (%s)", run_id, overrides)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self._run_id:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self._uri)
        metric = f"best_{config.get('optimized_metric', 'val_map3')}"
        children = client.search_runs(
            [client.get_run(self._run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self._run_id}'", max_results=5000)
        scored = [r for r in children if math.isfinite(r.data.metrics.get(metric, math.nan))]
        if scored:
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
        try:
            self._summarise(config, client)
        except Exception as exc:  # noqa: BLE001  (a summary must not turn a finished sweep into a failed one)
            log.warning("could not write the sweep's summary: %s: %s", type(exc).__name__, exc)
        failed = client.get_run(self._run_id).info.status == "FAILED" or any(r.info.status == "FAILED" for r in children)
        client.set_terminated(self._run_id, "FAILED" if failed else "FINISHED")

    def _summarise(self, config: DictConfig, client) -> None:
        """The launch's summary table and plot, beside its job records and on its parent run."""
        from fstag.runs.sweep_summary import swept_keys, write_summary

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
        title = f"{client.get_run(self._run_id).info.run_name}: {' '.join(config.hydra.overrides.task)}"
        paths = write_summary(records, keys, metric, _maximize(config), folder, title)
        for p in paths:
            client.log_artifact(self._run_id, str(p), SUMMARY_ARTIFACTS)
        ids = [str(r.get("mlflow_run_id")) for r in records if r.get("mlflow_run_id")]
        client.set_tag(self._run_id, "fstag.sweep.run_ids", ",".join(ids)[:5000])
        from fstag.runs.tracking import ui_command, ui_url

        exp_id = client.get_run(self._run_id).info.experiment_id
        serve = ui_command(self._uri)
        log.info("sweep summary (%d jobs): %s; in the MLflow UI%s: %s", len(records), paths[1],
                 f" ({serve})" if serve else "", ui_url(self._uri, exp_id, self._run_id))

    # each job, in its own process --------------------------------------------------------------------
    def _record_job(self, config: DictConfig, job_return: Any) -> None:
        """The job's record in its launch's folder: one file per job, so parallel jobs never share one."""
        if not self._run_id:
            return
        try:
            job_dir = Path(str(config.job_dir))
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception:  # noqa: BLE001  (a config that does not resolve: the job failed before it had a dir)
            return
        from fstag.runs.run_dir import MLFLOW_RUN_ID_FILE

        num = int(OmegaConf.select(config, "hydra.job.num", default=0) or 0)
        id_file = job_dir / MLFLOW_RUN_ID_FILE
        status = getattr(getattr(job_return, "status", None), "name", "UNKNOWN")
        digest = hashlib.sha256(str(job_dir).encode()).hexdigest()[:10]
        write_json_atomic(sweep_dir / SWEEPS_DIR / self._run_id / SWEEP_JOBS / f"{num:05d}-{digest}.json", {
            "job_dir": str(job_dir), "num": num, "status": status, "ended": time.time(),
            "overrides": [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []],
            "mlflow_run_id": id_file.read_text().strip() if id_file.is_file() else None,
        })

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self._run_id:
            os.environ[PARENT_RUN_ENV] = self._run_id
        if self._gpus and str(OmegaConf.select(config, "trainer.devices", default=1)) == "1":
            from fstag.runs.launchers import lease_gpu

            lease_gpu(self._gpus, self._run_id or str(os.getppid()), self._per_gpu)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        self._record_job(config, job_return)
        if job_return is None or job_return.status != JobStatus.FAILED:
            return
        from mlflow.tracking import MlflowClient

        from fstag.runs.run_dir import MLFLOW_RUN_ID_FILE

        uri = str(config.mlflow.tracking_uri)
        client = MlflowClient(uri)
        try:
            job_dir = Path(str(config.job_dir))
        except Exception:  # the config itself is broken
            job_dir = None
        id_file = job_dir / MLFLOW_RUN_ID_FILE if job_dir is not None else None
        if id_file is not None and id_file.is_file():
            run_id = id_file.read_text().strip()
            try:
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, "FAILED")
            except Exception as exc:  # noqa: BLE001
                log.warning("could not mark MLflow run %s FAILED: %s", run_id, exc)
        if self._run_id:
            client.set_tag(self._run_id, "fstag.failed_job", str(job_dir))
            client.set_terminated(self._run_id, "FAILED")
            log.error("job %s failed: the sweep's parent run %s is FAILED", job_dir, self._run_id)
