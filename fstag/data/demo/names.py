"""File, folder and split names of the demo data set, and the seed streams of its splits."""

from __future__ import annotations

from fstag.data.layouts.fsdkaggle2019 import AUDIO_DIRS as _ML_DIRS
from fstag.data.layouts.fsdkaggle2019 import CURATED_CSV, NOISY_CSV
from fstag.data.layouts.fsdkaggle2019 import SAMPLE_SUBMISSION_CSV as _ML_SAMPLE_SUBMISSION_CSV
from fstag.data.layouts.fsdkaggle2019 import TEST_LABELS_CSV as _ML_TEST_LABELS_CSV
from fstag.data.layouts.kaggle2018 import AUDIO_DIRS, SAMPLE_SUBMISSION_CSV, TRAIN_CSV

TEST_LABELS_CSV = "test_post_competition.csv"
TRUTH_CSV = ".demo_truth.csv"
SHIFTED_SPLIT = "test_shifted"  # the split's name in .demo_truth.csv
SHIFTED_DIR = "audio_test_shifted"
SHIFTED_LABELS_CSV = "test_shifted.csv"  # fname,label (true labels, every row scored)
IGNORED_LABEL = "None"  # what the FSDKaggle2018 release lists for its unscored padding clips
_TMP_MARK = ".tmp-"
_OUTPUTS = (*AUDIO_DIRS.values(), SHIFTED_DIR, SAMPLE_SUBMISSION_CSV, TEST_LABELS_CSV, SHIFTED_LABELS_CSV,
            TRUTH_CSV, TRAIN_CSV)  # train.csv last: it marks a complete data set
_SPLIT_CODES = {"train": 1, "test": 2, SHIFTED_SPLIT: 3}  # seed streams; code 0 is the plan's
_SPLIT_DIRS = {**AUDIO_DIRS, SHIFTED_SPLIT: SHIFTED_DIR}

# The multi-label demo (FSDKaggle2019 layout): its splits, their folders and files, and their seed streams.
# The names are the layout reader's (fstag/data/layouts/fsdkaggle2019.py).
ML_CURATED, ML_NOISY, ML_TEST = "curated", "noisy", "test"  # split names, as the train table's `source`
ML_SPLIT_DIRS = {s: _ML_DIRS[s] for s in (ML_CURATED, ML_NOISY, ML_TEST)}  # train_curated/ train_noisy/ test/
ML_CURATED_CSV, ML_NOISY_CSV = CURATED_CSV, NOISY_CSV  # fname,labels (labels comma-joined)
ML_SAMPLE_SUBMISSION_CSV = _ML_SAMPLE_SUBMISSION_CSV  # fname,<label>,... (the vocabulary, sorted), zeros
ML_TEST_LABELS_CSV = _ML_TEST_LABELS_CSV  # fname,labels,usage
ML_OUTPUTS = (*ML_SPLIT_DIRS.values(), ML_SAMPLE_SUBMISSION_CSV, ML_TEST_LABELS_CSV, TRUTH_CSV, ML_NOISY_CSV,
              ML_CURATED_CSV)  # train_curated.csv last: it marks a complete data set
ML_SPLIT_CODES = {ML_CURATED: 11, ML_NOISY: 12, ML_TEST: 13}  # seed streams; code 10 is the plan's
ML_PLAN_CODE = 10
