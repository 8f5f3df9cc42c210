"""From audio files to cached features: decoding (:mod:`.audio`), the feature settings and key
(:mod:`.feature_config`), log-mel + deltas (:mod:`.features`), long files in chunks (:mod:`.long_clips`), files to features in a
thread pool (:mod:`.extract`), the float16 cache (:mod:`.feature_store`),
dataset folders as layouts (:mod:`.layouts`: Kaggle 2018, FSDKaggle2019, FSD50K, class folders), folds (:mod:`.folds`), per-band statistics (:mod:`.band_stats`),
the preprocess job (:mod:`.job`) and the built-in demo data set (:mod:`.demo`).

May import: :mod:`fstag.core`.
"""
