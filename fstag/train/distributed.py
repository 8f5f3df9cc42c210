"""Multi-process training glue. Lightning's DDP starts ranks > 0 by running the command line again
(``python train.py <argv>``, with the job's Hydra run dir appended); inside a Hydra multirun that command
line is the whole sweep, so every extra rank would start the sweep again. ``job_command`` re-runs this
one job instead: its own overrides as a single run in its directory. ``ranks_end_with_fit`` ends a
job's ranks with its fit, so that the next job of a multirun starts its own."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Sequence

# Hydra overrides that make a command a sweep (or choose how a sweep launches); a rank's command drops them.
CONFIG_OPTIONS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
SWEEP_ONLY = ("hydra.mode", "hydra/launcher", "hydra/sweeper", "hydra.launcher", "hydra.sweeper", "hydra.sweep")
# What Lightning's launcher writes into the launching process's environment when it starts the extra ranks.
# Left there, the next Trainer in this process reads LOCAL_RANK as "the ranks are started by someone else"
# and waits for ranks that never come.
RANK_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """(command, cwd) starting rank ``local_rank`` of the running Hydra job as a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import get_original_cwd, to_absolute_path

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return _lightning_command(local_rank)
    hydra_overrides = [o for o in hc.overrides.hydra if not o.split("=", 1)[0].lstrip("+~").startswith(SWEEP_ONLY)]
    command = [sys.executable, to_absolute_path(sys.argv[0]), *hc.overrides.task, *hydra_overrides,
               f'hydra.run.dir="{hc.runtime.output_dir}"', f"hydra.job.name=train_ddp_process_{local_rank}",
               "hydra.output_subdir=null", *_config_options(sys.argv[1:])]
    return command, get_original_cwd()


def _config_options(argv: Sequence[str]) -> list[str]:
    """Hydra's --config-dir/-path/-name options of a command line, with their values."""
    out, take = [], False
    for arg in argv:
        if take:
            out.append(arg)
            take = False
        elif arg.split("=", 1)[0] in CONFIG_OPTIONS:
            out.append(arg)
            take = "=" not in arg
    return out


def _lightning_command(local_rank: int):
    from lightning_fabric.strategies.launchers.subprocess_script import _hydra_subprocess_cmd

    return _hydra_subprocess_cmd(local_rank=local_rank)


def relaunch_ranks_as_jobs() -> None:
    """Make Lightning start a multirun job's extra DDP ranks with ``job_command`` (idempotent)."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = job_command


@contextlib.contextmanager
def ranks_end_with_fit() -> Iterator[None]:
    """Around a Trainer's fit: afterwards, close the process group (Lightning would reuse it, with ranks
    that have exited) and restore the rank variables of the environment as they were before, so the next
    job of a multirun in this process starts its own ranks. Predicting after the fit needs neither."""
    before = {k: os.environ.get(k) for k in RANK_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
