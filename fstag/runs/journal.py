"""What a job logs to MLflow, on disk first: the run's journal, sent by a background thread.

A train job (and a blend) never talks to the tracking store from its own thread. Each call it makes (the run's
creation with its tags and params, metrics with their step and timestamp, artifacts, the final status) is
appended to ``<dir>/mlflow_journal.jsonl`` (one JSON object a line, written with one ``write`` on a file opened
for appending) and queued for a sender thread, which sends the entries in order with MLflow's own client and
appends an acknowledgement line for each one the store accepted. So:

- training never waits for the store: an outage only grows the backlog, kept on disk (and, up to
  ``queue_size`` entries, in memory; the rest is read back from the journal);
- an outage of any length loses nothing: when the store answers again the sender sends the backlog; a job
  that ends first leaves its journal, registered under ``<root>/.mlflow_pending/``, for
  ``python -m fstag.runs sync`` (:mod:`fstag.runs.sync`) or the next job of the same store to send later;
- resending is idempotent: only entries without an acknowledgement are sent again; metrics carry the step and
  timestamp they were logged with (an SQL store keeps one row per key, step, timestamp and value); the run is
  created once (found again by its tag ``fstag.journal_id`` when an acknowledgement was lost);
- a job that starts while the store is away trains under a local placeholder run id (``local-<hex>``), written
  to ``mlflow_run_id``; the run is created when the store answers and the placeholder replaced in
  ``mlflow_run_id``, ``run.json`` and ``blend.json``.

MLflow's own asynchronous logging (``log_batch(..., synchronous=False)``) is not used: its queue is unbounded
and in memory only, batches go to a pool of threads (no order), and a batch whose call fails after the HTTP
retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``..._BACKOFF_FACTOR``, ``..._TIMEOUT``: about four minutes by
default) is dropped with an error message. Those retries still apply to each call of the sender thread; between
failed calls it waits ``retry_max_s`` at most.

The journal is locked (``flock``) by the process that writes it; a second process (a ``sync``) skips or waits for it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from fstag.core.io import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

JOURNAL = "mlflow_journal.jsonl"
JOURNAL_GLOB = "mlflow_journal*.jsonl"  # the current one and superseded ones (mlflow_journal-<local id>.jsonl)
REJECTED = "mlflow_rejected.jsonl"      # entries the store refused (logged as warnings too)
SPOOL = ".mlflow_spool"                 # copies of artifacts that live outside the journal's folder
PENDING_DIR = ".mlflow_pending"         # under the project root: one pointer per journal not yet synced
LOCAL_PREFIX = "local-"
JOURNAL_TAG = "fstag.journal_id"
RECORDS = ("run.json", "blend.json")    # the records whose mlflow_run_id a resolved placeholder replaces
ID_FILE = "mlflow_run_id"
MAX_PARAM_LEN = 6000
# MLflow 3 opens an experiment on its GenAI pages unless the experiment says it is model development.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow's limits on one log_batch request
MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ENTITIES = 1000, 100, 100, 1000


@dataclass(frozen=True)
class Settings:
    """``mlflow.*`` keys of conf/mlflow/default.yaml that say how long a job waits for the store."""

    start_wait_s: float = 15.0   # at start: for the run to be created (not at all when the server does not answer)
    end_wait_s: float = 30.0     # at the end: for the backlog, as long as it moves; then the job ends unsynced
    queue_size: int = 1000       # entries held in memory for the sender (the rest wait in the journal on disk)
    retry_max_s: float = 30.0    # the longest pause of the sender between two failed calls
    sync_others_s: float = 30.0  # at the end of a synced job: time spent sending other jobs' journals (0: none)

    @classmethod
    def of(cls, node: Mapping | None) -> "Settings":
        node = dict(node or {})
        kw = {k: type(getattr(cls, k))(node[k]) for k in cls.__dataclass_fields__ if node.get(k) is not None}
        return cls(**kw)


def is_local_id(run_id: str | None) -> bool:
    """Whether ``run_id`` is a placeholder for a run the store has not created yet."""
    return bool(run_id) and str(run_id).startswith(LOCAL_PREFIX)


def pending_dir(root_dir: str | Path) -> Path:
    return Path(root_dir) / PENDING_DIR


class JournalError(RuntimeError):
    """A journal that cannot be opened or sent (the message names it and the way out)."""


class NoRunError(JournalError):
    """Entries whose run is not known yet (its creation is not in the journal): kept, never refused."""


# -- the store -------------------------------------------------------------------------------------------------

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


def log_params_flat(client, run_id: str, params: Mapping[str, Any]) -> None:
    """Log flattened params in batches (MLflow caps the value length and batch size)."""
    from mlflow.entities import Param

    items = [Param(str(k), str(v)[:MAX_PARAM_LEN]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


# -- reading -------------------------------------------------------------------------------------------------

@dataclass
class Contents:
    header: dict
    entries: list[dict]          # in seq order
    acked: set[int]
    run_id: str | None           # the store's id of the journal's run, once known


def read_journal(path: Path) -> Contents:
    """A journal's header, entries, acknowledged seqs and resolved run id. A torn last line (a writer killed
    mid-write) is skipped."""
    header: dict = {}
    entries: list[dict] = []
    acked: set[int] = set()
    run_id = None
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if "journal" in obj:
                header = obj
                run_id = obj.get("run_id") or run_id
            elif "seq" in obj:
                entries.append(obj)
            elif "ack" in obj:
                acked.update(int(s) for s in obj["ack"])
                run_id = obj.get("run_id") or run_id
    entries.sort(key=lambda e: e["seq"])
    return Contents(header, entries, acked, run_id)


# -- errors: an outage (retry later) or a refusal (never retried) -----------------------------------------------

_PERMANENT_STATUS = set(range(400, 500)) - {408, 429}


def is_permanent(exc: BaseException) -> bool:
    """A refusal by the store (a 4xx answer: bad value, unknown run, ...), as opposed to an outage."""
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        MlflowException = ()  # type: ignore[assignment]
    if isinstance(exc, NoRunError):
        return False
    if isinstance(exc, MlflowException):
        try:
            return int(exc.get_http_status_code()) in _PERMANENT_STATUS
        except Exception:  # noqa: BLE001
            return False
    try:
        import requests

        if isinstance(exc, requests.RequestException):
            return False
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return False
    return True  # a bug (TypeError, ValueError, ...): retrying would not help


def server_answers(tracking_uri: str, timeout: float = 2.0) -> bool:
    """Whether an http(s) tracking server answers at all (any HTTP status counts); other stores: True."""
    import urllib.error
    import urllib.request

    uri = str(tracking_uri)
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except Exception:  # noqa: BLE001  (refused, timed out, unknown host)
        return False


# -- the journal ------------------------------------------------------------------------------------------------

_open: dict[str, "RunJournal"] = {}  # this process's open journals, by path
_open_lock = threading.Lock()


def find_open(run_id: str | None) -> "RunJournal | None":
    """This process's open journal of run ``run_id`` (its placeholder or its store id)."""
    if not run_id:
        return None
    with _open_lock:
        for j in _open.values():
            if run_id in j.known_ids:
                return j
    return None


def _lock_file(path: Path, wait_s: float) -> int | None:
    """An fd of ``path`` (created if missing), opened for appending and flock-ed; None when another process
    holds it for longer than ``wait_s``. Retries when the file was renamed or removed meanwhile."""
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # locked a file that was renamed/removed meanwhile: lock the new one


class RunJournal:
    """One MLflow run's journal in ``directory``: ``open``, append (:meth:`client` gives the MlflowClient-like
    facade), ``start`` the sender, ``close``. :meth:`replay` sends it from the calling thread (``sync``)."""

    def __init__(self, path: Path, fd: int, contents: Contents, pending_root: Path | None, settings: Settings):
        self.path = path
        self.dir = path.parent
        self._fd = fd
        self.header = contents.header
        self.tracking_uri = str(self.header["tracking_uri"])
        self.local_id = str(self.header["local_id"])
        self.run_id: str | None = contents.run_id
        self.known_ids = {self.local_id} | ({self.run_id} if self.run_id else set())
        self.pending_root = pending_root
        self.settings = settings
        self._acked = set(contents.acked)
        self._seq = max([e["seq"] for e in contents.entries], default=0)
        self._cond = threading.Condition()
        self._queue: deque[dict] = deque()
        self._spilled = False
        unsent = [e for e in contents.entries if e["seq"] not in self._acked]
        self._queue.extend(unsent[: settings.queue_size])
        self._spilled = len(unsent) > settings.queue_size
        self._thread: threading.Thread | None = None
        self._stop = False
        self._kick = False
        self._single = False          # after a refused batch: send entries one by one until the next success
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.last_progress = time.monotonic()
        self._client = None
        self.sent = 0

    # -- opening ---------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, tracking_uri: str, *, expect: str | None = None, id_file: Path | None = None,
             pending_root: str | Path | None = None, settings: Settings | None = None, lock_wait_s: float = 120.0,
             start: bool = True) -> "RunJournal":
        """The journal of ``directory`` for the run ``expect`` (its store id or placeholder; None: a new run).
        An existing journal of another run or store is kept beside it as ``mlflow_journal-<local id>.jsonl``
        (still to be synced) and a new one started."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / JOURNAL
        settings = settings or Settings()
        with _open_lock:
            existing = _open.get(str(path))
        if existing is not None and existing._fits(tracking_uri, expect):
            return existing
        if existing is not None:
            existing.close(wait_s=0)
        root = Path(pending_root) if pending_root is not None else None
        fd = _lock_file(path, lock_wait_s)
        if fd is None:
            raise JournalError(f"{path} is locked by another process (a `python -m fstag.runs sync` or a job of this "
                               f"folder) for more than {lock_wait_s:.0f} s; wait for it to end, then rerun")
        contents = read_journal(path) if os.fstat(fd).st_size else None
        if contents is not None and contents.header:
            probe = cls(path, fd, contents, root, settings)
            if probe._fits(tracking_uri, expect):
                journal = probe
            else:
                probe._supersede()
                return cls.open(directory, tracking_uri, expect=expect, id_file=id_file, pending_root=pending_root,
                                settings=settings, lock_wait_s=lock_wait_s, start=start)
        else:
            os.ftruncate(fd, 0)  # empty or headless (killed while writing its first line)
            local = expect if is_local_id(expect) else LOCAL_PREFIX + uuid.uuid4().hex
            header = {"journal": 1, "local_id": local, "tracking_uri": str(tracking_uri),
                      "run_id": None if (expect is None or is_local_id(expect)) else str(expect),
                      "id_file": str(id_file) if id_file else None, "created": time.time()}
            os.write(fd, (json.dumps(header) + "\n").encode())
            journal = cls(path, fd, Contents(header, [], set(), header["run_id"]), root, settings)
        journal._terminate_torn_line()
        journal._register_pending()
        with _open_lock:
            _open[str(path)] = journal
        if start:
            journal.start()
        return journal

    def _fits(self, tracking_uri: str, expect: str | None) -> bool:
        """Whether this journal is the one of run ``expect`` in store ``tracking_uri`` (None: a new run, which
        never reuses a journal)."""
        return self.tracking_uri == str(tracking_uri) and expect is not None and expect in self.known_ids

    def _terminate_torn_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def _supersede(self) -> None:
        """Keep this journal (another run's, or another store's) as mlflow_journal-<local id>.jsonl."""
        target = self.dir / f"mlflow_journal-{self.local_id}.jsonl"
        os.replace(self.path, target)
        self._unregister_pending()
        self.path = target
        self._register_pending()
        log.warning("%s: an earlier MLflow run's journal with entries still to send is kept as %s "
                    "(python -m fstag.runs sync sends it)", self.dir, target.name)
        os.close(self._fd)
        self._fd = -1

    # -- the pending index ------------------------------------------------------------------------------------
    def _pointer(self) -> Path | None:
        if self.pending_root is None:
            return None
        return self.pending_root / (hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:20] + ".json")

    def _register_pending(self) -> None:
        ptr = self._pointer()
        if ptr is not None and not ptr.exists():
            write_json_atomic(ptr, {"journal": str(self.path.resolve()), "tracking_uri": self.tracking_uri})

    def _unregister_pending(self) -> None:
        ptr = self._pointer()
        if ptr is not None:
            ptr.unlink(missing_ok=True)

    # -- appending ----------------------------------------------------------------------------------------------
    @property
    def current_id(self) -> str:
        """The run's store id once known, else its placeholder."""
        return self.run_id or self.local_id

    def append(self, op: str, **fields: Any) -> int:
        """Journal one call; the sender sends it. Never waits for the store."""
        with self._cond:
            self._seq += 1
            entry = {"seq": self._seq, "op": op, **fields}
            try:
                self._write(entry)
            except OSError as exc:  # a full disk: the entry still goes out from memory if the store answers
                log.error("%s: cannot journal an MLflow %s (%s); it is kept in memory only", self.path, op, exc)
            if not self._spilled and len(self._queue) < self.settings.queue_size:
                self._queue.append(entry)
            else:
                self._spilled = True
            self._cond.notify_all()
            return self._seq

    def _write(self, obj: dict) -> None:
        data = (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
        if os.write(self._fd, data) != len(data):
            raise OSError(errno.ENOSPC, f"short write to {self.path}")

    def sync_to_disk(self) -> None:
        """fsync the journal: what it holds survives a crash of the machine too."""
        with self._cond:
            if self._fd >= 0:
                os.fsync(self._fd)

    def open_run(self, experiment: str, artifact_location: str | None, run_name: str, tags: Mapping[str, str],
                 params: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        """Journal the run's creation (``run_id`` None: find-or-create it; else reopen ``run_id``, creating a new
        run when the store does not have it). Returns the run's current id."""
        tags = {**{str(k): str(v) for k, v in tags.items()}, JOURNAL_TAG: self.local_id}
        self.append("open_run", experiment=str(experiment), artifact_location=artifact_location, run_name=str(run_name),
                    tags=tags, params={str(k): str(v)[:MAX_PARAM_LEN] for k, v in (params or {}).items()},
                    run_id=run_id if run_id and not is_local_id(run_id) else None)
        return self.current_id

    def client(self, timestamp_ms: int | None = None) -> "JournalClient":
        return JournalClient(self, timestamp_ms)

    # -- state ---------------------------------------------------------------------------------------------------
    def unsent(self) -> int:
        with self._cond:
            return self._seq - len(self._acked)

    def synced(self) -> bool:
        return self.unsent() == 0

    def _resolve(self, run_id: str) -> None:
        if self.run_id == run_id:
            return
        self.run_id = run_id
        id_file = self.header.get("id_file")
        if id_file and Path(id_file).is_file() and Path(id_file).read_text().strip() in self.known_ids | {""}:
            write_text_atomic(id_file, run_id + "\n")
        self.known_ids.add(run_id)
        log.debug("%s: MLflow run %s (placeholder %s)", self.dir, run_id, self.local_id)

    # -- sending -------------------------------------------------------------------------------------------------
    def _mlflow(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _next_batch(self) -> list[dict]:
        """The next entries to send: one, or consecutive log_batch entries merged up to MLflow's limits."""
        with self._cond:
            if not self._queue and self._spilled:
                self._reload()
            if not self._queue:
                return []
            first = self._queue[0]
            batch = [first]
            if first["op"] != "log_batch" or self._single:
                return batch
            n = _counts(first)
            for e in list(self._queue)[1:]:
                if e["op"] != "log_batch":
                    break
                m = _counts(e)
                if (n[0] + m[0] > MAX_METRICS or n[1] + m[1] > MAX_PARAMS or n[2] + m[2] > MAX_TAGS
                        or sum(n) + sum(m) > MAX_ENTITIES):
                    break
                n = tuple(a + b for a, b in zip(n, m))
                batch.append(e)
            return batch

    def _reload(self) -> None:
        """Refill the in-memory queue from the journal (it overflowed)."""
        contents = read_journal(self.path)
        self._acked |= contents.acked
        unsent = [e for e in contents.entries if e["seq"] not in self._acked]
        self._queue.extend(unsent[: self.settings.queue_size])
        self._spilled = len(unsent) > self.settings.queue_size

    def _ack(self, batch: list[dict], rejected: str | None = None) -> None:
        seqs = [e["seq"] for e in batch]
        line: dict[str, Any] = {"ack": seqs}
        if self.run_id and any(e["op"] == "open_run" for e in batch):
            line["run_id"] = self.run_id
        if rejected:
            line["rejected"] = rejected[:2000]
        with self._cond:
            try:
                if self._fd >= 0:
                    self._write(line)
            except OSError as exc:
                log.error("%s: cannot write an acknowledgement (%s); the entries may be sent again", self.path, exc)
            self._acked.update(seqs)
            for _ in seqs:
                if self._queue and self._queue[0]["seq"] in seqs:
                    self._queue.popleft()
            self._cond.notify_all()
        self.sent += len(seqs)
        self.last_progress = time.monotonic()

    def step(self) -> bool:
        """Send the next batch from the calling thread. True when something was sent (or refused and set aside),
        False when nothing is left; raises on an outage (the entries stay queued)."""
        batch = self._next_batch()
        if not batch:
            return False
        try:
            self._send(batch)
        except Exception as exc:  # noqa: BLE001
            if not is_permanent(exc):
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.failing_since is None:
                    with self._cond:  # wakes wait_resolved: no point waiting for a store that does not answer
                        self.failing_since = time.monotonic()
                        self._cond.notify_all()
                    log.warning("MLflow store %s does not answer (%s): %s keeps its backlog in %s and sends it later",
                                self.tracking_uri, self.last_error[:300], self.dir.name, self.path)
                raise
            if len(batch) > 1:  # find the entry it refuses
                self._single = True
                return True
            msg = f"{type(exc).__name__}: {exc}"
            log.warning("MLflow store %s refused %s of %s (%s); it is set aside in %s", self.tracking_uri,
                        batch[0]["op"], self.dir, msg[:500], self.dir / REJECTED)
            with contextlib.suppress(OSError), open(self.dir / REJECTED, "a") as fh:
                fh.write(json.dumps({**batch[0], "error": msg[:2000]}, default=str) + "\n")
            self._ack(batch, rejected=msg)
            return True
        if self.failing_since is not None:
            log.info("MLflow store %s answers again: sending the backlog of %s", self.tracking_uri, self.dir)
        self.failing_since, self.last_error, self._single = None, None, False
        self._ack(batch)
        return True

    def _send(self, batch: list[dict]) -> None:
        op = batch[0]["op"]
        if op == "open_run":
            self._open_run(batch[0])
            return
        run_id = self.run_id
        if run_id is None:
            raise NoRunError(f"{self.path}: no MLflow run to send to: the journal does not hold the run's creation "
                             f"(placeholder {self.local_id}); its entries stay here")
        client = self._mlflow()
        if op == "log_batch":
            from mlflow.entities import Metric, Param, RunTag

            metrics = [Metric(k, float(v), int(ts), int(step)) for e in batch for k, v, ts, step in e.get("metrics", [])]
            params = [Param(k, str(v)) for e in batch for k, v in e.get("params", [])]
            tags = [RunTag(k, str(v)) for e in batch for k, v in e.get("tags", [])]
            client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        elif op == "update_run":
            client.update_run(run_id, status=batch[0].get("status"), name=batch[0].get("name"))
        elif op == "set_terminated":
            client.set_terminated(run_id, batch[0]["status"], end_time=batch[0].get("end_time"))
        elif op == "log_artifact":
            src = Path(batch[0]["path"])
            if not src.is_file():
                raise JournalError(f"artifact {src} is gone; it cannot be sent")
            client.log_artifact(run_id, str(src), batch[0].get("artifact_path"))
        elif op == "log_artifacts":
            src = Path(batch[0]["path"])
            if not src.is_dir():
                raise JournalError(f"artifact folder {src} is gone; it cannot be sent")
            client.log_artifacts(run_id, str(src), batch[0].get("artifact_path"))
        elif op == "log_dict":
            content = batch[0]["dict"]
            if isinstance(content, dict) and content.get("mlflow_run_id") == self.local_id:
                content = {**content, "mlflow_run_id": run_id}
            client.log_dict(run_id, content, batch[0]["artifact_file"])
        elif op == "log_text":
            client.log_text(run_id, batch[0]["text"], batch[0]["artifact_file"])
        else:
            raise JournalError(f"{self.path}: unknown entry {op!r}")

    def _open_run(self, e: dict) -> None:
        from mlflow.exceptions import MlflowException

        client = self._mlflow()
        exp_id = ensure_experiment(self.tracking_uri, e["experiment"], e.get("artifact_location"))
        rid = self.run_id or e.get("run_id")
        if rid:
            try:
                client.get_run(rid)
            except MlflowException as exc:
                if not is_permanent(exc):
                    raise
                log.warning("%s names MLflow run %s, which %s does not have: starting a new run", self.dir, rid,
                            self.tracking_uri)
                rid = None
            else:
                client.update_run(rid, status="RUNNING")
                self._resolve(rid)
                return
        found = client.search_runs([exp_id], filter_string=f"tags.`{JOURNAL_TAG}` = '{self.local_id}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = client.create_run(exp_id, run_name=e["run_name"], tags=e.get("tags") or {}).info.run_id
        if e.get("params"):
            log_params_flat(client, run_id, e["params"])
        self._resolve(run_id)

    # -- the sender thread ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name=f"mlflow-journal:{self.dir.name}", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        pause = 0.5
        while True:
            with self._cond:
                while not self._stop and not self._queue and not self._spilled:
                    self._cond.wait(1.0)
                if self._stop:
                    return
            try:
                self.step()
                pause = 0.5
            except Exception:  # noqa: BLE001  (an outage: wait, then try again)
                self._pause(pause)
                pause = min(pause * 2, self.settings.retry_max_s)

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` before the next try, or less: a kick, a stop, or (a tracking server) its answering
        again, asked every second."""
        deadline = time.monotonic() + seconds
        http = self.tracking_uri.startswith(("http://", "https://"))
        with self._cond:
            self._kick = False
        while True:
            with self._cond:
                left = deadline - time.monotonic()
                if self._stop or self._kick or left <= 0:
                    return
                self._cond.wait_for(lambda: self._stop or self._kick, timeout=min(1.0, left))
            if http and time.monotonic() < deadline and server_answers(self.tracking_uri, timeout=1.0):
                return

    def kick(self) -> None:
        """Retry now (a waiting sender wakes up)."""
        with self._cond:
            self._kick = True
            self._cond.notify_all()

    def wait_resolved(self, wait_s: float) -> str:
        """Wait up to ``wait_s`` for the run's store id; not at all when an http server does not answer, and no
        longer once the sender has met an outage. Returns the current id."""
        if self.run_id or not server_answers(self.tracking_uri):
            return self.current_id
        deadline = time.monotonic() + wait_s
        with self._cond:
            self._cond.wait_for(lambda: self.run_id is not None or self.failing_since is not None
                                or time.monotonic() >= deadline, timeout=wait_s)
        if self.run_id is None:
            log.warning("MLflow store %s has not created the run of %s yet: it trains under the placeholder %s "
                        "(the run is created and the entries sent when the store answers)", self.tracking_uri,
                        self.dir, self.local_id)
        return self.current_id

    def flush(self, wait_s: float) -> bool:
        """Wait until every entry is acknowledged, as long as the backlog moves: give up after ``wait_s`` without
        an acknowledgement. True when everything was sent."""
        self.kick()
        start = time.monotonic()
        if self.failing_since is not None and not self.synced():
            log.info("waiting up to %.0f s (mlflow.end_wait_s) for the MLflow store %s to take the %d entries of %s",
                     wait_s, self.tracking_uri, self.unsent(), self.dir)
        with self._cond:
            while self._seq > len(self._acked):
                since = max(self.last_progress, start)
                left = since + wait_s - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    break
                self._cond.wait(min(left, 1.0))
            return self._seq == len(self._acked)

    def close(self, wait_s: float = 0.0) -> bool:
        """Flush (``wait_s``), stop the sender and release the journal. A fully sent journal is finalized: the
        placeholder replaced in the folder's records, ``mlflow_synced`` set in a complete run.json, the journal
        removed. Returns whether it was fully sent."""
        synced = self.flush(wait_s) if wait_s > 0 else self.synced()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        synced = self.synced()
        if synced:
            self.finalize()
        elif self.run_id is None:
            log.warning("%s: MLflow run not created yet (store %s away); placeholder %s. `python -m fstag.runs sync` "
                        "creates it and sends the %d entries journaled in %s", self.dir, self.tracking_uri,
                        self.local_id, self.unsent(), self.path)
        else:
            log.warning("%s: %d MLflow entries of run %s not sent (store %s away: %s); they are kept in %s: "
                        "`python -m fstag.runs sync` sends them", self.dir, self.unsent(), self.run_id,
                        self.tracking_uri, (self.last_error or "no answer")[:200], self.path)
        self._release()
        return synced

    def _release(self) -> None:
        with _open_lock:
            if _open.get(str(self.dir / JOURNAL)) is self:
                del _open[str(self.dir / JOURNAL)]
        with self._cond:
            if self._fd >= 0:
                os.close(self._fd)  # releases the flock
                self._fd = -1

    def finalize(self) -> None:
        """Everything was sent: patch the records, remove the spool, the journal and its pointer."""
        if self.run_id:
            for name in RECORDS:
                _patch_record(self.dir / name, self.local_id, self.run_id)
            id_file = self.header.get("id_file")
            if id_file and Path(id_file).is_file() and Path(id_file).read_text().strip() == self.local_id:
                write_text_atomic(id_file, self.run_id + "\n")
        shutil.rmtree(self.dir / SPOOL / self.local_id, ignore_errors=True)
        with contextlib.suppress(OSError):
            (self.dir / SPOOL).rmdir()
        self._unregister_pending()
        self.path.unlink(missing_ok=True)

    def replay(self, deadline: float | None = None) -> bool:
        """Send the backlog from this thread until done (True), an outage (raises) or ``deadline`` (False)."""
        while self.step():
            if deadline is not None and time.monotonic() >= deadline and not self.synced():
                return False
        return True


def _counts(entry: dict) -> tuple[int, int, int]:
    return len(entry.get("metrics", [])), len(entry.get("params", [])), len(entry.get("tags", []))


def _patch_record(path: Path, local_id: str, run_id: str) -> None:
    """run.json / blend.json: the placeholder replaced by the store's id; a complete run.json of this run marked
    ``mlflow_synced``."""
    if not path.is_file():
        return
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if rec.get("mlflow_run_id") not in (local_id, run_id):
        return  # another run's record (a superseded journal)
    new = dict(rec, mlflow_run_id=run_id)
    if path.name == "run.json" and rec.get("complete"):
        new["mlflow_synced"] = True
    if new != rec:
        write_json_atomic(path, new)


# -- the client facade -----------------------------------------------------------------------------------------

class JournalClient:
    """The calls of ``MlflowClient`` that fstag's jobs make, journaled instead of sent. The ``run_id`` argument
    must be the journal's run (its placeholder or store id). With ``timestamp_ms`` every metric carries that
    timestamp (a finish repeated after a crash then logs the same points, which the store keeps once)."""

    def __init__(self, journal: RunJournal, timestamp_ms: int | None = None):
        self.journal = journal
        self.timestamp_ms = timestamp_ms

    def _check(self, run_id: str | None) -> None:
        if run_id is not None and run_id not in self.journal.known_ids:
            raise ValueError(f"run {run_id} is not the run of journal {self.journal.path} ({self.journal.current_id})")

    def _ts(self, ts: int | None) -> int:
        if self.timestamp_ms is not None:
            return int(self.timestamp_ms)
        return int(ts) if ts is not None else int(time.time() * 1000)

    def log_metric(self, run_id, key, value, timestamp=None, step=None, **_: Any) -> None:
        self._check(run_id)
        self.journal.append("log_batch", metrics=[[str(key), float(value), self._ts(timestamp), int(step or 0)]])

    def log_batch(self, run_id, metrics: Iterable = (), params: Iterable = (), tags: Iterable = (), **_: Any) -> None:
        self._check(run_id)
        fields: dict[str, list] = {}
        if metrics:
            fields["metrics"] = [[m.key, float(m.value), self._ts(m.timestamp), int(m.step or 0)] for m in metrics]
        if params:
            fields["params"] = [[p.key, str(p.value)] for p in params]
        if tags:
            fields["tags"] = [[t.key, str(t.value)] for t in tags]
        if fields:
            self.journal.append("log_batch", **fields)

    def log_param(self, run_id, key, value, **_: Any) -> None:
        self._check(run_id)
        self.journal.append("log_batch", params=[[str(key), str(value)]])

    def set_tag(self, run_id, key, value, **_: Any) -> None:
        self._check(run_id)
        self.journal.append("log_batch", tags=[[str(key), str(value)]])

    def update_run(self, run_id, status=None, name=None) -> None:
        self._check(run_id)
        self.journal.append("update_run", status=status, name=name)

    def set_terminated(self, run_id, status="FINISHED", end_time=None) -> None:
        self._check(run_id)
        self.journal.append("set_terminated", status=str(status), end_time=int(end_time or time.time() * 1000))

    def _stable(self, path: Path, is_dir: bool) -> Path:
        """``path`` itself when it lives in the journal's folder (a job's own files), else a copy in the spool
        (a temporary file, or one a later run may overwrite, must still be there when it is sent)."""
        path = Path(path).resolve()
        try:
            path.relative_to(self.journal.dir.resolve())
            if SPOOL not in path.parts:
                return path
        except ValueError:
            pass
        target = self.journal.dir / SPOOL / self.journal.local_id / f"{self.journal._seq + 1:06d}" / path.name
        if is_dir:
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(path, tmp)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        else:
            with atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)
        return target

    def log_artifact(self, run_id, local_path, artifact_path=None) -> None:
        self._check(run_id)
        self.journal.append("log_artifact", path=str(self._stable(Path(local_path), False)), artifact_path=artifact_path)

    def log_artifacts(self, run_id, local_dir, artifact_path=None) -> None:
        self._check(run_id)
        self.journal.append("log_artifacts", path=str(self._stable(Path(local_dir), True)), artifact_path=artifact_path)

    def log_dict(self, run_id, dictionary, artifact_file) -> None:
        self._check(run_id)
        self.journal.append("log_dict", dict=json.loads(json.dumps(dictionary, default=str)), artifact_file=str(artifact_file))

    def log_text(self, run_id, text, artifact_file) -> None:
        self._check(run_id)
        self.journal.append("log_text", text=str(text), artifact_file=str(artifact_file))


# -- syncing journals left behind ---------------------------------------------------------------------------------

def pending_journals(pending_root: str | Path) -> list[tuple[Path, str]]:
    """The journals the pending index of ``pending_root`` names (``(path, tracking_uri)``), dropping pointers to
    journals that are gone."""
    out = []
    root = Path(pending_root)
    if not root.is_dir():
        return out
    for ptr in sorted(root.glob("*.json")):
        try:
            rec = json.loads(ptr.read_text())
        except (OSError, ValueError):
            continue
        path = Path(rec.get("journal", ""))
        if not path.is_file():
            ptr.unlink(missing_ok=True)
            continue
        out.append((path, str(rec.get("tracking_uri", ""))))
    return out


@dataclass
class SyncResult:
    path: Path
    status: str          # synced | busy | unreachable | partial | empty
    run_id: str | None
    sent: int
    left: int
    message: str = ""


def sync_journal(path: Path, pending_root: str | Path | None = None, deadline: float | None = None,
                 lock_wait_s: float = 0.0) -> SyncResult:
    """Send one journal left behind, from this thread, into the run it names (creating the run when only its
    placeholder is known) and finalize it. A journal another process holds is skipped (``busy``)."""
    path = Path(path)
    with _open_lock:
        if str(path) in _open:
            return SyncResult(path, "busy", None, 0, -1, "open in this process")
    fd = _lock_file(path, lock_wait_s)
    if fd is None:
        return SyncResult(path, "busy", None, 0, -1, "held by a running job or another sync")
    contents = read_journal(path)
    if not contents.header:
        os.close(fd)
        return SyncResult(path, "empty", None, 0, 0, "no header: not a journal")
    journal = RunJournal(path, fd, contents, Path(pending_root) if pending_root is not None else None, Settings())
    try:
        journal._terminate_torn_line()
        if not server_answers(journal.tracking_uri):
            return SyncResult(path, "unreachable", journal.run_id, 0, journal.unsent(),
                              f"the tracking server {journal.tracking_uri} does not answer")
        try:
            done = journal.replay(deadline)
        except Exception as exc:  # noqa: BLE001  (an outage: what was sent stays acknowledged)
            return SyncResult(path, "unreachable", journal.run_id, journal.sent, journal.unsent(),
                              f"{journal.tracking_uri}: {type(exc).__name__}: {str(exc)[:300]}")
        if not done:
            return SyncResult(path, "partial", journal.run_id, journal.sent, journal.unsent(), "out of time")
        journal.finalize()
        return SyncResult(path, "synced", journal.run_id, journal.sent, 0)
    finally:
        journal._release()


def sync_pending(tracking_uri: str, pending_root: str | Path, budget_s: float) -> list[SyncResult]:
    """Send the journals other jobs of ``tracking_uri`` left behind, for about ``budget_s`` seconds (the next job
    of a store catches up with the ones an outage left)."""
    if budget_s <= 0:
        return []
    deadline = time.monotonic() + budget_s
    results = []
    for path, uri in pending_journals(pending_root):
        if uri != str(tracking_uri) or time.monotonic() >= deadline:
            continue
        res = sync_journal(path, pending_root, deadline)
        if res.status in ("synced", "partial"):
            log.info("sent %d MLflow entries another job left in %s (%s)", res.sent, path, res.status)
        results.append(res)
        if res.status == "unreachable":
            break
    return results
