"""MLflow plumbing: one place that knows the tracking URI, the store and the experiment."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

# The MLflow parent run of the sweep a job belongs to; set in the job's process by
# fstag.callbacks.MlflowSweepCallback.on_job_start (each launch has its own parent).
PARENT_RUN_ENV = "FSTAG_MLFLOW_PARENT_RUN_ID"
MAX_PARAM_LEN = 6000


def artifact_uri(location: str) -> str:
    """A local folder as a ``file://`` URI; URIs with a scheme pass through."""
    if "://" in str(location):
        return str(location)
    return Path(location).resolve().as_uri()


def ensure_experiment(tracking_uri: str, experiment: str, artifact_location: str | None = None) -> str:
    """Create the store (schema) and the experiment if missing; return the experiment id.

    Call once, before parallel jobs start: concurrent schema creation on a new SQLite file can corrupt it.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(
            experiment, artifact_location=artifact_uri(artifact_location) if artifact_location else None
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
