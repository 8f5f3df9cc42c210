"""fstag: general-purpose audio tagging (FSDKaggle2018-style) with Hydra, Lightning and MLflow.

The packages follow the data from left to right, over a small core::

    core  <  data  <  runs  <  evaluate  <  models  <  infer  <  train  <  ensemble  <  serve

- :mod:`fstag.core`      config helpers and atomic file writes
- :mod:`fstag.data`      audio -> features -> the feature cache; dataset layout, folds; the preprocess job
- :mod:`fstag.runs`      a job's identity, its directory, finding runs, MLflow tracking, Hydra glue
- :mod:`fstag.evaluate`  metrics and per-class reports
- :mod:`fstag.models`    backbones and the LightningModule with its augmentations, losses and schedules
- :mod:`fstag.infer`     a trained module applied to clips (TTA crops or windows); the predict job
- :mod:`fstag.train`     fold data, Lightning parts, DDP glue; the train job
- :mod:`fstag.ensemble`  blends, calibration, submissions; the blend job
- :mod:`fstag.serve`     a blend or runs as one MLflow model: registered, served over HTTP, exported to ONNX

The one rule: a module imports from its own package and from packages to its left, never to its right
(lazy imports inside functions included), and no modules import each other in a circle
(tests/test_layout.py checks it). Each entry point's work is ``fstag/<package>/job.py``;
:mod:`fstag.demo_job` runs the four entry points on the demo data; :mod:`fstag.export` (``python -m fstag.export``)
packages runs as an MLflow model.
"""

__version__ = "0.1.0"
