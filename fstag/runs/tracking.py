"""MLflow plumbing: one place that knows the tracking URI, the store and the experiment: the UI's address, the
job's run (:func:`open_job_run`) and Lightning's logger into it (``JobMLFlowLogger``), both writing through the
run's journal (:mod:`fstag.runs.journal`, which holds the calls to the store: ``ensure_experiment``,
``log_params_flat``)."""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

# the store's own calls live with the journal that makes them (fstag.runs.journal); imported from here too
from fstag.runs.journal import (  # noqa: F401
    EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, MAX_PARAM_LEN, RunJournal, Settings, artifact_uri, ensure_experiment, find_open,
    log_params_flat,
)

log = logging.getLogger(__name__)

# The MLflow parent run of the sweep a job belongs to; set in the job's process by
# fstag.runs.hydra_callbacks.MlflowSweepCallback.on_job_start (each launch has its own parent).
PARENT_RUN_ENV = "FSTAG_MLFLOW_PARENT_RUN_ID"
UI_PORT = 5000


def ui_url(tracking_uri: str, experiment_id: str, run_id: str | None = None, port: int = UI_PORT,
           order_by: str = "best_val_map3") -> str:
    """The MLflow UI page of an experiment's training runs, or of one run: on the tracking server itself, or
    on ``mlflow ui`` at 127.0.0.1:``port`` for a local store. MLflow 3 needs ``workflowType=machine_learning``
    (else it opens its GenAI overview); sorting by a metric (``order_by``, best first) also lists a sweep's
    jobs one per row, where the default order folds them under their parent run."""
    from urllib.parse import quote

    base = str(tracking_uri).rstrip("/") if str(tracking_uri).startswith(("http://", "https://")) \
        else f"http://127.0.0.1:{port}"
    if run_id:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    order = f"&orderByKey={quote(f'metrics.`{order_by}`', safe='.')}&orderByAsc=false" if order_by else ""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning{order}"


def ui_command(tracking_uri: str, port: int = UI_PORT) -> str | None:
    """The command that serves the UI of a local store (None for a tracking server: it serves its own)."""
    if str(tracking_uri).startswith(("http://", "https://")):
        return None
    return f"mlflow ui --backend-store-uri {tracking_uri} --port {port}"


def metric_name(key: str) -> str:
    """``key`` as a valid MLflow metric name: characters other than letters, digits, ``_ - . : /`` and
    spaces (e.g. a variant's ``=`` and ``,``) become ``:`` for ``=`` and ``_`` otherwise."""
    return re.sub(r"[^\w\-. :/]", "_", str(key).replace("=", ":"))


def parent_run_id() -> str | None:
    """The parent run of the sweep this job runs in (None outside a multirun)."""
    return os.environ.get(PARENT_RUN_ENV) or None


@functools.lru_cache(maxsize=None)
def _job_logger_class():  # lazy: blending and predicting import this module without Lightning
    import re as _re

    from pytorch_lightning.loggers import MLFlowLogger
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    class JobMLFlowLogger(MLFlowLogger):
        """Lightning's MLflow logger writing into the job's own run (``run_id``, created by fstag). Within a
        train job it never talks to the store: metrics go to the run's journal (:mod:`fstag.runs.journal`),
        whose thread sends them, so training never waits for the tracking server. The job logs its resolved
        config once as '.'-separated params; Lightning's hyper-parameter logging (the module's hparams,
        '/'-flattened) would duplicate them under other names. Without a journal (used outside a train job)
        it is Lightning's logger."""

        def _journal(self):
            return find_open(self._run_id)

        @property
        def experiment(self):
            journal = self._journal()
            if journal is None:
                return MLFlowLogger.experiment.fget(self)
            return journal.client()

        @property
        def run_id(self):
            journal = self._journal()
            return journal.current_id if journal is not None else MLFlowLogger.run_id.fget(self)

        @property
        def experiment_id(self):
            return self._experiment_id if self._journal() is not None else MLFlowLogger.experiment_id.fget(self)

        @property
        def name(self):
            return self._experiment_name if self._journal() is not None else MLFlowLogger.name.fget(self)

        def log_hyperparams(self, params) -> None:
            return None

        @rank_zero_only
        def log_metrics(self, metrics, step=None) -> None:
            journal = self._journal()
            if journal is None:
                return super().log_metrics(metrics, step)
            from lightning_fabric.utilities.logger import _add_prefix

            now = int(time.time() * 1000)
            points = []
            for k, v in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
                if isinstance(v, str):
                    continue
                points.append([_re.sub("[^a-zA-Z0-9_/. -]+", "", k), float(v), now, int(step or 0)])
            if points:
                journal.append("log_batch", metrics=points)

        @rank_zero_only
        def finalize(self, status: str = "success") -> None:
            journal = self._journal()
            if journal is None:
                return super().finalize(status)
            if status in ("failed", "FAILED"):  # a job that finishes closes its run itself (fstag.train.job.finish)
                journal.client().set_terminated(journal.current_id, "FAILED")

        def after_save_checkpoint(self, checkpoint_callback) -> None:
            if self._journal() is None or self._log_model:
                super().after_save_checkpoint(checkpoint_callback)

    return JobMLFlowLogger


def __getattr__(name: str):  # fstag.runs.tracking.JobMLFlowLogger, importable by hydra.utils.instantiate
    if name == "JobMLFlowLogger":
        return _job_logger_class()
    raise AttributeError(name)


def open_job_run(tracking_uri: str, experiment: str, artifact_location: str, id_file: Path, run_name: str,
                 tags: Mapping[str, str], params: Mapping[str, Any], settings=None, pending_root: Path | None = None) -> str:
    """The job's MLflow run: the one named in ``id_file`` (set RUNNING again: a resumed or repaired job), else a
    new run with ``tags`` (a sweep's parent id included) and ``params``. Nothing here waits for the store longer
    than ``settings.start_wait_s``: the calls go to the job's journal (:mod:`fstag.runs.journal`), sent by its
    thread; when the run is not created within that time (a tracking server away), the job goes on under a
    placeholder id (``local-<hex>``), written to ``id_file`` and replaced there once the store creates the run.
    Returns the run's id (or placeholder); the journal stays open for the job (``journal.find_open``)."""
    from fstag.core.io import write_text_atomic

    settings = settings or Settings()
    known = id_file.read_text().strip() if id_file.is_file() else None
    journal = RunJournal.open(id_file.parent, tracking_uri, expect=known or None, id_file=id_file,
                              pending_root=pending_root, settings=settings, start=False)
    if not id_file.is_file() or id_file.read_text().strip() not in journal.known_ids:
        write_text_atomic(id_file, journal.current_id + "\n")
    tags = dict(tags)
    parent = parent_run_id()
    if parent:
        tags["mlflow.parentRunId"] = parent
    # a known run is reopened (created anew, with these tags and params, only if the store lost it)
    journal.open_run(experiment, artifact_location, run_name, tags, params, run_id=journal.run_id)
    journal.start()
    return journal.wait_resolved(settings.start_wait_s)
