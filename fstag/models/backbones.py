"""Model construction through timm's registry, plus fstag's own small CPU-friendly CNN.

Every architecture is a timm model name: ``arch.name=resnet50``, ``resnext101_32x4d``, ``cnn_small``
(registered here), the audio backbones ``cnn6``, ``cnn10``, ``cnn14``, ``mn10_audio`` (registered by
:mod:`fstag.models.audio_backbones`) or any other timm model. ``arch.pretrained=true`` loads timm's ImageNet
weights from the local cache or, when online, downloads them; offline it fails at once with a clear message,
never hangs. ``arch.pretrained_path`` loads what fits of a local file instead (:mod:`fstag.models.pretrained`).
"""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urlparse
from typing import Any, Iterator, Mapping

import timm
import torch
from timm.models import register_model
from torch import nn

import fstag.models.audio_backbones  # noqa: F401  (registers cnn6, cnn10, cnn14, mn10_audio in timm's registry)
from fstag.models.pretrained import PretrainedWeightsUnavailable, load_pretrained_file


class SmallCNN(nn.Module):
    """A light CNN for CPUs (tests, the demo): a stride-2 stem, then conv-BN-ReLU stages with pooling,
    global average pooling and a linear head. About 66 M multiply-adds per 3x64x150 input; ``stem_pool``
    adds a 2x2 max-pool after the stem, so every later stage works on a quarter of the positions (about
    17 M multiply-adds with the default widths)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, widths=(24, 48, 96, 128), drop_rate=0.2,
                 stem_pool: bool = False, **_):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        if stem_pool:
            layers.append(nn.MaxPool2d(2))
        c_in = widths[0]
        for i, c in enumerate(widths[1:]):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < len(widths) - 2:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.mean(dim=(2, 3))
        return self.fc(self.drop(x))


@register_model
def cnn_small(pretrained: bool = False, **kwargs) -> SmallCNN:
    if pretrained:
        raise PretrainedWeightsUnavailable("cnn_small has no pretrained weights; use arch.pretrained=false")
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    return SmallCNN(**kwargs)


INPUT_NORMS = ("bn", "band_stats", "none")


class TaggingNet(nn.Module):
    """A timm backbone behind an input normalisation of the 3 feature channels (log-mel, delta, delta2).

    The channels differ in scale by orders of magnitude (dB vs. dB/frame). ``input_norm``:

    - ``bn``: an input BatchNorm over the channels (the seed's; learned, batch statistics);
    - ``band_stats``: fixed per-channel, per-mel-band standardisation with the training split's mean and
      std (``band_stats = {"mean": (C, F), "std": (C, F)}``, kept as buffers, so a checkpoint carries them);
    - ``none``.
    """

    def __init__(self, backbone: nn.Module, in_chans: int = 3, input_norm: str = "bn",
                 band_stats: Mapping[str, Any] | None = None):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"arch.input_norm={input_norm!r}: choose one of {INPUT_NORMS}")
        self.input_norm = input_norm
        self.input_bn = nn.BatchNorm2d(in_chans) if input_norm == "bn" else nn.Identity()
        if input_norm == "band_stats":
            if not band_stats:
                raise ValueError("arch.input_norm=band_stats needs the training split's band statistics")
            mean = torch.as_tensor(band_stats["mean"], dtype=torch.float32)
            std = torch.as_tensor(band_stats["std"], dtype=torch.float32).clamp_min(1e-3)
            self.register_buffer("band_mean", mean[:, :, None])
            self.register_buffer("band_std", std[:, :, None])
        self.backbone = backbone

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm == "band_stats":
            return (x - self.band_mean) / self.band_std
        return self.input_bn(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of already normalised inputs (training applies its augmentations in between)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.normalize(x))


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Temporarily put huggingface_hub in offline mode (it reads the flag on each request)."""
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline or old
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _probe_hub(timeout_s: float) -> None:
    """Fail fast when the weights' host cannot be reached (no DNS, no route): no retry loops."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    with socket.create_connection((host, 443), timeout=min(timeout_s, 5.0)):
        pass


def _create_pretrained(name: str, num_classes: int, in_chans: int, download_timeout_s: float, **kwargs) -> nn.Module:
    try:  # the local cache first, with no network access at all
        with _hub_offline(True):
            return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except PretrainedWeightsUnavailable:
        raise
    except Exception as cached_exc:  # not cached: try a bounded download
        first_error = cached_exc
    try:
        _probe_hub(download_timeout_s)
        return timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except Exception as exc:
        raise PretrainedWeightsUnavailable(
            f"arch.pretrained=true: ImageNet weights for timm model {name!r} are not in the local cache "
            f"and could not be downloaded ({type(exc).__name__}: {str(exc)[:200]}). fstag never needs the "
            "network otherwise: fetch the weights once on a machine that is online (they land in the "
            "Hugging Face cache, ~/.cache/huggingface, or HF_HOME), or set arch.pretrained_path to a local "
            f"state_dict file, or train from scratch with arch.pretrained=false. (cache lookup: {first_error})"
        ) from exc


def input_norm_of(arch: Mapping[str, Any]) -> str:
    """``arch.input_norm``; configs and checkpoints from before it existed say ``input_bn``."""
    return str(arch.get("input_norm") or ("bn" if arch.get("input_bn", True) else "none"))


def build_model(arch: Mapping[str, Any], num_classes: int, band_stats: Mapping[str, Any] | None = None) -> TaggingNet:
    """Build ``TaggingNet`` from an ``arch`` config (keys: name, pretrained, pretrained_path, in_chans,
    input_norm, drop_rate, download_timeout_s, kwargs)."""
    name = str(arch["name"])
    in_chans = int(arch.get("in_chans", 3))
    kwargs = dict(arch.get("kwargs") or {})
    if arch.get("drop_rate") is not None:
        kwargs["drop_rate"] = float(arch["drop_rate"])
    if name not in timm.list_models() and not timm.is_model(name):
        raise ValueError(f"arch.name={name!r} is not a timm model (see timm.list_models())")
    if arch.get("pretrained"):
        backbone = _create_pretrained(
            name, num_classes, in_chans, float(arch.get("download_timeout_s", 20)), **kwargs
        )
    else:
        backbone = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    report = load_pretrained_file(backbone, str(arch["pretrained_path"]), name) if arch.get("pretrained_path") else None
    net = TaggingNet(backbone, in_chans=in_chans, input_norm=input_norm_of(arch), band_stats=band_stats)
    net.pretrained_report = report  # what arch.pretrained_path loaded (fstag.models.pretrained.LoadReport), or None
    return net
