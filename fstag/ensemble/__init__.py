"""From finished runs to a submission: blend means and OOF weights (:mod:`.blending`), calibration
(:mod:`.calibration`), the checked ``blend`` config (:mod:`.spec`), Kaggle submissions (:mod:`.submission`), the blend's per-class reports
(:mod:`.blend_reports`) and the blend job (:mod:`.job`).

May import: :mod:`fstag.core`, :mod:`fstag.data`, :mod:`fstag.runs`, :mod:`fstag.evaluate` (it reads
runs' saved predictions, never a model).
"""
