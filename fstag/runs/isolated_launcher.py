"""fstag's parallel launcher (``hydra/launcher=joblib``, conf/hydra/launcher/joblib.yaml): each job of a sweep
in a process of its own, ``n_jobs`` at a time, so that one job's death is one job's failure.

Hydra's joblib plugin runs the jobs in a loky pool: when one worker dies (SIGKILL, the out-of-memory killer,
a crash in native code) loky breaks the whole pool, stops the healthy jobs and never starts the rest, and
their MLflow runs stay RUNNING. Here the launcher starts one process per job and watches them:

- a job that dies is settled (:func:`fstag.runs.sweep_jobs.settle`: its run FAILED with the cause, e.g.
  ``killed by SIGKILL (signal 9)``, its record, ``failure.json``) and the next job starts in its place; its
  GPU slot (:func:`fstag.runs.launchers.lease_gpu`, an flock the dead process no longer holds) goes to the
  next job; the launch goes on to the end, then exits non-zero with a table of the failed jobs;
- stopping the launch (Ctrl-C, SIGTERM, SIGHUP) stops its jobs: each gets SIGTERM, closes its run KILLED
  (:class:`fstag.runs.job_guard.JobStopped`) and ends, or is killed after ``stop_grace_s``; jobs not started
  are not started; the command exits with 128 + the signal. A second Ctrl-C kills the jobs at once;
- when the launcher itself is killed (SIGKILL), its jobs see it (the kernel's parent-death signal, a
  watchdog: :func:`fstag.runs.job_guard.guard_job`), close their runs KILLED and end: no orphans train on.

Each job computes on the usable cores divided among the ``n_jobs`` at once (``OMP_NUM_THREADS`` and the BLAS
libraries' variables, and torch's threads; a value the launch's environment sets wins), as the joblib plugin's
loky workers did: two jobs on two cores run one thread each.

Processes start from a fork server (``backend: null``, the default) that has imported the job's modules once
(``preload``), so no job imports torch, Lightning and MLflow again, and each job's process is fresh (no state
left by another job; the server never starts CUDA, so each job's ``CUDA_VISIBLE_DEVICES`` holds);
``backend: spawn`` starts each job in a new interpreter instead.
The plugin's other keys (``prefer``, ``pre_dispatch``, ``batch_size``...) are accepted and unused.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

from fstag.runs import job_guard, sweep_jobs

log = logging.getLogger(__name__)

PRELOAD = ("fstag.train.job",)  # what the fork server imports once (torch, Lightning, MLflow, fstag's job)
# The thread pools a job may size from the environment; each job gets cores // n_jobs threads unless the
# launch's environment sets them (as Hydra's joblib plugin's loky workers got them: joblib's own rule).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def job_threads(n_jobs: int) -> int:
    """Threads per job when ``n_jobs`` run at once: the usable cores divided among them (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(n_jobs)))


def limit_threads(threads: int) -> None:
    """In a job's process: ``threads`` compute threads for torch and the BLAS libraries, unless the launch's
    environment says otherwise (then its ``OMP_NUM_THREADS`` holds for torch too). Two jobs on two cores each
    with two threads would contend for the cores (and sum floats in another order than one thread does)."""
    given = os.environ.get("OMP_NUM_THREADS")
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    import torch

    torch.set_num_threads(int(given) if given and given.isdigit() and int(given) > 0 else threads)


class JobDied(CompactHydraException):
    """A job's process ended without a result (a signal, the OOM killer, a crash in native code)."""


@dataclass
class _Job:
    num: int
    overrides: list[str]
    proc: Any
    result: Path
    started: float


class _StopRequest:
    """The launcher's SIGINT / SIGTERM / SIGHUP while it runs jobs: remembered, acted on by the loop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        self.count += 1
        self.signum = self.signum or signum

    def __enter__(self) -> "_StopRequest":
        for sig in job_guard.STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _n_jobs(value: Any) -> int:
    n = int(value) if value is not None else 1
    if n <= 0:  # joblib's convention: -1 all CPUs, -2 all but one ...
        n = max(1, (os.cpu_count() or 1) + 1 + n)
    return n


class IsolatedLauncher(Launcher):
    """Each job in its own process, ``n_jobs`` at once (see the module docstring)."""

    leases_gpus = True  # MlflowSweepCallback leases each job a GPU slot (launcher.jobs_per_gpu)

    def __init__(self, n_jobs: int = 1, backend: str | None = None, stop_grace_s: float = job_guard.STOP_GRACE_S,
                 preload: Sequence[str] = PRELOAD, **unused: Any) -> None:
        self.n_jobs = _n_jobs(n_jobs)
        method = str(backend or "forkserver").lower()
        if method in ("loky", "multiprocessing", "forkserver"):
            method = "forkserver"
        if method not in ("forkserver", "spawn"):
            raise ValueError(f"hydra.launcher.backend={backend!r}: null (a fork server, the default) or spawn "
                             f"(each job in a new interpreter)")
        self.start_method = method if method in multiprocessing.get_all_start_methods() else "spawn"
        self.stop_grace_s = float(stop_grace_s)
        self.preload = [str(m) for m in preload or ()]
        self.config: DictConfig | None = None
        self.task_function = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    # -------------------------------------------------------------------------------------------------
    def _context(self):
        ctx = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload(self.preload)
        return ctx

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import cloudpickle
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, setup_globals

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        n = len(job_overrides)
        log.info("Launching %d job(s), %d at a time, each in a process of its own (sweep output dir: %s)",
                 n, self.n_jobs, sweep_dir)
        for k, overrides in enumerate(job_overrides):
            log.info("\t#%d : %s", initial_job_idx + k, " ".join(filter_overrides(overrides)))
        shared = cloudpickle.dumps((self.hydra_context, self.config, self.task_function, Singleton.get_state()))
        tmp = Path(tempfile.mkdtemp(prefix="fstag-launch-"))
        note = tmp / "stop"
        ctx = self._context()
        todo = collections.deque(range(n))
        running: dict[int, _Job] = {}
        returns: list[JobReturn | None] = [None] * n
        killed: set[int] = set()
        deadline = None
        try:
            with _StopRequest() as stop:
                while todo or running:
                    while todo and len(running) < self.n_jobs and stop.signum is None:
                        k = todo.popleft()
                        num = initial_job_idx + k
                        result = tmp / f"{num}.pkl"
                        proc = ctx.Process(target=_job_main, name=f"fstag-job-{num}", daemon=False, args=(
                            shared, num, list(job_overrides[k]), str(result), str(note), self.stop_grace_s, list(sys.argv),
                            job_threads(self.n_jobs)))
                        proc.start()
                        running[k] = _Job(num, list(job_overrides[k]), proc, result, time.time())
                    if not running:
                        break
                    by_sentinel = {j.proc.sentinel: k for k, j in running.items()}
                    for s in multiprocessing.connection.wait(list(by_sentinel), timeout=0.25):
                        k = by_sentinel[s]
                        job = running.pop(k)
                        job.proc.join()
                        returns[k] = self._collect(job, stop.signum, k in killed)
                    if stop.signum is not None and running:
                        if deadline is None:  # first: ask every job to stop
                            note.write_text(sweep_jobs.stop_cause(stop.signum))
                            log.error("%s: stopping %d running job(s) (SIGTERM; killed after %.0f s)",
                                      sweep_jobs.stop_cause(stop.signum), len(running), self.stop_grace_s)
                            for job in running.values():
                                _signal(job.proc.pid, signal.SIGTERM, group=False)
                            deadline = time.monotonic() + self.stop_grace_s
                        elif time.monotonic() > deadline or stop.count > 1:
                            for k, job in running.items():
                                if k not in killed:
                                    _signal(job.proc.pid, signal.SIGKILL, group=True)
                                    killed.add(k)
        finally:
            for k, job in running.items():  # only on an error of the launcher itself: leave nothing behind
                _signal(job.proc.pid, signal.SIGKILL, group=True)
                job.proc.join(timeout=30)
            shutil.rmtree(tmp, ignore_errors=True)
        if stop.signum is not None:
            sweep_jobs.LAUNCH["stopped"] = stop.signum
            sweep_jobs.LAUNCH["not_started"] = [list(job_overrides[k]) for k in todo]
            raise job_guard.LaunchStopped(stop.signum)
        assert all(r is not None for r in returns)
        return returns  # type: ignore[return-value]

    def _collect(self, job: _Job, stopping: int | None, killed: bool) -> JobReturn:
        """The job's JobReturn: its own (it ended, Hydra's on_job_end ran in it), or, for a job that died,
        a FAILED one after settling it (its run, failure.json, record)."""
        import cloudpickle

        if job.result.is_file():
            try:
                return cloudpickle.loads(job.result.read_bytes())
            except Exception as exc:  # noqa: BLE001
                log.warning("job #%d: its result could not be read (%s); counted as failed", job.num, exc)
        cause = job_guard.describe_exit(job.proc.exitcode)
        status = sweep_jobs.FAILED
        if stopping is not None:
            status = sweep_jobs.KILLED
            cause = sweep_jobs.stop_cause(stopping) + (f"; killed after {self.stop_grace_s:.0f} s" if killed else f"; it {cause}")
        found = self._record(job)
        record = found[1] if found else {"job_dir": "", "num": job.num, "overrides": job.overrides,
                                          "launch": os.environ.get(job_guard.LAUNCH_ENV)}
        path = found[0] if found else self._new_record_path(job)
        record = sweep_jobs.settle(path, record, status, cause, self._uri())
        where = record.get("log_file") or "(it died before it opened its log)"
        label = sweep_jobs.job_label(record, str(self.config.hydra.sweep.dir))
        log.error("job #%d %s %s; log: %s", job.num, label, cause, where)
        ret = JobReturn(overrides=job.overrides, status=JobStatus.FAILED)
        ret.return_value = JobDied(f"job #{job.num} {label} {cause}; log: {where}")
        return ret

    def _uri(self) -> str | None:
        return OmegaConf.select(self.config, "mlflow.tracking_uri", default=None)

    def _folder(self) -> Path | None:
        from fstag.runs.tracking import PARENT_RUN_ENV

        parent = os.environ.get(PARENT_RUN_ENV)
        return sweep_jobs.jobs_folder(str(self.config.hydra.sweep.dir), parent) if parent else None

    def _record(self, job: _Job):
        folder = self._folder()
        return sweep_jobs.find_record(folder, job.num, os.environ.get(job_guard.LAUNCH_ENV)) if folder else None

    def _new_record_path(self, job: _Job) -> Path | None:
        folder = self._folder()
        return sweep_jobs.record_path(folder, job.num, None, job.overrides) if folder else None


class JoblibLauncher(IsolatedLauncher):
    """:class:`IsolatedLauncher` under the name ``hydra/launcher=joblib`` (conf/hydra/launcher/joblib.yaml):
    the keys of Hydra's joblib plugin, ``n_jobs`` and ``backend`` used, the rest accepted."""


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)  # the job and its own children (DataLoader workers): each job leads its group
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- in the job's process -----------------------------------------------------------------------------------

def _job_main(shared: bytes, num: int, overrides: list[str], result: str, note: str, grace_s: float,
              argv: list[str], threads: int = 1) -> None:
    """Run one job of the sweep (Hydra's ``run_job``, as the joblib plugin's worker does) on ``threads``
    compute threads (:func:`limit_threads`) and leave its JobReturn in ``result``."""
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    try:
        os.setpgid(0, 0)  # its own process group: the launcher stops it and its children together
    except OSError:
        pass
    sys.argv = list(argv)  # as the launching command (Lightning's DDP ranks re-run it: fstag.train.distributed)
    os.environ[job_guard.STOP_NOTE_ENV] = note
    limit_threads(threads)
    job_guard.guard_job(grace_s)
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    try:
        hydra_context, config, task_function, singleton_state = cloudpickle.loads(shared)
        setup_globals()
        Singleton.set_state(singleton_state)
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{num}"
            sweep_config.hydra.job.num = num
        HydraConfig.instance().set_config(sweep_config)
        ret = run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    except BaseException as exc:  # noqa: BLE001  (stopped outside the task, or Hydra itself failed)
        ret.status, ret.return_value = JobStatus.FAILED, exc
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
        exc = ret._return_value
        if not isinstance(exc, job_guard.JobStopped):
            log.error("job #%d (%s) failed:\n%s", num, " ".join(overrides),
                      "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        try:
            cloudpickle.loads(cloudpickle.dumps(exc))
        except Exception:  # noqa: BLE001  (an exception that does not travel: its text does)
            ret.return_value = RuntimeError(f"{type(exc).__name__}: {exc}")
    from fstag.core.io import write_bytes_atomic

    write_bytes_atomic(result, cloudpickle.dumps(ret))
