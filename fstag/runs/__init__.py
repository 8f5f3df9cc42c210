"""Run bookkeeping: a job's variant and identity (:mod:`.identity`), the on-disk contract of its directory
(:mod:`.run_dir`), an experiment's jobs and sweeps as rows (:mod:`.catalog`), member selectors by pattern,
sweep or rank (:mod:`.selectors`), finding runs by name, directory, selector or MLflow id (:mod:`.members`),
the runs listing ``python -m fstag.runs`` (:mod:`.listing`, run by :mod:`.__main__`), MLflow tracking and the UI's address
(:mod:`.tracking`), the journal that sends a job's MLflow calls without making it wait (:mod:`.journal`) and
``python -m fstag.runs sync`` for the journals an outage left (:mod:`.sync`), the sweep's parent run (:mod:`.hydra_callbacks`) and its summary (:mod:`.sweep_summary`),
GPU leases for parallel jobs (:mod:`.launchers`), fstag's launchers that keep one job's death one job's failure
(:mod:`.isolated_launcher`, :mod:`.submitit_launchers`), a job's stop signals and its launcher's death
(:mod:`.job_guard`), a launch's job records and settling a dead job (:mod:`.sweep_jobs`) and the ``${fstag.*}`` resolvers of conf/ (:mod:`.resolvers`).

May import: :mod:`fstag.core`, :mod:`fstag.data`.
"""
