"""A bundle: the folder that holds everything a packaged model needs to tag audio, with no run directory, no
conf/ and no data set around it.

::

    tagger.json              what the model is: task, labels, feature settings, TTA/windows settings, limits,
                             members (crop length, clip augmentation of pass 0, padding, weight), blend method
                             and calibration, where it came from (blend run, digests, scores)
    members/<k>/net.pt       format=torch: the member's network, weights only (arch config, label count, band
                             statistics, state dict; torch.load(weights_only=True) reads it, no Lightning needed)
    members/<k>/net.onnx     format=onnx: the member's network as ONNX (fstag.serve.onnx_export), checked
                             against PyTorch when written

:func:`build_bundle` writes it from resolved runs; :class:`fstag.serve.tagger.Tagger` loads it.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from fstag.core.io import write_json_atomic

BUNDLE_JSON = "tagger.json"
FORMAT_VERSION = 1
FORMATS = ("torch", "onnx")
# The ``serve`` config group's keys that become the model's behaviour (conf/serve/default.yaml says what each is).
SETTINGS = {
    "mode": "crops", "tta": 5, "hop_frames": 75, "window_reduce": "mean", "seed": 1234, "batch_size": 256,
    "long_file_seconds": 120, "threshold": 0.5, "top_k": 3, "max_seconds": 600, "max_clips": 256,
    "allow_paths": True, "num_workers": None,
}


class BundleError(ValueError):
    """A bundle cannot be written or read as asked; the message names the key, member or file."""


def check_settings(mapping: Mapping[str, Any], where: str = "serve") -> dict[str, Any]:
    """The serving settings, defaults filled in and checked; an unknown key or bad value names ``<where>.<key>``."""
    unknown = sorted(set(mapping) - set(SETTINGS))
    if unknown:
        raise BundleError(f"{where}: unknown key(s) {unknown}; known: {sorted(SETTINGS)}")
    s = {**SETTINGS, **{k: v for k, v in mapping.items()}}
    modes, reduces = ("crops", "windows"), ("mean", "max")  # fstag.infer.predictor.MODES, WINDOW_REDUCES
    if s["mode"] not in modes:
        raise BundleError(f"{where}.mode={s['mode']!r}: choose one of {modes}")
    if s["window_reduce"] not in reduces:
        raise BundleError(f"{where}.window_reduce={s['window_reduce']!r}: choose one of {reduces}")
    try:
        for key in ("tta", "seed", "batch_size", "top_k", "max_clips"):
            s[key] = int(s[key])
        s["threshold"] = float(s["threshold"])
        for key in ("hop_frames", "long_file_seconds", "max_seconds", "num_workers"):
            s[key] = None if s[key] in (None, 0) else (float(s[key]) if key in ("long_file_seconds", "max_seconds")
                                                        else int(s[key]))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where}: a number is expected ({exc})") from None
    if min(s["tta"], s["batch_size"], s["top_k"], s["max_clips"]) < 1:
        raise BundleError(f"{where}.tta, .batch_size, .top_k and .max_clips must be at least 1")
    if not 0.0 <= s["threshold"] <= 1.0:
        raise BundleError(f"{where}.threshold={s['threshold']}: a probability between 0 and 1")
    s["allow_paths"] = bool(s["allow_paths"])
    return s


def _member_entry(k: int, key: str, run, weight: float, spec: str, fmt: str, folder: Path) -> dict[str, Any]:
    """Write member ``k``'s network into ``folder/members/<k>/`` and return its tagger.json entry."""
    import torch

    from fstag.core.config import to_plain
    from fstag.core.io import atomic_path
    from fstag.infer.job import load_module, run_config
    from fstag.models.augment import pad_value_of
    from fstag.models.module import without_initial_weights

    module = load_module(run)
    rc = run_config(run)
    crop_frames = int(rc.loader.crop_frames)
    n_mels = int((run.info.get("features") or {}).get("n_mels", 64))
    net = module.model.eval()
    entry: dict[str, Any] = {
        "key": key, "run_dir": str(run.path.resolve()), "spec": spec, "mlflow_run_id": run.info.get("mlflow_run_id"),
        "weight": float(weight), "arch": str(module.hparams["arch"]["name"]), "crop_frames": crop_frames,
        "aug": to_plain(rc.aug), "pad_value": pad_value_of(rc.loader), "n_mels": n_mels,
    }
    sub = f"members/{k:02d}"
    (folder / sub).mkdir(parents=True, exist_ok=True)
    if fmt == "torch":
        ckpt = {"arch": without_initial_weights(dict(module.hparams["arch"])), "num_classes": len(run.labels),
                "band_stats": module.hparams.get("band_stats"), "state_dict": net.state_dict()}
        with atomic_path(folder / sub / "net.pt") as tmp:
            torch.save(ckpt, tmp)
        entry["torch"] = f"{sub}/net.pt"
    else:
        from fstag.serve.onnx_export import check_onnx, export_onnx

        export_onnx(net, folder / sub / "net.onnx", n_mels, crop_frames)
        entry["onnx"] = f"{sub}/net.onnx"
        entry["onnx_max_abs_diff"] = check_onnx(net, folder / sub / "net.onnx", n_mels, crop_frames, f"member {key}")
    return entry


def build_bundle(folder: str | Path, members: Sequence[tuple[str, Any, float, str]], *, name: str, fmt: str,
                 settings: Mapping[str, Any], method: str = "gmean", calibration: Mapping[str, Any] | None = None,
                 source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write a bundle into the new folder ``folder`` (made whole, then renamed into place) from ``members``:
    ``(key, RunDir, weight, spec)`` each, runs of one task, label set and feature settings (as
    :func:`fstag.runs.members.resolve_members` checks them). Returns tagger.json's content."""
    import torch

    from fstag.core.task import task_of

    if fmt not in FORMATS:
        raise BundleError(f"format={fmt!r}: choose one of {FORMATS}")
    if not members:
        raise BundleError("no members to package")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise BundleError(f"{folder}: exists and is not empty; a bundle is written into a new folder")
    settings = check_settings(settings)
    first = members[0][1]
    weights = [float(w) for _, _, w, _ in members]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise BundleError(f"member weights {weights}: non-negative, with a positive sum")
    weights = [w / sum(weights) for w in weights]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700
    try:
        entries = [_member_entry(k, key, run, w, spec, fmt, tmp)
                   for k, ((key, run, _, spec), w) in enumerate(zip(members, weights))]
        spec = {
            "format_version": FORMAT_VERSION, "name": name, "task": task_of(first.info).name, "labels": first.labels,
            "features": first.info["features"], "feature_key": first.feature_key, "backend": fmt,
            "settings": settings, "combine": {"method": method, "weights": weights},
            "calibration": dict(calibration or {"name": "none"}), "members": entries, "source": dict(source or {}),
            "built_with": {"python": platform.python_version(), "torch": torch.__version__},
        }
        write_json_atomic(tmp / BUNDLE_JSON, spec)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return spec
