"""How good predictions are: MAP@3 and accuracy, lwlrap and mAP (:mod:`.metrics`), per-class reports logged to MLflow
(:mod:`.reports`).

May import: :mod:`fstag.core`, :mod:`fstag.data`, :mod:`fstag.runs`.
"""
