"""Run bookkeeping: a job's variant and identity (:mod:`.identity`), the on-disk contract of its directory
(:mod:`.run_dir`), an experiment's jobs and sweeps as rows (:mod:`.catalog`), member selectors by pattern,
sweep or rank (:mod:`.selectors`), finding runs by name, directory, selector or MLflow id (:mod:`.members`),
the runs listing ``python -m fstag.runs`` (:mod:`.listing`, run by :mod:`.__main__`), MLflow tracking and the UI's address
(:mod:`.tracking`), the sweep's parent run (:mod:`.hydra_callbacks`) and its summary (:mod:`.sweep_summary`),
GPU leases for parallel jobs (:mod:`.launchers`) and the ``${fstag.*}`` resolvers of conf/ (:mod:`.resolvers`).

May import: :mod:`fstag.core`, :mod:`fstag.data`.
"""
