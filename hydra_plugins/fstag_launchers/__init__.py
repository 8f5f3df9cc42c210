"""fstag's Hydra launchers, where Hydra looks for plugins (the ``hydra_plugins`` namespace package: a launcher
named by ``_target_`` must live here). The code is in :mod:`fstag.runs.isolated_launcher` and
:mod:`fstag.runs.submitit_launchers`; :mod:`.launchers` names its classes for conf/hydra/launcher/."""
