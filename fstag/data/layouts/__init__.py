"""Dataset layouts: how a data set's folder lists its clips, labels and test split (:mod:`.base`), one module
each, registered by name for ``data.layout`` (:mod:`.registry`); test labels files (:mod:`.test_labels`):

- ``kaggle2018`` (:mod:`.kaggle2018`): FSDKaggle2018 and the built-in demo (train.csv, audio_train/,
  audio_test/), single-label
- ``fsdkaggle2019`` (:mod:`.fsdkaggle2019`): FSDKaggle2019 and the multi-label demo (train_curated.csv,
  optional train_noisy.csv, test/, sample_submission.csv whose columns are the vocabulary), multi-label
- ``fsd50k`` (:mod:`.fsd50k`): FSD50K (FSD50K.ground_truth/dev.csv, eval.csv, vocabulary.csv; its own
  train/val split for ``folds.method=given``), multi-label
- ``folders`` (:mod:`.folders`): class folders, ``train/<label>/**`` (optional ``test/``), single-label
"""

from fstag.data.layouts.base import TRAIN_COLUMNS, DatasetError, Layout, check_fname, read_csv_as_text
from fstag.data.layouts.registry import LAYOUTS, layout_class, open_layout, register_layout
from fstag.data.layouts import kaggle2018  # noqa: F401,E402  (registers itself)
from fstag.data.layouts import fsdkaggle2019  # noqa: F401,E402  (registers itself)
from fstag.data.layouts import fsd50k  # noqa: F401,E402  (registers itself)
from fstag.data.layouts import folders  # noqa: F401,E402  (registers itself)
from fstag.data.layouts.kaggle2018 import DatasetLayout

__all__ = ["LAYOUTS", "TRAIN_COLUMNS", "DatasetError", "DatasetLayout", "Layout", "check_fname", "layout_class",
           "open_layout", "read_csv_as_text", "register_layout"]
