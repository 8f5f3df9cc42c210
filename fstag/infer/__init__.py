"""A trained module applied to clips: per-clip probabilities by TTA crops or whole-clip windows
(:mod:`.predictor`) and the predict job (:mod:`.job`: runs -> test or folder predictions).

May import: :mod:`fstag.core`, :mod:`fstag.data`, :mod:`fstag.runs`, :mod:`fstag.evaluate`, :mod:`fstag.models`.
"""
