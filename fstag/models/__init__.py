"""What is trained: backbones in timm's registry (:mod:`.backbones`), the LightningModule
(:mod:`.module`) and what its training step uses: clip augmentations (:mod:`.augment`), batch
augmentations on the device (:mod:`.batch_aug`), learning-rate schedules (:mod:`.schedules`) and
label-noise handling (:mod:`.label_noise`).

May import: :mod:`fstag.core`, :mod:`fstag.data`, :mod:`fstag.runs`, :mod:`fstag.evaluate`.
"""
