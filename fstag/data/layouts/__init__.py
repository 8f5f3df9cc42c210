"""Dataset layouts: how a data set's folder lists its clips, labels and test split (fstag.data.layouts.base),
one module each, registered by name for ``data.layout`` (fstag.data.layouts.registry):

- ``kaggle2018``: FSDKaggle2018 and the built-in demo (train.csv, audio_train/, audio_test/), single-label
"""

from fstag.data.layouts.base import TRAIN_COLUMNS, DatasetError, Layout, check_fname, read_csv_as_text
from fstag.data.layouts.registry import LAYOUTS, layout_class, open_layout, register_layout
from fstag.data.layouts import kaggle2018  # noqa: F401,E402  (registers itself)
from fstag.data.layouts.kaggle2018 import DatasetLayout

__all__ = ["LAYOUTS", "TRAIN_COLUMNS", "DatasetError", "DatasetLayout", "Layout", "check_fname", "layout_class",
           "open_layout", "read_csv_as_text", "register_layout"]
