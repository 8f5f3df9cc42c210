"""How good predictions are: MAP@3 and accuracy (:mod:`.metrics`), per-class reports logged to MLflow
(:mod:`.reports`).

May import: :mod:`fstag.core`, :mod:`fstag.data`, :mod:`fstag.runs`.
"""
