"""One training job: the fold's rows and stores (:mod:`.fold_data`), the LightningDataModule
(:mod:`.datamodule`; or the fold's clips kept on the training device, :mod:`.resident_store`, and their
data module, :mod:`.resident_data`), the Trainer, callbacks and loggers built from config
(:mod:`.lightning_parts`), how checkpoints reach the disk (:mod:`.checkpoint_io`), where a job's time goes
(:mod:`.timings`), DDP glue (:mod:`.distributed`), stage=retrain_val's parent run (:mod:`.retrain`),
stage=self_train's pseudo-labels on a folder of unlabelled recordings (:mod:`.self_training`) and the train
job (:mod:`.job`: prepare, build, fit, predict, finish).

May import every package but :mod:`fstag.ensemble` (a train job predicts with :mod:`fstag.infer`).
"""
