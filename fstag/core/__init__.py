"""The core every package may use: config helpers (:mod:`.config`) and atomic file writes (:mod:`.io`).

Imports nothing else of fstag.
"""
