"""From trained runs or a blend to a service: a bundle folder holding everything needed to tag audio
(:mod:`.bundle`), each member network as ONNX checked against PyTorch (:mod:`.onnx_export`), the runtime that tags
a batch of clips as predict.py does (:mod:`.tagger`), its MLflow pyfunc face with signature and input example
(:mod:`.pyfunc`, loaded as MLflow's "model from code" through :mod:`.model_code`), logging, registering and
aliasing it in the Model Registry (:mod:`.registry`), and the two ways there, ``blend.py ... blend.register=<name>``
and ``python -m fstag.export`` (:mod:`.job`).

May import every other package (it packages what they make: features from :mod:`fstag.data`, runs from
:mod:`fstag.runs`, networks from :mod:`fstag.models`, the predictor from :mod:`fstag.infer`, blend maths and
calibration from :mod:`fstag.ensemble`); nothing imports it but the entry points.
"""
