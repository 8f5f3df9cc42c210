"""Entry points started from a warm interpreter: the tests' `python train.py ...` without paying the imports.

Each test process of the suite starts a few hundred entry points (``train.py``, ``predict.py``,
``blend.py``, ``python -m fstag.runs``, ...), and most of each one's CPU time is importing torch, Lightning,
MLflow and Hydra (about 8-10 s of CPU on the 2-core CI machine), not the tiny job it runs. Here a server
process imports those once and forks a child per command; the child changes to the command's folder and
environment, points its standard streams at files and runs the script or module as ``__main__``, exactly
as ``python <script> <args>`` / ``python -m <module> <args>`` would (``sys.argv``, ``sys.path[0]``, exit code,
traceback on an uncaught exception, ``atexit`` handlers at exit). It is still a real process of its own:
a child's own subprocesses (joblib workers, DDP ranks, the demo generator's pool) start fresh.

What a fork cannot change is what an interpreter reads from its environment while it starts or imports
the warm modules (``PYTHONPATH``, ``OMP_NUM_THREADS``, ``HF_HUB_OFFLINE``, ...): a server serves only
commands whose environment matches its own, apart from :data:`LATE_READ` (read when used), and a command
with another environment gets a server of its own. ``FSTAG_TEST_FRESH_PROCESSES=1`` (or ``fresh=True``)
starts every command in a new interpreter instead.

Protocol (the server's stdin/stdout, one JSON object a line): the client sends ``{"argv", "cwd", "env",
"out", "err"}``, the server answers ``{"pid"}`` once the child runs and ``{"rc"}`` when it has ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# Imported once by the server: what every entry point imports and nothing fstag or the test changes.
WARM_MODULES = ("numpy", "pandas", "scipy.signal", "torch", "torchvision", "pytorch_lightning", "pytorch_lightning.loggers",
                "torchmetrics", "timm", "librosa", "soundfile", "matplotlib.pyplot", "filelock", "sqlalchemy", "alembic",
                "mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store",
                "mlflow.store.model_registry.sqlalchemy_store", "hydra", "hydra._internal.hydra", "hydra.core.plugins",
                "omegaconf")
# fstag's modules behind the entry points, imported by the server too (best effort: one that fails to import
# is left to the child, which then fails as `python <script>` would). They read no environment variable
# while importing; a session's servers keep the code they imported, so an edit to fstag/ during a test
# session reaches only fresh interpreters (the tests of a checkout see that checkout).
FSTAG_MODULES = ("fstag.runs.resolvers", "fstag.runs.hydra_callbacks", "fstag.runs.launchers", "fstag.runs.listing",
                 "fstag.data.job", "fstag.train.job", "fstag.infer.job", "fstag.ensemble.job")
# Environment variables read only when used (so a child may differ from its server in them).
LATE_READ_PREFIXES = ("FSTAG_", "MLFLOW_")
LATE_READ = {"HYDRA_FULL_ERROR", "PYTHONUNBUFFERED", "PWD", "OLDPWD",
             "PYTEST_CURRENT_TEST"}  # pytest's name of the running test: another value in every test


def startup_env(env: dict) -> tuple:
    """The part of an environment a server must share with its commands."""
    return tuple(sorted((k, v) for k, v in env.items()
                        if k not in LATE_READ and not k.startswith(LATE_READ_PREFIXES)))


# -- the server -------------------------------------------------------------------------------------------

def _child(request: dict) -> None:
    """In the forked child: become ``python <argv[1:]>`` in the request's folder and environment."""
    import runpy

    os.setpgid(0, 0)  # its own process group, like a command a shell starts: a kill reaches its workers too
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import numpy as np

    np.random.seed()  # a new interpreter's global NumPy state is fresh entropy, not the server's
    args = request["argv"][1:]
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        sys.path[0] = str(Path(args[0]).resolve().parent)
        runpy.run_path(args[0], run_name="__main__")
    # falling off the end: exit code 0 (_end_child runs the interpreter's exit steps)


def _exit_code(exc: SystemExit) -> int:
    """The exit status the interpreter gives an uncaught ``SystemExit`` (printing a message code)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _end_child(request: dict) -> None:
    """Run the command in the forked child and end it as the interpreter would: the exit code of a
    ``SystemExit`` or 1 with the traceback of an uncaught exception, then the interpreter's shutdown steps
    (waiting for non-daemon threads, atexit handlers, flushing the streams) and ``os._exit``. The last step
    skips the C++ static destructors a normal exit runs: in a forked child those of libraries the server had
    loaded (onnxruntime, which torchmetrics imports when it is installed) join thread pools that exist only in
    the parent and abort the child ("terminate called after throwing ... std::system_error")."""
    import atexit
    import threading
    import traceback

    code = 0
    try:
        _child(request)
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # noqa: BLE001  (an uncaught exception ends python with status 1 and its traceback)
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()  # as the interpreter does first: wait for the non-daemon threads
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = code or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)


def serve() -> None:
    for name in WARM_MODULES:
        __import__(name)
    for name in FSTAG_MODULES:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001  (the child imports it again and reports the error)
            for mod in [m for m in sys.modules if m == "fstag" or m.startswith("fstag.")]:
                del sys.modules[mod]
            break
    reply = sys.stdout
    reply.write(json.dumps({"ready": os.getpid()}) + "\n")
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _end_child(request)  # never returns
        reply.write(json.dumps({"pid": pid}) + "\n")
        reply.flush()
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        reply.write(json.dumps({"rc": rc}) + "\n")
        reply.flush()


# -- the client (the test process) ----------------------------------------------------------------------

class WarmServer:
    """One server process for one start-up environment."""

    def __init__(self, env: dict):
        self.proc = subprocess.Popen([sys.executable, __file__], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0)
        self._pending = b""
        self._read(timeout=300)  # {"ready": pid}
        self.lock = threading.Lock()

    def _read(self, timeout: float | None) -> dict:
        """The server's next answer (our own buffer over the pipe: select() cannot see a reader's buffer)."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the warm interpreter {self.proc.pid} ended ({self.proc.poll()})")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def _send(self, request: dict) -> None:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()

    def run(self, cmd: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        with self.lock, tempfile.TemporaryDirectory(prefix="warm-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            self._send({"argv": cmd, "cwd": str(cwd), "env": env, "out": str(out), "err": str(err)})
            pid = self._read(timeout=60)["pid"]
            try:
                rc = self._read(timeout=timeout)["rc"]
                timed_out = False
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):  # it may just have ended
                    os.killpg(pid, signal.SIGKILL)
                rc = self._read(timeout=60)["rc"]
                timed_out = True
            stdout = out.read_text(errors="replace") if out.exists() else ""
            stderr = err.read_text(errors="replace") if err.exists() else ""
        if timed_out:
            raise subprocess.TimeoutExpired(cmd, timeout, output=stdout, stderr=stderr)
        return subprocess.CompletedProcess(cmd, rc, stdout, stderr)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


_servers: dict[tuple, WarmServer] = {}
MAX_SERVERS = 4  # distinct start-up environments kept warm at once; beyond that, fresh interpreters


def run(cmd: list[str], cwd: Path, env: dict, timeout: float, fresh: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)`` for a
    ``[sys.executable, ...]`` command, from a warm interpreter when it can be."""
    key = startup_env(env)
    if fresh or os.environ.get("FSTAG_TEST_FRESH_PROCESSES") == "1" or (key not in _servers and len(_servers) >= MAX_SERVERS):
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if key not in _servers:
        _servers[key] = WarmServer(env)
    return _servers[key].run(cmd, cwd, env, timeout)


def close_all() -> None:
    for server in _servers.values():
        server.close()
    _servers.clear()


if __name__ == "__main__":
    serve()
