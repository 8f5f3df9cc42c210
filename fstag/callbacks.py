"""Hydra callbacks. ``MlflowSweepCallback`` prepares the MLflow store once before any job of a multirun
starts (parallel jobs creating a new SQLite schema at once can corrupt it) and opens a parent run that
groups the sweep's jobs in the MLflow UI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fstag.io_utils import write_text_atomic
from fstag.tracking import PARENT_RUN_FILE, ensure_experiment

log = logging.getLogger(__name__)


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import fstag.config  # noqa: F401  (resolvers)
        from mlflow.tracking import MlflowClient

        uri = str(config.mlflow.tracking_uri)
        exp_id = ensure_experiment(uri, str(config.mlflow.experiment), str(config.mlflow.artifact_location))
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = " ".join(config.hydra.overrides.task)
        run = MlflowClient(uri).create_run(
            exp_id, run_name=f"sweep/{config.exp}", tags={"fstag.sweep_dir": str(sweep_dir), "fstag.overrides": overrides}
        )
        write_text_atomic(sweep_dir / PARENT_RUN_FILE, run.info.run_id + "\n")
        self._run_id, self._uri = run.info.run_id, uri
        log.info("MLflow parent run %s for the sweep (%s)", run.info.run_id, overrides)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        if getattr(self, "_run_id", None):
            MlflowClient(self._uri).set_terminated(self._run_id)
