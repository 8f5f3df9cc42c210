"""A trained module applied to clips: per-clip probabilities by TTA crops or whole-clip windows
(:mod:`.predictor`), the same without torch for a network run by onnxruntime (:mod:`.numpy_predictor`, what a
served ONNX model runs), their shared names and crop seeds (:mod:`.modes`), and the predict job (:mod:`.job`:
runs -> test or folder predictions).

May import: :mod:`fstag.core`, :mod:`fstag.data`, :mod:`fstag.runs`, :mod:`fstag.evaluate`, :mod:`fstag.models`.
"""
