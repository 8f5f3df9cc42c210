"""What Hydra's launchers get from fstag (conf/hydra/launcher/*.yaml):

- ``${fstag.n_jobs:}``: parallel jobs of ``hydra/launcher=joblib``: one per visible CUDA device, else one
  per CPU as joblib counts them (affinity and cgroup quotas included);
- :func:`lease_gpu`: one GPU per joblib worker process, so the jobs of a sweep spread over the GPUs
  instead of all training on the first one (each job uses ``trainer.devices=1``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_lease = None  # this worker process's GPU lock (held for the life of the process)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (``[]`` without CUDA)."""
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",") if s.strip()] if env else [str(k) for k in range(n)]
    return ids[:n]


def n_jobs() -> int:
    """One job per visible GPU, else one per CPU (``joblib.cpu_count()``)."""
    gpus = visible_gpus()
    if gpus:
        return len(gpus)
    import joblib

    return max(1, int(joblib.cpu_count()))


def lease_gpu(gpus: list[str], key: str) -> str | None:
    """Pin this process to one of ``gpus`` that no other process of the launch ``key`` holds.

    Sets ``CUDA_VISIBLE_DEVICES`` to that device (call it before CUDA starts in the process). The lease is a
    lock file per device below the temp folder, held until the process ends; a process keeps its device
    for every job it runs. Returns the device, or None when every device is taken (CUDA left as is).
    """
    global _lease
    if _lease is not None:
        return _lease[1]
    from filelock import FileLock, Timeout

    folder = Path(tempfile.gettempdir()) / f"fstag-gpus-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        lock = FileLock(str(folder / f"{gpu}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        _lease = (lock, gpu)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        log.info("this worker (pid %d) trains on GPU %s", os.getpid(), gpu)
        return gpu
    log.warning("all GPUs %s are leased by other workers of this launch; CUDA_VISIBLE_DEVICES left as is", gpus)
    return None
