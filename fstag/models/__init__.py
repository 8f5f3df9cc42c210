"""What is trained: backbones in timm's registry (:mod:`.backbones`; the audio-native PANNs CNNs and
EfficientAT-style MobileNetV3 in :mod:`.audio_backbones`; initial weights from a local file, other projects'
checkpoints included, in :mod:`.pretrained`), the LightningModule
(:mod:`.module`) and what its training step uses: the task's losses (:mod:`.losses`), clip augmentations (:mod:`.augment`), batch
augmentations on the device (:mod:`.batch_aug`), learning-rate schedules (:mod:`.schedules`) and
label-noise handling (:mod:`.label_noise`).

May import: :mod:`fstag.core`, :mod:`fstag.data`, :mod:`fstag.runs`, :mod:`fstag.evaluate`.
"""
