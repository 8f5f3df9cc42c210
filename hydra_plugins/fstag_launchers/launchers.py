"""The classes conf/hydra/launcher/*.yaml name (``_target_: hydra_plugins.fstag_launchers.launchers.<class>``):

- ``JoblibLauncher`` (``hydra/launcher=joblib``): each job in a process of its own, ``n_jobs`` at a time
  (:mod:`fstag.runs.isolated_launcher`);
- ``LocalLauncher`` / ``SlurmLauncher`` (``hydra/launcher=submitit_local`` / ``submitit_slurm``): Hydra's
  submitit launchers, waiting for every job however each ends (:mod:`fstag.runs.submitit_launchers`).
"""

from fstag.runs.isolated_launcher import JoblibLauncher as _JoblibLauncher
from fstag.runs.submitit_launchers import LocalLauncher as _LocalLauncher
from fstag.runs.submitit_launchers import SlurmLauncher as _SlurmLauncher


class JoblibLauncher(_JoblibLauncher):
    __doc__ = _JoblibLauncher.__doc__


class LocalLauncher(_LocalLauncher):
    __doc__ = _LocalLauncher.__doc__


class SlurmLauncher(_SlurmLauncher):
    __doc__ = _SlurmLauncher.__doc__
