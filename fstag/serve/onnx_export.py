"""A member network as ONNX, checked against PyTorch, and run by onnxruntime as a numpy function (:class:`OnnxNetwork`:
no torch at serving time).

The exported graph is fstag's :class:`~fstag.models.backbones.TaggingNet` in eval mode, input normalisation
included: input ``features`` (batch, 3, n_mels, time) float32, output ``logits`` (batch, labels), with the batch
and time axes dynamic (fstag feeds ``crop_frames``-frame windows, but any length of at least a few frames works).

The exporter is torch's TorchScript one (``torch.onnx.export(..., dynamo=False)``, opset 17). With the pinned torch
2.11 both exporters give the same logits to ~5e-8 on cnn_small, resnet50, resnext101_32x4d, cnn6 and mn10_audio;
the dynamo exporter needs two more packages (onnxscript, onnx-ir) and took 2-4x longer (cnn_small 3.4-5.5 s
against 1.4 s, resnet50 10-16 s against 5-7 s on the 2-core CPU), so fstag uses the TorchScript one, which torch
2.11 still ships (deprecated; when it is gone, ``dynamo=True`` with ``dynamic_shapes`` is the replacement).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

INPUT_NAME = "features"
OUTPUT_NAME = "logits"
OPSET = 17
MAX_ABS_DIFF = 1e-4  # the largest |logit(torch) - logit(onnxruntime)| an export may have


class OnnxCheckError(RuntimeError):
    """An exported network does not reproduce PyTorch's logits; the message names the member and the difference."""


def export_onnx(net, path: str | Path, n_mels: int, crop_frames: int, in_chans: int = 3) -> Path:
    """Write ``net`` (a TaggingNet, put in eval mode) to ``path`` as ONNX with dynamic batch and time axes."""
    import torch

    from fstag.core.io import atomic_path

    net = net.eval()
    example = torch.zeros(2, in_chans, int(n_mels), int(crop_frames))
    with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch", 3: "time"}, OUTPUT_NAME: {0: "batch"}})
    return Path(path)


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session of ``path`` (``threads``: intra-op threads; None: onnxruntime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    # no busy-waiting between ops: a server shares its cores with the feature threads (on the 2-core CPU, cnn_small's
    # crops of a 1-clip request took half the CPU time, 0.7 against 1.4 ms a crop, and less wall time under load)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_onnx(net, path: str | Path, n_mels: int, crop_frames: int, what: str, seed: int = 0,
               in_chans: int = 3) -> float:
    """The largest |logit| difference between ``net`` (PyTorch) and the ONNX file under onnxruntime on random
    feature batches of several batch sizes and lengths (a crop, a shorter and a longer clip); raises
    :class:`OnnxCheckError` naming ``what`` above :data:`MAX_ABS_DIFF`."""
    import torch

    sess = session(path)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch, frames in ((1, crop_frames), (3, max(16, crop_frames // 2 + 7)), (2, 2 * crop_frames + 3)):
        x = torch.randn(batch, in_chans, int(n_mels), int(frames), generator=g) * 20.0  # dB-scale inputs
        with torch.no_grad():
            ref = net.eval()(x).float().numpy()
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != ref.shape:
            raise OnnxCheckError(f"{what}: ONNX logits of shape {got.shape} for input {tuple(x.shape)}, PyTorch's {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if not worst <= MAX_ABS_DIFF:
        raise OnnxCheckError(f"{what}: ONNX logits differ from PyTorch's by up to {worst:.3g} (> {MAX_ABS_DIFF})")
    return worst


def default_threads() -> int:
    """The threads torch would use, found without torch: ``OMP_NUM_THREADS``, else every core this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxNetwork:
    """A member network run by onnxruntime: called with a float32 (batch, 3, n_mels, time) feature array, it returns
    the (batch, labels) logits, as :func:`fstag.infer.numpy_predictor.predict_probs` calls a network. ``threads``:
    onnxruntime's intra-op threads (default: :func:`default_threads`)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = str(path)
        self.session = session(path, threads or default_threads())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
