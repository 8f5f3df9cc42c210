"""fstag's submitit launchers (``hydra/launcher=submitit_local`` and ``submitit_slurm``,
conf/hydra/launcher/): Hydra's submitit plugin, waiting for every job of the sweep however each ends.

The plugin collects its jobs' results in order and stops at the first job that has none (killed by a
signal, SLURM's out-of-memory kill, a node lost, a crash in native code), so the launch ends with
submitit's ``UncompletedJobError`` while the other jobs run on unwatched, and the dead job's MLflow run stays
RUNNING. Here:

- every job is waited for; one that ended without a result is a FAILED job: its run ends FAILED with the
  cause (submitit's state, e.g. SLURM's ``OUT_OF_MEMORY``, ``CANCELLED``, ``NODE_FAIL``, or ``crashed in
  native code`` when its stderr holds a fatal-error traceback; :func:`fstag.runs.sweep_jobs.settle`), and the
  launch exits non-zero with a table of the failed jobs (their Hydra log and submitit's stderr file);
- stopping the launch (Ctrl-C, SIGTERM, SIGHUP) cancels the jobs still queued or running (``scancel``; for
  local jobs, SIGINT to submitit's controller, which kills the job a second later) and closes their runs
  KILLED; the command exits with 128 + the signal.

A SLURM job belongs to the cluster: killing the launching command with SIGKILL leaves its jobs running
(``scancel`` them; their runs end when they do). A ``submitit_local`` job watches its launcher and stops,
KILLED, when it is gone (:func:`fstag.runs.job_guard.guard_job`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, List, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _plugin
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from fstag.runs import job_guard, sweep_jobs
from fstag.runs.isolated_launcher import JobDied, _StopRequest

log = logging.getLogger(__name__)

POLL_S = 1.0          # how often the launcher looks at its jobs
CANCEL_WAIT_S = 60.0  # after cancelling, how long it waits for the jobs to end before settling them
NATIVE_MARKERS = ("Fatal Python error", "Segmentation fault", "Bus error", "Aborted")


def _cause(job: Any, exc: BaseException | None) -> str:
    """Why a submitit job ended without a result, from its state and its stderr file (submitit does not
    report a local job's exit status: a job with no result and no error was killed by a signal)."""
    import submitit

    try:
        state = str(job.state)
    except Exception:  # noqa: BLE001
        state = "UNKNOWN"
    try:
        err = Path(job.paths.stderr).read_text(errors="replace")[-20000:]
    except OSError:
        err = ""
    marker = next((m for m in NATIVE_MARKERS if m in err), None)
    if marker:
        return f"crashed in native code ({marker}; submitit state {state})"
    if state.startswith("OUT_OF_ME"):
        return f"killed by SLURM: out of memory ({state})"
    if isinstance(exc, submitit.core.utils.FailedJobError):  # an error outside the job's own code (its traceback: stderr)
        last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or [""]
        return f"failed outside its job: {last[0][:200]} (submitit state {state})"
    if state not in ("FINISHED", "COMPLETED", "UNKNOWN", "NO PROCESS AND NO RESULT"):
        return f"ended without a result (submitit state {state})"
    return "killed by a signal (SIGKILL, the out-of-memory killer...): it ended without a result or an error"


class _Settling:
    """The plugin's ``launch`` (its executor set-up unchanged), waiting for all jobs (module docstring)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None
        num_jobs = len(job_overrides)
        assert num_jobs > 0
        params = self.params
        init_params = {"folder": self.params["submitit_folder"]}
        specific_init_keys = {"max_num_timeout"}
        init_params.update(**{f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x in specific_init_keys})
        init_keys = specific_init_keys | {"submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {x if x in baseparams else f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x not in init_keys}
        executor.update_parameters(**params)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: List[Any] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        return self._wait(jobs, job_overrides, initial_job_idx)

    def _wait(self, jobs: list, job_overrides, initial_job_idx: int) -> List[JobReturn]:
        returns: list[JobReturn | None] = [None] * len(jobs)
        with _StopRequest() as stop:
            while any(r is None for r in returns) and stop.signum is None:
                for k, job in enumerate(jobs):
                    if returns[k] is None and job.done():
                        returns[k] = self._collect(job, initial_job_idx + k, list(job_overrides[k]), None)
                time.sleep(POLL_S if any(r is None for r in returns) else 0)
            if stop.signum is not None:
                cause = sweep_jobs.stop_cause(stop.signum)
                left = [k for k, r in enumerate(returns) if r is None]
                log.error("%s: cancelling %d job(s)", cause, len(left))
                for k in left:
                    try:
                        jobs[k].cancel(check=False)
                    except Exception as exc:  # noqa: BLE001
                        log.warning("could not cancel job %s: %s", jobs[k].job_id, exc)
                deadline = time.monotonic() + CANCEL_WAIT_S
                while any(not jobs[k].done() for k in left) and time.monotonic() < deadline and stop.count < 2:
                    time.sleep(POLL_S)
                for k in left:
                    returns[k] = self._collect(jobs[k], initial_job_idx + k, list(job_overrides[k]), cause)
                sweep_jobs.LAUNCH["stopped"] = stop.signum
                raise job_guard.LaunchStopped(stop.signum)
        return returns  # type: ignore[return-value]

    def _collect(self, job: Any, num: int, overrides: list[str], stopped: str | None) -> JobReturn:
        exc: BaseException | None = None
        if stopped is None or job.done():
            try:
                return job.results()[0]
            except Exception as e:  # noqa: BLE001  (UncompletedJobError, FailedJobError...)
                exc = e
        status = sweep_jobs.KILLED if stopped else sweep_jobs.FAILED
        cause = stopped or _cause(job, exc)
        from fstag.runs.tracking import PARENT_RUN_ENV

        parent = os.environ.get(PARENT_RUN_ENV)
        folder = sweep_jobs.jobs_folder(str(self.config.hydra.sweep.dir), parent) if parent else None
        found = sweep_jobs.find_record(folder, num, os.environ.get(job_guard.LAUNCH_ENV)) if folder else None
        record = found[1] if found else {"job_dir": "", "num": num, "overrides": overrides,
                                          "launch": os.environ.get(job_guard.LAUNCH_ENV)}
        path = found[0] if found else (sweep_jobs.record_path(folder, num, None, overrides) if folder else None)
        record["stderr_file"] = str(job.paths.stderr)
        if record.get("status") not in (None, sweep_jobs.RUNNING) and record.get("status") != sweep_jobs.COMPLETED:
            cause = record.get("cause") or cause  # the job closed itself (stopped: JobStopped) before it ended
        record = sweep_jobs.settle(path, record, status, cause, OmegaConf.select(self.config, "mlflow.tracking_uri",
                                                                                  default=None),
                                   log_file=record.get("log_file") or str(job.paths.stderr))
        label = sweep_jobs.job_label(record, str(self.config.hydra.sweep.dir))
        log.error("job #%d %s (submitit job %s) %s; log: %s; stderr: %s", num, label, job.job_id, cause,
                  record.get("log_file"), job.paths.stderr)
        ret = JobReturn(overrides=overrides, status=JobStatus.FAILED)
        ret.return_value = JobDied(f"job #{num} {label} {cause}; log: {record.get('log_file')}")
        return ret


class LocalLauncher(_Settling, _plugin.LocalLauncher):
    """``hydra/launcher=submitit_local``: submitit's local executor, every job waited for."""


class SlurmLauncher(_Settling, _plugin.SlurmLauncher):
    """``hydra/launcher=submitit_slurm``: SLURM jobs, every job waited for."""
