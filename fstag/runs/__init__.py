"""Run bookkeeping: a job's variant and identity (:mod:`.identity`), the on-disk contract of its directory
(:mod:`.run_dir`), finding runs by name, directory or MLflow id (:mod:`.members`), MLflow tracking
(:mod:`.tracking`), the sweep's parent run (:mod:`.hydra_callbacks`), GPU leases for parallel jobs
(:mod:`.launchers`) and the ``${fstag.*}`` resolvers of conf/ (:mod:`.resolvers`).

May import: :mod:`fstag.core`, :mod:`fstag.data`.
"""
