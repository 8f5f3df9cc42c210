"""How a job and its launch treat signals, so that one job's death is one job's failure and a stopped launch
stops its jobs (docs/failures.md):

- :func:`describe_exit`: the cause of a process's end as people read it (``killed by SIGKILL (signal 9)``,
  ``crashed in native code (SIGSEGV, signal 11)``), from its exit code;
- :class:`JobStopped`: raised in a job's main thread when it is asked to stop (SIGTERM, SIGINT or SIGHUP, or
  its launcher is gone); an ``Exception``, so Hydra's ``run_job`` ends the job FAILED and calls
  ``on_job_end``, where :class:`fstag.runs.hydra_callbacks.MlflowSweepCallback` marks its run KILLED;
- :class:`LaunchStopped`: raised in the launching process when the launch itself is stopped; a
  ``SystemExit`` (code 128 + the signal), so it unwinds Lightning, Hydra and the sweeper and the command
  exits as a stopped one does, after ``atexit`` has closed the sweep (its parent run KILLED);
- :func:`guard_job`: in a job that runs in a process of its own (``hydra/launcher=joblib``,
  ``submitit_local``), the stop handlers, a watchdog that stops the job when its launcher is gone (and
  ``PR_SET_PDEATHSIG`` on Linux: the parent's death sends SIGTERM), a hard deadline once stopping, and
  ``faulthandler`` writing a native crash's Python traceback into the job's log;
- the launch's identity (:data:`LAUNCH_ENV`: ``<host>:<pid>:<start>``), which every job of the launch
  inherits, so records and watchdogs know whose job they are and whether its launcher still runs.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from hydra.errors import CompactHydraException

log = logging.getLogger(__name__)

LAUNCH_ENV = "FSTAG_LAUNCH"      # "<host>:<pid>:<start ticks>" of the launching process (set at the launch's start)
STOP_NOTE_ENV = "FSTAG_STOP_NOTE"  # a file whose text, when present, is why the launch stops its jobs
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 60.0  # a stopping job that has not ended after this long exits at once (its run is closed for it)
WATCHDOG_S = 1.0     # how often a job checks that its launcher still runs
NATIVE_CRASH = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}

_guarded: dict = {}  # this process's guard: {"launch": ..., "stopping": signum}
_fault_file = None   # the open log file faulthandler writes into


# -- causes -------------------------------------------------------------------------------------------------

def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_signal(signum: int) -> str:
    name = signal_name(signum)
    if signum in NATIVE_CRASH:
        return f"crashed in native code ({name}, signal {signum})"
    if signum == signal.SIGKILL:
        return f"killed by SIGKILL (signal {signum}; the out-of-memory killer sends it too)"
    return f"killed by {name} (signal {signum})"


def describe_exit(exitcode: int | None) -> str:
    """The cause of a job process's end without a result: ``exitcode`` as multiprocessing gives it
    (negative: the signal that killed it) or as a shell does (128 + signal)."""
    if exitcode is None:
        return "did not end"
    if exitcode < 0:
        return describe_signal(-exitcode)
    if exitcode > 128 and exitcode - 128 in signal.valid_signals():
        return f"exited with status {exitcode} ({signal_name(exitcode - 128)}) without a result"
    return f"exited with status {exitcode} without a result"


class JobStopped(CompactHydraException):
    """A job asked to stop (a signal, or its launcher gone): its run ends KILLED with ``cause``. (An
    ``Exception``; Hydra prints a compact one as its message alone.)"""

    status = "KILLED"

    def __init__(self, cause: str, signum: int | None = None, launcher_gone: bool = False) -> None:
        super().__init__(cause)
        self.cause, self.signum, self.launcher_gone = cause, signum, launcher_gone

    def __reduce__(self):
        return (type(self), (self.cause, self.signum, self.launcher_gone))


class LaunchStopped(SystemExit):
    """The launch itself was stopped by ``signum``: exits with 128 + signum once the sweep is closed."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    def __reduce__(self):
        return (type(self), (self.signum,))


# -- the launch's identity ----------------------------------------------------------------------------------

def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat``), which tells a process from a
    later one given the same pid; '' where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def launch_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{process_start(pid)}"


def parse_launch(launch: str | None) -> tuple[str, int, str] | None:
    try:
        host, pid, start = str(launch).rsplit(":", 2)
        return host, int(pid), start
    except (ValueError, AttributeError):
        return None


def process_alive(host: str, pid: int, start: str = "") -> bool | None:
    """Whether process ``pid`` (started at ``start``) still runs: None when it is on another host."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start and process_start(pid) not in ("", start):
        return False  # the pid was given to another process
    try:  # a zombie (ended, not yet reaped) has ended
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def launcher_alive(launch: str | None = None) -> bool | None:
    parsed = parse_launch(launch if launch is not None else os.environ.get(LAUNCH_ENV))
    return None if parsed is None else process_alive(*parsed)


def in_launcher_process() -> bool:
    """True in the launching process itself (Hydra's basic launcher runs its jobs there)."""
    parsed = parse_launch(os.environ.get(LAUNCH_ENV))
    return parsed is None or (parsed[0] == socket.gethostname() and parsed[1] == os.getpid())


# -- in a job ----------------------------------------------------------------------------------------------

def write_faults_to(log_file: str | os.PathLike | None) -> None:
    """Let faulthandler write the Python traceback of a crash in native code (SIGSEGV, SIGBUS, SIGABRT...)
    into the job's log file (instead of stderr), where the failure table points; a process running several
    jobs one after the other writes into the latest job's."""
    global _fault_file
    if not log_file:
        return
    try:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_file, "a")  # noqa: SIM115  (faulthandler needs it open for the life of the job)
    except OSError:
        return
    faulthandler.enable(file=fh, all_threads=True)
    if _fault_file is not None:
        _fault_file.close()
    _fault_file = fh


def _stop_cause(signum: int) -> tuple[str, bool]:
    note = os.environ.get(STOP_NOTE_ENV)
    if note:
        try:
            text = Path(note).read_text().strip()
            if text:
                return text, False
        except OSError:
            pass
    if launcher_alive() is False:
        parsed = parse_launch(os.environ.get(LAUNCH_ENV))
        return f"stopped: its launcher (pid {parsed[1] if parsed else '?'}) is gone", True
    return f"stopped by {signal_name(signum)}", False


def _on_stop_signal(signum: int, frame) -> None:
    if os.getpid() != _guarded.get("pid"):  # a process forked from the job (a DataLoader worker): as before
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _guarded.get("stopping"):
        return  # already stopping; the hard deadline (or the launcher's SIGKILL) ends it
    _guarded["stopping"] = signum
    cause, gone = _stop_cause(signum)
    grace = float(_guarded.get("grace_s", STOP_GRACE_S))
    timer = threading.Timer(grace, os._exit, (128 + signum,))
    timer.daemon = True
    timer.start()
    log.error("job (pid %d) %s; closing its run (at most %.0f s)", os.getpid(), cause, grace)
    raise JobStopped(cause, signum, gone)


def _watchdog(launch: str) -> None:
    while not _guarded.get("stopping"):
        time.sleep(WATCHDOG_S)
        if launcher_alive(launch) is False and not _guarded.get("stopping"):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            return


def set_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Linux: have the kernel send ``signum`` to this process when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signum), 0, 0, 0) == 0  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return False


def guard_job(grace_s: float = STOP_GRACE_S, parent_death: bool = True) -> bool:
    """Install the job-side guard in a job that runs in a process of its own (idempotent; the main thread
    only). Returns False where it does not apply: in the launching process (Hydra's basic launcher), without
    a launch, or in a SLURM job (submitit handles SLURM's signals; a cluster job outlives its submitter)."""
    if _guarded or threading.current_thread() is not threading.main_thread():
        return bool(_guarded)
    launch = os.environ.get(LAUNCH_ENV)
    if not launch or in_launcher_process() or os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        return False
    _guarded.update(launch=launch, grace_s=float(grace_s), stopping=None, pid=os.getpid())
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)
    if parent_death:
        set_parent_death_signal(signal.SIGTERM)
    if launcher_alive(launch) is not None:  # same host: watch it
        threading.Thread(target=_watchdog, args=(launch,), name="fstag-launcher-watchdog", daemon=True).start()
    if launcher_alive(launch) is False:  # it died before the guard was up
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    return True


def stopping() -> int | None:
    """The signal this job is stopping on, if any."""
    return _guarded.get("stopping")
