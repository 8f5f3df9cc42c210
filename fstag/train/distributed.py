"""Multi-process training glue. Lightning's DDP starts ranks > 0 by running the command line again
(``python train.py <argv>``, with the job's Hydra run dir appended); inside a Hydra multirun that command
line is the whole sweep, so every extra rank would start the sweep again. ``job_command`` re-runs this
one job instead: its own overrides as a single run in its directory."""

from __future__ import annotations

import sys
from typing import Sequence

# Hydra overrides that make a command a sweep (or choose how a sweep launches); a rank's command drops them.
CONFIG_OPTIONS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")
SWEEP_ONLY = ("hydra.mode", "hydra/launcher", "hydra/sweeper", "hydra.launcher", "hydra.sweeper", "hydra.sweep")


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
