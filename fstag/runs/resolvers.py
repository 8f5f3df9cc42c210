"""The ``${fstag.*}`` resolvers that conf/ uses, registered on import (every entry point imports this
module before Hydra composes):

- ``${fstag.abspath:<path>}``: the path made absolute against the current working directory;
- ``${fstag.n_jobs:}``: the joblib launcher's default parallelism, from the config's ``launcher`` keys
  (:func:`fstag.runs.launchers.n_jobs`);
- ``${fstag.variant:<stage>}``: the running job's variant for that stage (:mod:`fstag.runs.identity`);
- ``${fstag.task:<task>,<attribute>}``: an attribute of a task (:mod:`fstag.core.task`: ``monitor``,
  ``val_metric``, ``primary``);
- ``${fstag.fold:<fold>}``: a ``fold=`` value as the job folder spells it (``given`` is fold 0).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from omegaconf import OmegaConf


def _abspath(path: str) -> str:
    return str(Path(os.path.expanduser(str(path))).resolve())


def _n_jobs(*, _root_) -> int:
    from fstag.runs import launchers

    node = OmegaConf.select(_root_, "launcher", default=None)
    return launchers.n_jobs(OmegaConf.to_container(node, resolve=True) if node is not None else None)


def _task(name: str, attribute: str):
    from fstag.core.task import get_task

    return getattr(get_task(name), str(attribute))


def _fold(fold) -> str:
    from fstag.data.folds import GIVEN_FOLD

    return "0" if str(fold) == GIVEN_FOLD else str(fold)


def register_resolvers() -> None:
    """Register the resolvers once per process (a second call does nothing)."""
    if not OmegaConf.has_resolver("fstag.abspath"):
        OmegaConf.register_new_resolver("fstag.abspath", _abspath)
    if not OmegaConf.has_resolver("fstag.n_jobs"):
        OmegaConf.register_new_resolver("fstag.n_jobs", _n_jobs)
    if not OmegaConf.has_resolver("fstag.task"):
        OmegaConf.register_new_resolver("fstag.task", _task)
    if not OmegaConf.has_resolver("fstag.fold"):
        OmegaConf.register_new_resolver("fstag.fold", _fold)
    from fstag.runs.identity import register_resolver

    register_resolver()


register_resolvers()

# conf/hydra/launcher/{joblib,submitit_local,submitit_slurm}.yaml replace the launcher plugins' configs of
# the same names with fstag's defaults (so `hydra/launcher=submitit_slurm` works as typed); each names its
# `_target_` and every key, so Hydra 1.3's matching with the plugin's schema only validates them. Its
# deprecation notice about that matching would be printed on every launch.
warnings.filterwarnings(
    "ignore", message=r"\s*'hydra/launcher/(joblib|submitit_local|submitit_slurm)' is validated against ConfigStore schema",
    category=UserWarning)
