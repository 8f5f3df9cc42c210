"""Audio-native backbones in timm's registry: PANNs' CNNs (``cnn6``, ``cnn10``, ``cnn14``) and an
EfficientAT-style MobileNetV3 for log-mels (``mn10_audio``).

``arch.name=cnn10`` (or ``timm.create_model("cnn10", num_classes=41, in_chans=3)``) builds them like any
timm model. They take fstag's features, ``(batch, in_chans, mel_bins, frames)``: log-mel, delta, delta-delta.

PANNs (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern
Recognition", github.com/qiuqiangkong/audioset_tagging_cnn), as its ``models.py`` has them, with the same
module and parameter names (``bn0``, ``conv_block1.conv1.weight``, ..., ``fc1``), so a PANNs checkpoint
loads through ``arch.pretrained_path`` (:mod:`fstag.models.pretrained`):

- ``cnn6``: 4 blocks of one 5x5 conv-BN-ReLU; ``cnn10``: 4 blocks, ``cnn14``: 6 blocks of two 3x3
  conv-BN-ReLU; 2x2 average pooling after each block (none after cnn14's last), dropout 0.2;
- ``bn0`` standardises each mel band (PANNs' input BatchNorm over 64 bands);
- the head: mean over frequency, then max + mean over time, dropout 0.5, ``fc1`` + ReLU (the embedding),
  dropout 0.5 and the classifier ``fc`` (PANNs' ``fc_audioset``, 527 AudioSet classes, is not loaded);
- PANNs convolves (time, frequency) maps: the input is transposed to that layout first, so its kernels
  apply as trained; PANNs' first convolution takes 1 channel, fstag's 3 (its weights go to the log-mel
  channel, the delta channels start at zero: :func:`fstag.models.pretrained.load_pretrained_file`).

``mn10_audio``: timm's MobileNetV3-Large (``mobilenetv3_large_100``'s blocks) configured as EfficientAT's
``mn10`` (Schmid et al. 2023, "Efficient Large-scale Audio Tagging via Transformer-to-CNN Knowledge
Distillation", github.com/fschmid56/EfficientAT): squeeze-excitation with a sigmoid gate, BatchNorm eps
1e-3, a (mel, time) input with ``in_chans`` channels. EfficientAT's checkpoints (torchvision's MobileNetV3
names, ``features.<i>.block.<j>...``) are renamed to timm's on loading (:func:`efficientat_to_timm`).
"""

from __future__ import annotations

from functools import partial
import torch
import torch.nn.functional as F
from timm.models import register_model
from timm.models._efficientnet_blocks import ConvBnAct, DepthwiseSeparableConv, InvertedResidual, SqueezeExcite
from timm.models._efficientnet_builder import decode_arch_def, round_channels
from timm.models.mobilenetv3 import MobileNetV3
from torch import nn

from fstag.models.pretrained import PretrainedWeightsUnavailable

# timm passes these to every entrypoint; the models here have no registry weights to configure
_TIMM_ENTRY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _entry_kwargs(name: str, pretrained: bool, kwargs: dict) -> dict:
    if pretrained:
        raise PretrainedWeightsUnavailable(
            f"{name} has no weights in timm's registry: set arch.pretrained=false and arch.pretrained_path to a "
            f"local checkpoint ({'EfficientAT' if name.startswith('mn') else 'PANNs'}; docs/recipes.md)")
    return {k: v for k, v in kwargs.items() if k not in _TIMM_ENTRY_KWARGS}


# PANNs ------------------------------------------------------------------------------------------------
def init_layer(layer: nn.Module) -> None:
    """PANNs' initialisation of a convolution or linear layer: Xavier uniform, zero bias."""
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        layer.bias.data.fill_(0.0)


def init_bn(bn: nn.Module) -> None:
    bn.bias.data.fill_(0.0)
    bn.weight.data.fill_(1.0)


class ConvBlock(nn.Module):
    """PANNs' ConvBlock: two 3x3 conv-BN-ReLU, then average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        init_layer(self.conv1)
        init_layer(self.conv2)
        init_bn(self.bn1)
        init_bn(self.bn2)

    def forward(self, x: torch.Tensor, pool_size=(2, 2)) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        x = F.relu_(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class ConvBlock5x5(nn.Module):
    """PANNs' ConvBlock5x5: one 5x5 conv-BN-ReLU, then average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2), bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        init_layer(self.conv1)
        init_bn(self.bn1)

    def forward(self, x: torch.Tensor, pool_size=(2, 2)) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class PannsCNN(nn.Module):
    """PANNs' Cnn6 / Cnn10 / Cnn14 on fstag's features (see the module's docstring).

    ``widths``: the blocks' output channels; ``block``: ConvBlock or ConvBlock5x5; ``pool_last``: whether the
    last block pools (Cnn14's does not); ``drop_rate``: the head's dropout (PANNs 0.5), ``conv_drop_rate``:
    after each block (PANNs 0.2)."""

    def __init__(self, widths, block=ConvBlock, pool_last: bool = True, num_classes: int = 1000, in_chans: int = 3,
                 mel_bins: int = 64, drop_rate: float = 0.5, conv_drop_rate: float = 0.2, **_):
        super().__init__()
        self.num_classes, self.in_chans, self.mel_bins = num_classes, in_chans, mel_bins
        self.drop_rate, self.conv_drop_rate = float(drop_rate), float(conv_drop_rate)
        self.pool_last = pool_last
        self.bn0 = nn.BatchNorm2d(mel_bins)
        c_in = in_chans
        for i, c in enumerate(widths, start=1):
            setattr(self, f"conv_block{i}", block(in_channels=c_in, out_channels=c))
            c_in = c
        self.n_blocks = len(widths)
        self.num_features = self.head_hidden_size = c_in
        self.fc1 = nn.Linear(c_in, c_in, bias=True)
        self.fc = nn.Linear(c_in, num_classes) if num_classes > 0 else nn.Identity()
        init_bn(self.bn0)
        init_layer(self.fc1)
        if num_classes > 0:
            init_layer(self.fc)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, *_, **__) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def pretrained_key_map(self, keys: list[str]) -> dict[str, str]:
        """PANNs' names are this model's; its AudioSet classifier ``fc_audioset`` is the classifier ``fc`` (which
        fstag never loads: :mod:`fstag.models.pretrained`)."""
        return {k: "fc." + k[len("fc_audioset."):] for k in keys if k.startswith("fc_audioset.")}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans or x.shape[2] != self.mel_bins:
            raise ValueError(f"expected (batch, {self.in_chans}, {self.mel_bins} mel bins, frames), got {tuple(x.shape)}")
        x = x.transpose(2, 3)  # (batch, channels, time, mel): PANNs' layout
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # per mel band, as PANNs' bn0
        for i in range(1, self.n_blocks + 1):
            pool = (2, 2) if (i < self.n_blocks or self.pool_last) else (1, 1)
            x = getattr(self, f"conv_block{i}")(x, pool_size=pool)
            x = F.dropout(x, p=self.conv_drop_rate, training=self.training)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.mean(x, dim=3)  # over frequency
        x = torch.max(x, dim=2).values + torch.mean(x, dim=2)  # over time
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        x = F.relu_(self.fc1(x))  # PANNs' embedding
        if pre_logits:
            return x
        return self.fc(F.dropout(x, p=self.drop_rate, training=self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def cnn6(pretrained: bool = False, **kwargs) -> PannsCNN:
    """PANNs' Cnn6: 4 blocks of one 5x5 conv (64, 128, 256, 512 channels), a 512-wide embedding."""
    return PannsCNN((64, 128, 256, 512), block=ConvBlock5x5, **_entry_kwargs("cnn6", pretrained, kwargs))


@register_model
def cnn10(pretrained: bool = False, **kwargs) -> PannsCNN:
    """PANNs' Cnn10: 4 blocks of two 3x3 convs (64, 128, 256, 512 channels), a 512-wide embedding."""
    return PannsCNN((64, 128, 256, 512), block=ConvBlock, **_entry_kwargs("cnn10", pretrained, kwargs))


@register_model
def cnn14(pretrained: bool = False, **kwargs) -> PannsCNN:
    """PANNs' Cnn14: 6 blocks of two 3x3 convs (64 ... 2048 channels, no pooling after the last), a
    2048-wide embedding."""
    return PannsCNN((64, 128, 256, 512, 1024, 2048), block=ConvBlock, pool_last=False,
                    **_entry_kwargs("cnn14", pretrained, kwargs))


# EfficientAT's MobileNetV3 ---------------------------------------------------------------------------------
# timm's MobileNetV3-Large blocks (mobilenetv3_large_100); EfficientAT's mn10 has the same layers
MN_LARGE_ARCH = [
    ["ds_r1_k3_s1_e1_c16_nre"],
    ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
    ["ir_r3_k5_s2_e3_c40_se0.25_nre"],
    ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
    ["ir_r2_k3_s1_e6_c112_se0.25"],
    ["ir_r3_k5_s2_e6_c160_se0.25"],
    ["cn_r1_k1_s1_c960"],
]


class AudioMobileNetV3(MobileNetV3):
    """timm's MobileNetV3 that also loads EfficientAT's checkpoints (:func:`efficientat_to_timm`)."""

    def pretrained_key_map(self, keys: list[str]) -> dict[str, str]:
        """EfficientAT's names as timm's; a file with timm's names (timm's ``mobilenetv3_large_100``) as saved."""
        return efficientat_to_timm(keys, self) if any(k.startswith("features.") for k in keys) else {}


def _timm_parts(model: MobileNetV3) -> list[tuple[str, nn.Module]]:
    """The blocks of ``model`` in order: EfficientAT's ``features.1`` ... ``features.<n>``."""
    return [(f"blocks.{s}.{b}", block) for s, stage in enumerate(model.blocks) for b, block in enumerate(stage)]


def efficientat_to_timm(keys: list[str], model: MobileNetV3) -> dict[str, str]:
    """``{EfficientAT key: timm key}`` for the keys of an EfficientAT MobileNetV3 checkpoint (torchvision's
    names) with a place in ``model`` (the others keep their names, so the loader skips them). Its linear layers
    (squeeze-excitation, ``classifier.2``) are 1x1 convolutions in timm: the loader reshapes them.

    ==================================================  ==============================================
    EfficientAT (mn10)                                  timm (mn10_audio)
    ==================================================  ==============================================
    ``features.0.0`` / ``features.0.1`` (stem conv, BN)  ``conv_stem`` / ``bn1``
    ``features.1.block.{0,1}.{0,1}`` (depthwise block)  ``blocks.0.0.{conv_dw,bn1,conv_pw,bn2}``
    ``features.<i>.block.0.{0,1}`` (expansion)          ``blocks.<s>.<b>.conv_pw`` / ``bn1``
    ``features.<i>.block.1.{0,1}`` (depthwise)          ``blocks.<s>.<b>.conv_dw`` / ``bn2``
    ``features.<i>.block.2.conc_se_layers.0.fc{1,2}``   ``blocks.<s>.<b>.se.conv_{reduce,expand}`` (1x1)
    ``features.<i>.block.{2|3}.{0,1}`` (projection)     ``blocks.<s>.<b>.conv_pwl`` / ``bn3``
    ``features.16.{0,1}`` (last conv, BN)               ``blocks.6.0.conv`` / ``bn1``
    ``classifier.2`` (Linear 960 -> 1280)               ``conv_head`` (1x1 conv)
    ``classifier.5`` (527 AudioSet classes)             ``classifier`` (never loaded)
    ==================================================  ==============================================

    ``features.<i>`` is timm's i-th block counted over the stages (``blocks.<s>.<b>``).
    """
    names: dict[str, str] = {"features.0.0": "conv_stem", "features.0.1": "bn1",
                             "classifier.2": "conv_head", "classifier.5": "classifier"}
    for i, (prefix, block) in enumerate(_timm_parts(model), start=1):
        src = f"features.{i}"
        if isinstance(block, DepthwiseSeparableConv):
            parts = {"block.0.0": "conv_dw", "block.0.1": "bn1", "block.1.0": "conv_pw", "block.1.1": "bn2"}
        elif isinstance(block, InvertedResidual):
            parts = {"block.0.0": "conv_pw", "block.0.1": "bn1", "block.1.0": "conv_dw", "block.1.1": "bn2"}
            if isinstance(block.se, SqueezeExcite):
                parts.update({"block.2.conc_se_layers.0.fc1": "se.conv_reduce", "block.2.conc_se_layers.0.fc2": "se.conv_expand",
                              "block.3.0": "conv_pwl", "block.3.1": "bn3"})
            else:
                parts.update({"block.2.0": "conv_pwl", "block.2.1": "bn3"})
        elif isinstance(block, ConvBnAct):
            parts = {"0": "conv", "1": "bn1"}
        else:
            continue
        names.update({f"{src}.{a}": f"{prefix}.{b}" for a, b in parts.items()})
    out = {}
    for key in keys:
        module, _, param = key.rpartition(".")
        if module in names:
            out[key] = f"{names[module]}.{param}"
    return out


def _mobilenet_v3_audio(name: str, pretrained: bool, kwargs: dict) -> AudioMobileNetV3:
    kwargs = _entry_kwargs(name, pretrained, kwargs)
    return AudioMobileNetV3(
        block_args=decode_arch_def(MN_LARGE_ARCH),
        num_features=1280,
        stem_size=16,
        round_chs_fn=round_channels,
        norm_layer=partial(nn.BatchNorm2d, eps=1e-3),
        act_layer=nn.Hardswish,
        se_layer=partial(SqueezeExcite, gate_layer="sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels),
        **kwargs,
    )


@register_model
def mn10_audio(pretrained: bool = False, **kwargs) -> AudioMobileNetV3:
    """EfficientAT's mn10 (MobileNetV3-Large, width 1.0) for log-mels: about 4.2 M parameters with 41 classes."""
    return _mobilenet_v3_audio("mn10_audio", pretrained, kwargs)
