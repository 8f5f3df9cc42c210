"""The core every package may use: config helpers (:mod:`.config`), atomic file writes (:mod:`.io`) and the
task's shape, single-label or multi-label, that every other package asks (:mod:`.task`).

Imports nothing else of fstag.
"""
