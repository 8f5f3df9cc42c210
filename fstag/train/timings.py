"""Where a train job's wall time goes, so that what is outside the model can be found and cut.

Two records, both in run.json's ``timings`` (seconds) and as MLflow metrics ``time_<name>_s``:

- per step of the job (:class:`StepTimes`): ``startup`` (from the process's start to the job's first
  step: the interpreter, imports, Hydra's composition; None where the process start cannot be read),
  ``prepare``, ``build`` (data, module, MLflow run, Trainer), ``fit``, ``best_weights``, ``predict`` and
  ``finish`` (MLflow metrics and artifacts; in run.json only, which is written after it);
- per epoch inside ``fit`` (:class:`EpochTimes`, a callback): ``fit_setup`` (from the fit's start to the
  first training batch's epoch: data module setup, the sanity validation), then the median over epochs of
  ``epoch`` (one epoch start to the next), ``epoch_train`` (its training batches), ``epoch_validation``
  and ``epoch_after_validation`` (from the end of validation to the next epoch: checkpoint writes, early
  stopping, the loggers' flush), and ``epochs`` (how many were timed).

A job that was resumed, or finished by a rerun, times only what that process did.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pytorch_lightning as pl


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc), or None where that cannot be read."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return max(0.0, time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class StepTimes:
    """Wall seconds of the job's named steps, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float | None] = {"startup": process_age_s()}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = (self.seconds.get(name) or 0.0) + time.perf_counter() - t0

    def as_dict(self, epochs: "EpochTimes | None" = None) -> dict[str, float | int | None]:
        out = {k: (None if v is None else round(v, 3)) for k, v in self.seconds.items()}
        if epochs is not None:
            out.update(epochs.summary())
        return out


class EpochTimes(pl.Callback):
    """The spans of each training epoch (see the module docstring); sanity-check validation counts as setup."""

    def __init__(self) -> None:
        self.fit_start: float | None = None
        self.first_epoch: float | None = None
        self.rows: list[dict[str, float]] = []
        self._row: dict[str, float] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        now = time.perf_counter()
        self._close_row(now)
        if self.first_epoch is None:
            self.first_epoch = now
        self._row = {"start": now}

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and self._row:
            self._row["val_start"] = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val_start" in self._row:
            self._row["val_end"] = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._close_row(time.perf_counter())

    def _close_row(self, now: float) -> None:
        row, self._row = self._row, {}
        if "start" not in row:
            return
        end_train = row.get("val_start", now)
        end_val = row.get("val_end", end_train)
        self.rows.append({"epoch": now - row["start"], "epoch_train": end_train - row["start"],
                          "epoch_validation": end_val - end_train, "epoch_after_validation": now - end_val})

    def summary(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        if self.fit_start is not None and self.first_epoch is not None:
            out["fit_setup"] = round(self.first_epoch - self.fit_start, 3)
        if self.rows:
            for key in self.rows[0]:
                out[key] = round(float(np.median([r[key] for r in self.rows])), 3)
            out["epochs"] = len(self.rows)
        return out
