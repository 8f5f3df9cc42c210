"""fstag's test suite (a regular package: a dependency that installs a top-level ``tests`` package, as
iterative-stratification's wheel does, must not shadow it)."""
