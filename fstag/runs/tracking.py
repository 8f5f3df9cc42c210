"""MLflow plumbing: one place that knows the tracking URI, the store and the experiment."""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

# The MLflow parent run of the sweep a job belongs to; set in the job's process by
# fstag.runs.hydra_callbacks.MlflowSweepCallback.on_job_start (each launch has its own parent).
PARENT_RUN_ENV = "FSTAG_MLFLOW_PARENT_RUN_ID"
MAX_PARAM_LEN = 6000
# MLflow 3 opens an experiment on its GenAI pages unless the experiment says it is model development.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
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


def artifact_uri(location: str) -> str:
    """A local folder as a ``file://`` URI; URIs with a scheme pass through."""
    if "://" in str(location):
        return str(location)
    return Path(location).resolve().as_uri()


def _store_lock(tracking_uri: str):
    """A lock beside a SQLite store's file: the first processes to open a new store create its schema one at
    a time (concurrent creation fails in alembic or corrupts the file). Other stores need none."""
    import contextlib

    from filelock import FileLock

    if not str(tracking_uri).startswith("sqlite:///"):
        return contextlib.nullcontext()
    db = Path(str(tracking_uri)[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(db) + ".lock")


def ensure_experiment(tracking_uri: str, experiment: str, artifact_location: str | None = None) -> str:
    """Create the store (schema) and the experiment if missing; return the experiment id. Safe to call from
    concurrent jobs. Against a tracking server (http/https), the server's artifact store is used, not
    ``artifact_location`` (a path on this machine)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if str(tracking_uri).startswith(("http://", "https://")):
        artifact_location = None
    with _store_lock(tracking_uri):
        mlflow.set_tracking_uri(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            if EXPERIMENT_KIND_TAG not in exp.tags:  # made before fstag tagged its experiments
                client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return exp.experiment_id
        try:
            return client.create_experiment(
                experiment, artifact_location=artifact_uri(artifact_location) if artifact_location else None,
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
            )
        except Exception:  # created meanwhile by another process
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            return exp.experiment_id


def metric_name(key: str) -> str:
    """``key`` as a valid MLflow metric name: characters other than letters, digits, ``_ - . : /`` and
    spaces (e.g. a variant's ``=`` and ``,``) become ``:`` for ``=`` and ``_`` otherwise."""
    return re.sub(r"[^\w\-. :/]", "_", str(key).replace("=", ":"))


def log_params_flat(client, run_id: str, params: Mapping[str, Any]) -> None:
    """Log flattened params in batches (MLflow caps the value length and batch size)."""
    from mlflow.entities import Param

    items = [Param(str(k), str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


def parent_run_id() -> str | None:
    """The parent run of the sweep this job runs in (None outside a multirun)."""
    return os.environ.get(PARENT_RUN_ENV) or None


@functools.lru_cache(maxsize=None)
def _job_logger_class():  # lazy: blending and predicting import this module without Lightning
    from pytorch_lightning.loggers import MLFlowLogger

    class JobMLFlowLogger(MLFlowLogger):
        """Lightning's MLflow logger writing into the job's own run (``run_id``, created by fstag). The job
        logs its resolved config once as '.'-separated params; Lightning's hyper-parameter logging (the
        module's hparams, '/'-flattened) would duplicate them under other names."""

        def log_hyperparams(self, params) -> None:
            return None

    return JobMLFlowLogger


def __getattr__(name: str):  # fstag.runs.tracking.JobMLFlowLogger, importable by hydra.utils.instantiate
    if name == "JobMLFlowLogger":
        return _job_logger_class()
    raise AttributeError(name)


def open_job_run(tracking_uri: str, experiment: str, artifact_location: str, id_file: Path, run_name: str,
                 tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """The job's MLflow run: the one named in ``id_file`` (set RUNNING again: a resumed or repaired job),
    else a new run with ``tags`` (a sweep's parent id included) and ``params``, its id written to ``id_file``."""
    from mlflow.tracking import MlflowClient

    from fstag.core.io import write_text_atomic

    exp_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    client = MlflowClient(tracking_uri)
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    if run_id:
        try:
            client.get_run(run_id)
        except Exception:
            log.warning("%s names MLflow run %s, which %s does not have: starting a new run", id_file, run_id, tracking_uri)
            run_id = None
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = dict(tags)
    parent = parent_run_id()
    if parent:
        tags["mlflow.parentRunId"] = parent
    run_id = client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
    write_text_atomic(id_file, run_id + "\n")
    log_params_flat(client, run_id, params)
    return run_id
