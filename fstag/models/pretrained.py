"""Initial weights from a local file (``arch.pretrained_path``): load what fits, report what does not.

The file may be a plain state dict, or a checkpoint holding one under ``model`` (PANNs' training
checkpoints) or ``state_dict`` (Lightning); a ``module.`` prefix (DataParallel) is dropped. It is read with
``weights_only=True``; numpy arrays (PANNs' checkpoints keep their sampler's state) are allowed, nothing
else that is not a tensor.

Then, key by key:

- a backbone may name another project's keys in its own terms first (``pretrained_key_map(keys)`` returns
  ``{file's key: backbone's key}``; :mod:`fstag.models.audio_backbones` maps PANNs' and EfficientAT's);
- the classifier (keys under ``fc.``, ``classifier.``, ``head.``) is never loaded: fstag's label set is its own;
- a tensor of the backbone's shape is loaded; so is a linear layer's weight where the backbone has the same
  layer as a 1x1 convolution;
- a convolution saved for 1 input channel (a log-mel model: PANNs, EfficientAT) where the backbone has
  ``in_chans`` of them fills channel 0, fstag's log-mel; the delta channels start at zero, so the first
  layer computes what it computed in the source model until training moves it;
- anything else (another shape, a key the backbone lacks) is skipped.

The outcome is logged (what was skipped and why, what stayed at its initial value) and returned as a
:class:`LoadReport`; a missing file, a file that cannot be read safely, or one of which nothing fits is
a :class:`PretrainedWeightsUnavailable` error.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("fc.", "classifier.", "head.")


class PretrainedWeightsUnavailable(RuntimeError):
    """Initial weights were asked for (``arch.pretrained``, ``arch.pretrained_path``) and cannot be had."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained_file` did: the file's keys loaded, loaded after spreading a convolution
    over more input channels, skipped (with the reason; a renamed key reads ``<file's key> as <backbone's
    key>``), and the backbone's own keys that kept their initial value (the classifier among them)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def summary(self, name: str) -> str:
        lines = [f"arch.pretrained_path={self.path}: loaded {len(self.loaded) + len(self.adapted)} tensors into {name}"]
        if self.adapted:
            lines.append(f"  adapted to more input channels (the file's channel -> channel 0, the others zero): "
                         f"{', '.join(self.adapted)}")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} of the file's keys: " + _listing(
                [f"{k} ({why})" for k, why in self.skipped.items()]))
        if self.missing:
            lines.append(f"  {len(self.missing)} of {name}'s keys kept their initial value: " + _listing(self.missing))
        return "\n".join(lines)


def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def _numpy_globals(path: str) -> list[Any] | None:
    """The numpy classes and functions a checkpoint pickles (None if it needs anything else)."""
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    if not names or not all(n.startswith("numpy.") for n in names):
        return None
    import numpy as np

    # the classes of numpy's dtypes (np.dtype(...) pickles as one of them), which the scan above does not list
    found: list[Any] = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    for name in names:
        module, _, attr = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            return None
    return found


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file or of a checkpoint that holds one (see the module's docstring)."""
    if not os.path.isfile(path):
        raise PretrainedWeightsUnavailable(f"arch.pretrained_path: file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        allowed = _numpy_globals(path)
        if allowed is None:
            raise PretrainedWeightsUnavailable(
                f"arch.pretrained_path={path}: the file holds Python objects besides tensors and numpy arrays, "
                "which fstag does not unpickle. If you trust it, save its state dict alone once, e.g. "
                f"torch.save(torch.load('{path}', weights_only=False)['model'], 'state_dict.pt')"
            ) from exc
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsUnavailable(f"arch.pretrained_path={path}: not a PyTorch file ({type(exc).__name__}: "
                                           f"{str(exc)[:200]})") from exc
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    if not state:
        raise PretrainedWeightsUnavailable(f"arch.pretrained_path={path}: no state dict in the file "
                                           "(a dict of tensors, or a checkpoint with one under 'model' or 'state_dict')")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _widened(saved: torch.Tensor, own: torch.Tensor) -> torch.Tensor | None:
    """A 1-input-channel convolution spread over ``own``'s input channels: channel 0 as saved, the others 0."""
    if saved.dim() == 4 and own.dim() == 4 and saved.shape[1] == 1 and own.shape[1] > 1 and \
            saved.shape[0] == own.shape[0] and saved.shape[2:] == own.shape[2:]:
        out = torch.zeros_like(own)
        out[:, :1] = saved.to(own.dtype)
        return out
    return None


def load_pretrained_file(backbone: nn.Module, path: str, name: str) -> LoadReport:
    """Load what fits of ``path`` into ``backbone`` (timm model ``name``); log and return what happened."""
    state = read_state_dict(path)
    key_map = getattr(backbone, "pretrained_key_map", None)
    names = key_map(list(state)) if callable(key_map) else {}
    own = backbone.state_dict()
    report = LoadReport(path=path)
    fitting: dict[str, torch.Tensor] = {}
    for src, value in state.items():
        key = names.get(src, src)
        shown = src if key == src else f"{src} as {key}"
        target = own.get(key)
        if key.startswith(HEAD_PREFIXES):
            report.skipped[shown] = "the classifier: fstag trains its own for the label set"
        elif target is None:
            report.skipped[shown] = f"{name} has no such key"
        elif value.shape == target.shape:
            fitting[key] = value
            report.loaded.append(shown)
        elif value.dim() == 2 and target.shape == (*value.shape, 1, 1):  # linear layer -> 1x1 convolution
            fitting[key] = value[:, :, None, None]
            report.loaded.append(shown)
        elif (wide := _widened(value, target)) is not None:
            fitting[key] = wide
            report.adapted.append(f"{shown} {tuple(value.shape)} -> {tuple(target.shape)}")
        else:
            report.skipped[shown] = f"shape {tuple(value.shape)}, {name} has {tuple(target.shape)}"
    if not fitting:
        raise PretrainedWeightsUnavailable(
            f"arch.pretrained_path={path}: none of its {len(state)} tensors fits {name} (e.g. "
            f"{_listing([f'{k}: {v}' for k, v in report.skipped.items()], 3)}). Is it a checkpoint of this architecture?")
    backbone.load_state_dict(fitting, strict=False)
    report.missing = [k for k in own if k not in fitting]
    skipped_weights = [k for k in report.skipped if not k.startswith(HEAD_PREFIXES)]
    missing_weights = [k for k in report.missing if not k.startswith(HEAD_PREFIXES) and not k.endswith("num_batches_tracked")]
    log.log(logging.WARNING if skipped_weights or missing_weights else logging.INFO, "%s", report.summary(name))
    return report
