"""File, folder and split names of the demo data set, and the seed streams of its splits."""

from __future__ import annotations

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
