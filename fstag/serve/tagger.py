"""The runtime of a packaged model: a bundle folder (:mod:`fstag.serve.bundle`) loaded once, then batches of
clips -> per-clip labels and probabilities, exactly as predict.py computes them.

A clip is a row with ``audio`` (the bytes of an audio file, base64-encoded: any format predict.py reads) or
``path`` (a file the server can read), and optionally ``name``: the clip's name, which is what TTA crops are
seeded by (:func:`fstag.infer.modes.clip_seed`), so a clip named as predict.py names it (its path relative to
predict.py's ``input`` folder) gets predict.py's numbers to float rounding. Without ``name``, a path row is named
by its file name and an audio row ``clip_<row>``.

Each clip goes the way of predict.py with ``input=<folder>``: features computed in memory
(:func:`fstag.data.extract.features_for_files`, the run's feature settings), every member's TTA crops or windows
(:func:`fstag.infer.predictor.predict_probs`), the members combined by the blend's weights and method
(:func:`fstag.ensemble.blending.combine`; one member: its own probabilities), the blend's calibration, and the
uninformed row for a clip that cannot be heard (:func:`fstag.core.task.uninformed`). With the ``onnx`` backend the
same steps run without torch: the features by the librosa reference (``engine='librosa'``) and the crops and windows
by :func:`fstag.infer.numpy_predictor.predict_probs`, which draws predict.py's crops; the probabilities then differ
from predict.py's by the two feature paths' float32 rounding only (docs/serving.md gives the measured size).
A silent clip is flagged (``silent``, ``flagged``, ``error``), not refused. A clip that is not audio, is empty, or is
longer than the model's ``max_seconds`` makes the request a :class:`BadClips` error that names every such clip and
why (``errors='raise'``, the default; the pyfunc model turns it into an HTTP 400), or a flagged row with the reason
(``errors='flag'``: what predict.py does with an unreadable file).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from fstag.serve.bundle import BUNDLE_JSON, FORMAT_VERSION, BundleError, check_settings

INPUT_COLUMNS = ("name", "audio", "path")
ERROR_MODES = ("raise", "flag")
EPS = 1e-7  # fstag.evaluate.metrics.EPS: the floor of a probability before its log


class BadClips(ValueError):
    """Clips of a request that cannot be tagged: ``problems`` is ``[(row, name, reason), ...]``; the message names
    every one (the pyfunc model answers it with HTTP 400)."""

    def __init__(self, problems: list[tuple[int, str, str]], total: int):
        self.problems = problems
        lines = [f"clip {row} ({name!r}): {reason}" for row, name, reason in problems]
        super().__init__(f"{len(problems)} of {total} clip(s) cannot be tagged: " + "; ".join(lines)
                         + " (params errors='flag' tags the others and flags these, as predict.py does)")


class BadRequest(ValueError):
    """A request that is wrong as a whole (unknown columns, too many clips, a bad parameter)."""


@dataclass
class Clip:
    """One row of a request, checked: its name and the file its audio is in (None with ``problem`` set)."""

    row: int
    name: str
    file: Path | None = None
    problem: str | None = None


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), rows renormalised: blend.calibration=temperature's scaling with its fitted T
    (:func:`fstag.ensemble.calibration.apply_temperature`, whose log clips p at 1e-7 as this does)."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)) / float(temperature)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def calibrate(probs: np.ndarray, calibration: Mapping[str, Any]) -> np.ndarray:
    """The blend's calibration applied to combined probabilities (``none``: unchanged)."""
    name = str(calibration.get("name", "none"))
    if name == "none":
        return probs
    if name == "temperature":
        return temperature_scale(probs, calibration["temperature"]).astype(np.float32)
    if name == "prior":
        from fstag.ensemble.calibration import prior_correction

        return prior_correction(probs, calibration["train_share"], calibration["test_share"]).astype(np.float32)
    raise BundleError(f"calibration {name!r}: this fstag knows none, temperature and prior")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value)


def rows_of(model_input: Any) -> list[dict[str, Any]]:
    """The rows of a request: a DataFrame (what the scoring server passes), a list of dicts, one dict, or a list
    of paths; unknown columns are a :class:`BadRequest` naming the known ones."""
    if isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        records = [dict(model_input)]
    elif isinstance(model_input, (str, os.PathLike)):
        records = [{"path": str(model_input)}]
    elif isinstance(model_input, Iterable):
        records = [r if isinstance(r, Mapping) else {"path": str(r)} for r in model_input]
    else:
        raise BadRequest(f"a request is a table of clips with columns {INPUT_COLUMNS}, got {type(model_input).__name__}")
    unknown = sorted({str(k) for r in records for k in r} - set(INPUT_COLUMNS))
    if unknown:
        raise BadRequest(f"unknown column(s) {unknown}: a clip has 'audio' (base64-encoded audio file bytes) or "
                         "'path' (a file on the server), and optionally 'name'")
    return [dict(r) for r in records]


def _decode_base64(text: str) -> bytes:
    text = text.strip()
    if text.startswith("data:") and "," in text:  # a data URL: data:audio/wav;base64,<...>
        text = text.split(",", 1)[1]
    return base64.b64decode("".join(text.split()), validate=True)


class Tagger:
    """A loaded bundle: ``tag(rows)`` -> one row per clip. Thread-safe (one request at a time)."""

    def __init__(self, folder: Path, spec: dict, nets: list, backend: str):
        self.folder, self.spec, self.nets, self.backend = Path(folder), spec, nets, backend
        self.labels: list[str] = list(spec["labels"])
        from fstag.core.task import get_task
        from fstag.data.feature_config import FeatureConfig

        self.task = get_task(spec["task"])
        self.features = FeatureConfig.from_cfg(spec["features"])
        self.settings = check_settings(spec["settings"])
        self.members: list[dict] = list(spec["members"])
        self._lock = threading.Lock()

    # loading -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, backend: str | None = None) -> "Tagger":
        """The bundle in ``folder``; ``backend`` (``torch`` or ``onnx``) defaults to the one it was built for."""
        folder = Path(folder)
        path = folder / BUNDLE_JSON
        if not path.is_file():
            raise BundleError(f"{folder}: not an fstag model bundle ({BUNDLE_JSON} not found)")
        spec = json.loads(path.read_text())
        if int(spec.get("format_version", 0)) != FORMAT_VERSION:
            raise BundleError(f"{path}: bundle format {spec.get('format_version')}, this fstag reads {FORMAT_VERSION}")
        backend = str(backend or spec["backend"])
        nets = [cls._load_net(folder, m, backend) for m in spec["members"]]
        return cls(folder, spec, nets, backend)

    @staticmethod
    def _load_net(folder: Path, member: dict, backend: str):
        file = member.get(backend)
        if not file:
            raise BundleError(f"member {member['key']}: the bundle holds no {backend} network (it has "
                              f"{[b for b in ('torch', 'onnx') if member.get(b)]})")
        if backend == "onnx":
            from fstag.serve.onnx_export import OnnxNetwork

            return OnnxNetwork(folder / file)
        if backend != "torch":
            raise BundleError(f"backend {backend!r}: choose torch or onnx")
        import torch

        from fstag.models.backbones import build_model

        ckpt = torch.load(folder / file, map_location="cpu", weights_only=True)
        net = build_model(ckpt["arch"], int(ckpt["num_classes"]), ckpt.get("band_stats"))
        net.load_state_dict(ckpt["state_dict"])
        return net.eval()

    # one request -----------------------------------------------------------------------------------------
    def tag(self, model_input: Any, top_k: int | None = None, threshold: float | None = None,
            errors: str = "raise") -> pd.DataFrame:
        """Tag a batch of clips (see the module docstring); returns one row per clip, in order."""
        rows = rows_of(model_input)
        top_k = int(self.settings["top_k"] if top_k is None else top_k)
        threshold = float(self.settings["threshold"] if threshold is None else threshold)
        if errors not in ERROR_MODES:
            raise BadRequest(f"errors={errors!r}: choose one of {ERROR_MODES}")
        if not 1 <= top_k <= len(self.labels):
            raise BadRequest(f"top_k={top_k}: between 1 and the model's {len(self.labels)} labels")
        if not 0.0 <= threshold <= 1.0:
            raise BadRequest(f"threshold={threshold}: a probability, between 0 and 1")
        if not rows:
            raise BadRequest("no clips in the request")
        if len(rows) > int(self.settings["max_clips"]):
            raise BadRequest(f"{len(rows)} clips in one request; this model takes at most "
                             f"max_clips={self.settings['max_clips']}: send them in several requests")
        with self._lock, tempfile.TemporaryDirectory(prefix="fstag-serve-") as tmp:
            clips = [self._clip(i, r, Path(tmp)) for i, r in enumerate(rows)]
            bad = [(c.row, c.name, c.problem) for c in clips if c.problem]
            if bad and errors == "raise":
                raise BadClips(bad, len(clips))
            return self._tag(clips, top_k, threshold, errors)

    def _clip(self, i: int, row: Mapping[str, Any], tmp: Path) -> Clip:
        """Row ``i`` checked: one of audio/path, decodable base64, a readable file, not empty, not too long."""
        from fstag.data.audio import AudioError, audio_info

        audio, path, name = row.get("audio"), row.get("path"), row.get("name")
        has_audio, has_path = not _blank(audio), not _blank(path)
        if _blank(name):
            name = Path(str(path)).name if has_path else f"clip_{i}"
        clip = Clip(i, str(name))
        if has_audio == has_path:
            clip.problem = ("both 'audio' and 'path' given: send one" if has_audio else
                            "neither 'audio' (base64 audio bytes) nor 'path' given")
            return clip
        if has_audio:
            try:
                data = _decode_base64(str(audio))
            except (binascii.Error, ValueError) as exc:
                clip.problem = f"'audio' is not base64 ({exc})"
                return clip
            if not data:
                clip.problem = "empty (0 bytes of audio)"
                return clip
            suffix = Path(clip.name).suffix.lower()
            clip.file = tmp / f"{i:05d}{suffix if suffix[1:].isalnum() else ''}"
            clip.file.write_bytes(data)
        else:
            if not self.settings["allow_paths"]:
                clip.problem = "this model takes no file paths (serve.allow_paths=false): send the audio bytes"
                return clip
            clip.file = Path(str(path)).expanduser()
            if not clip.file.is_file():
                clip.problem = f"file not found on the server: {clip.file}"
                return clip
            if clip.file.stat().st_size == 0:
                clip.problem = "empty (a 0-byte file)"
                return clip
        try:
            frames, sr = audio_info(clip.file)
        except AudioError as exc:
            clip.problem = "not audio: " + str(exc).replace(str(clip.file), clip.name)
            return clip
        if frames == 0:
            clip.problem = "empty audio (0 samples)"
            return clip
        seconds, limit = frames / sr, self.settings["max_seconds"]
        if limit and frames > 0 and seconds > float(limit):  # frames < 0: a header that does not say (decoded later)
            clip.problem = f"too long: {seconds:.1f} s, this model takes clips of at most max_seconds={limit} s"
        return clip

    def _tag(self, clips: list[Clip], top_k: int, threshold: float, errors: str) -> pd.DataFrame:
        from fstag.core.task import uninformed
        from fstag.data.extract import features_for_files
        from fstag.ensemble.blending import combine

        if self.backend == "onnx":  # torch-free: the librosa reference features, numpy crops and windows
            from fstag.infer.numpy_predictor import predict_probs

            engine, where = "librosa", {}
        else:
            from fstag.infer.predictor import predict_probs

            engine, where = "torch", {"device": "cpu"}
        s = self.settings
        usable = [c for c in clips if c.problem is None]
        feats, reasons = features_for_files([c.file for c in usable], self.features, num_workers=s["num_workers"],
                                            long_seconds=s["long_file_seconds"], engine=engine) if usable else ([], [])
        for c, reason in zip(usable, reasons):
            if reason is not None:
                c.problem = "not audio: " + str(reason).replace(str(c.file), c.name)
        features = [None] * len(clips)
        for c, f in zip(usable, feats):
            features[c.row] = f
        fnames = [c.name for c in clips]
        self._raise_if(clips, errors)
        per_member, silent = [], np.zeros(len(clips), dtype=bool)
        for member, net in zip(self.members, self.nets):
            probs, silent = predict_probs(
                net, features, fnames, crop_frames=int(member["crop_frames"]), aug=member["aug"], mode=s["mode"],
                pad_value=member["pad_value"], n_passes=int(s["tta"]), hop_frames=s["hop_frames"], seed=int(s["seed"]),
                batch_size=int(s["batch_size"]), num_classes=len(self.labels), task=self.task,
                window_reduce=s["window_reduce"], **where)
            per_member.append(probs)
        for c, f in zip(clips, features):  # a long clip found unreadable while it was streamed
            if c.problem is None and getattr(f, "error", None):
                c.problem = "not audio: " + str(f.error)
        self._raise_if(clips, errors)
        combo = self.spec["combine"]
        probs = per_member[0] if len(per_member) == 1 else \
            combine(np.stack(per_member), combo["weights"], combo["method"], self.task).astype(np.float32)
        probs = np.array(calibrate(probs, self.spec.get("calibration") or {}), dtype=np.float32)
        unusable = np.array([c.problem is not None for c in clips]) | silent
        probs[unusable] = uninformed(self.task, len(self.labels))
        return result_table(fnames, probs, self.labels, [c.problem for c in clips], silent, self.task.multi_label,
                            top_k, threshold)

    @staticmethod
    def _raise_if(clips: list[Clip], errors: str) -> None:
        bad = [(c.row, c.name, c.problem) for c in clips if c.problem]
        if bad and errors == "raise":
            raise BadClips(bad, len(clips))


def result_table(fnames: list[str], probs: np.ndarray, labels: list[str], problems: list[str | None], silent,
                 multi_label: bool, top_k: int, threshold: float) -> pd.DataFrame:
    """One row per clip: ``fname``; ``top_labels`` and ``top_probs`` (the ``top_k`` most probable, in order);
    multi-label: ``labels`` (every label at or above ``threshold``, most probable first); ``probs`` (every label's
    probability); ``flagged``, ``silent`` and ``error`` as predict.py's top3.csv / tags.csv have them."""
    from fstag.data.features import SILENT_REASON

    order = np.argsort(-probs, axis=1, kind="stable")
    out: dict[str, list] = {"fname": list(fnames), "top_labels": [], "top_probs": []}
    if multi_label:
        out["labels"] = []
    out["probs"] = []
    for i in range(len(fnames)):
        row = probs[i]
        out["top_labels"].append([labels[j] for j in order[i, :top_k]])
        out["top_probs"].append([float(row[j]) for j in order[i, :top_k]])
        if multi_label:
            out["labels"].append([labels[j] for j in order[i] if row[j] >= threshold])
        out["probs"].append({lab: float(p) for lab, p in zip(labels, row)})
    silent = np.asarray(silent, dtype=bool)
    out["flagged"] = [p is not None or bool(s) for p, s in zip(problems, silent)]
    out["silent"] = [bool(s) for s in silent]
    out["error"] = [p or (SILENT_REASON if s else "") for p, s in zip(problems, silent)]
    return pd.DataFrame(out)
