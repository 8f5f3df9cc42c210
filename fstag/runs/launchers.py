"""What Hydra's launchers get from fstag (conf/hydra/launcher/*.yaml and the ``launcher`` keys of conf/train.yaml):

- ``${fstag.n_jobs:}``: parallel jobs of ``hydra/launcher=joblib``: ``launcher.jobs_per_gpu`` per device of
  ``launcher.gpus`` (the visible CUDA devices when null), else one per CPU as joblib counts them (affinity
  and cgroup quotas included);
- :func:`lease_gpu`: each job's process (``hydra/launcher=joblib``: :mod:`fstag.runs.isolated_launcher`)
  leases one *slot* (a device and a slot number on it), so the jobs of a sweep spread over the GPUs and at
  most ``jobs_per_gpu`` share one (each job uses ``trainer.devices=1``). A slot is an ``flock`` on a file
  (:func:`lease_folder`), which the kernel drops when the holding process dies however it dies, so a dead
  job's slot goes to the next job. The lease travels to the job as ``FSTAG_DEVICE_LEASE``
  (``<device>:<slot>``), which the job records in run.json and as an MLflow tag (:func:`current_lease`).

``launcher.jobs_per_gpu: auto`` is :data:`AUTO_JOBS_PER_GPU` jobs on a GPU of at least
:data:`AUTO_MIN_GPU_GB` GB, else one. The figure is issue 16's measurement on one H200 at the seed's batch
(128 clips of 3x64x150, resnext101_32x4d, bf16): one training process is launch-bound at ~2,600 samples/s,
four at once make ~8,770 samples/s together (3.4x). A GPU's memory is read from ``nvidia-smi`` (no CUDA
context in the launching process); where it cannot be read, auto is one job per GPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

AUTO_JOBS_PER_GPU = 4     # jobs at once on a large GPU (issue 16: 4 processes = 3.4x one on an H200)
AUTO_MIN_GPU_GB = 40.0    # a GPU of at least this much memory takes AUTO_JOBS_PER_GPU jobs (auto)
LEASE_ENV = "FSTAG_DEVICE_LEASE"  # the running job's slot, "<device>:<slot>" (set by lease_gpu)
JOBS_PER_GPU_KEY = "launcher.jobs_per_gpu"
GPUS_KEY = "launcher.gpus"

_lease = None  # this worker process's slot: (locked descriptor, device, slot), held for the life of the process


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (``[]`` without CUDA)."""
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",") if s.strip()] if env else [str(k) for k in range(n)]
    return ids[:n]


def device_list(gpus=None) -> list[str]:
    """``launcher.gpus`` as ``CUDA_VISIBLE_DEVICES`` entries: the list given, or the visible devices (null)."""
    if gpus is None:
        return visible_gpus()
    if isinstance(gpus, (str, int)) or not all(isinstance(g, (str, int)) and str(g).strip() for g in gpus) or not len(gpus):
        raise ValueError(f"{GPUS_KEY}={gpus!r}: a list of CUDA device ids such as [0,1] (CUDA_VISIBLE_DEVICES "
                         f"entries), or null for the visible devices")
    return [str(g).strip() for g in gpus]


def gpu_memory_gb(gpus: list[str]) -> float | None:
    """The smallest total memory, in GB, of ``gpus`` as ``nvidia-smi`` reports it (matched by index or UUID;
    all listed devices when none matches); None where nvidia-smi is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.count(",") >= 2]
    mib = {r[0]: float(r[2]) for r in rows if r[2].replace(".", "", 1).isdigit()}
    mib.update({r[1]: float(r[2]) for r in rows if r[2].replace(".", "", 1).isdigit()})
    chosen = [mib[g] for g in gpus if g in mib] or list(mib.values())
    return min(chosen) * 1024**2 / 1e9 if chosen else None


def jobs_per_gpu(value, gpus: list[str]) -> int:
    """``launcher.jobs_per_gpu``: a positive number, or ``auto`` (see the module docstring)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        if not gpus:
            return 1
        gb = gpu_memory_gb(gpus)
        k = AUTO_JOBS_PER_GPU if gb is not None and gb >= AUTO_MIN_GPU_GB else 1
        log.debug("%s=auto: %d (GPU memory %s GB)", JOBS_PER_GPU_KEY, k, "unknown" if gb is None else f"{gb:.0f}")
        return k
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit() or int(value) < 1:
        raise ValueError(f"{JOBS_PER_GPU_KEY}={value!r}: a positive number of jobs at once on each GPU, or auto "
                         f"({AUTO_JOBS_PER_GPU} on a GPU of >= {AUTO_MIN_GPU_GB:.0f} GB, else 1)")
    return int(value)


def launch_plan(launcher_cfg) -> tuple[list[str], int]:
    """(devices, jobs per device) of the ``launcher`` config node (a mapping, or None for the defaults)."""
    cfg = launcher_cfg or {}
    gpus = device_list(cfg.get("gpus"))
    return gpus, jobs_per_gpu(cfg.get("jobs_per_gpu", "auto"), gpus)


def n_jobs(launcher_cfg=None) -> int:
    """Devices x jobs per device, else one per CPU (``joblib.cpu_count()``)."""
    gpus, k = launch_plan(launcher_cfg)
    if gpus:
        return len(gpus) * k
    import joblib

    return max(1, int(joblib.cpu_count()))


def slots(gpus: list[str], per_gpu: int) -> list[tuple[str, int]]:
    """Every (device, slot) pair, slot by slot: the first workers go to different devices."""
    return [(g, s) for s in range(per_gpu) for g in gpus]


def _try_lock(path: Path) -> int | None:
    """An exclusive ``flock`` on ``path`` without waiting: the open descriptor (kept open, the lock lasts as
    long as it does) or None when another process holds it. The kernel drops the lock when the holder's
    last descriptor closes, so a process that dies, however it dies (SIGKILL, the OOM killer, a crash in
    native code), frees its slot; its forked children (DataLoader workers) share the descriptor and hold the
    lock until they exit too (they notice their parent is gone within seconds)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)  # the holder, for whoever looks: "<pid>"
    os.write(fd, str(os.getpid()).encode())
    return fd


def lease_folder(key: str) -> Path:
    """The folder of a launch's slot locks (``<temp>/fstag-gpus-<key>/<device>-<slot>.lock``)."""
    return Path(tempfile.gettempdir()) / f"fstag-gpus-{key}"


def lease_gpu(gpus: list[str], key: str, per_gpu: int = 1, wait_s: float = 0.0) -> str | None:
    """Pin this process to a slot of ``gpus`` (``per_gpu`` slots each) that no other process of the launch
    ``key`` holds.

    Sets ``CUDA_VISIBLE_DEVICES`` to the slot's device (call it before CUDA starts in the process) and
    ``FSTAG_DEVICE_LEASE`` to ``<device>:<slot>``. The lease is an ``flock`` on a file per slot below the
    temp folder (:func:`lease_folder`), held until the process ends; a process keeps its slot for every job
    it runs, and a process that dies frees it for the next one (:func:`_try_lock`). When every slot is
    held, it tries again for up to ``wait_s`` seconds (a dead job's DataLoader workers may hold its slot a
    few seconds longer). Returns the device, or None when no slot came free (CUDA left as is).
    """
    global _lease
    if _lease is not None:
        return _lease[1]
    folder = lease_folder(key)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(0.0, float(wait_s))
    while True:
        for gpu, slot in slots(gpus, max(1, int(per_gpu))):
            fd = _try_lock(folder / f"{gpu}-{slot}.lock")
            if fd is None:
                continue
            _lease = (fd, gpu, slot)
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            os.environ[LEASE_ENV] = f"{gpu}:{slot}"
            log.info("this worker (pid %d) trains on GPU %s, slot %d of %d", os.getpid(), gpu, slot, per_gpu)
            return gpu
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    log.warning("all %d slots of GPUs %s are leased by other workers of this launch; CUDA_VISIBLE_DEVICES left "
                "as is", len(gpus) * per_gpu, gpus)
    return None


def current_lease() -> str | None:
    """The running job's slot, ``<device>:<slot>``, when a launcher leased one (else None)."""
    return os.environ.get(LEASE_ENV) or None
