"""A bundle logged as an MLflow pyfunc model and registered: the model's files, its code, its requirements,
its description, the registry version with its alias and tags, and the run it came from tagged back.

The model carries fstag's own code (``code_paths``: a copy of the ``fstag`` package of the checkout that built it,
under ``code/fstag`` in the model), because the numbers depend on it (feature extraction, TTA crops, the blend
maths) and fstag is not a package that pip can install elsewhere: whoever loads the model, from any folder, runs
the code the model was checked with. MLflow puts that folder first on ``sys.path`` when it loads the model.
Its ``requirements.txt`` pins the building environment's versions of the packages that code imports
(:func:`pinned_requirements`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator, Mapping

MODEL_CODE = Path(__file__).with_name("model_code.py")  # fstag.serve.model_code: the model's code, by path
ARTIFACT_PATH = "model"  # the model's name inside its run (runs:/<run id>/model)
DEFAULT_ALIAS = "champion"
# The distributions the served code imports, by backend (torch: the networks rebuilt by timm, the features and the
# TTA crops by torch and torchaudio; onnx: the networks run by onnxruntime, the features by librosa, no torch).
COMMON_REQUIREMENTS = ("mlflow", "cloudpickle", "numpy", "pandas", "omegaconf", "soundfile", "soxr")
BACKEND_REQUIREMENTS = {"torch": ("torch", "torchaudio", "timm", "torchvision"), "onnx": ("onnxruntime", "librosa")}


def pinned_requirements(backend: str, calibration: str = "none") -> list[str]:
    """``name==version`` of each package the model's code imports, as installed here (pip's ``requirements.txt``)."""
    names = list(COMMON_REQUIREMENTS) + list(BACKEND_REQUIREMENTS[backend])
    if calibration == "prior":
        names.append("scikit-learn")  # fstag.ensemble.calibration
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            raise RuntimeError(f"package {name} is not installed here, but the served model needs it") from None
    return pins


def code_copy(dest: Path) -> Path:
    """A copy of the ``fstag`` package being run (its .py files, no caches) at ``dest/fstag``."""
    import fstag

    src = Path(fstag.__file__).resolve().parent
    target = dest / "fstag"
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    return target


def description(spec: Mapping[str, Any]) -> str:
    """The registry version's description (Markdown): what it tags with, where it came from, how well it scored."""
    src = spec.get("source") or {}
    s, combo = spec["settings"], spec["combine"]
    kind = f"blend `{src['blend_name']}`" if src.get("kind") == "blend" else f"{len(spec['members'])} run(s)"
    how = f"{s['tta']} TTA crops" if s["mode"] == "crops" else f"every window, hop {s['hop_frames']} ({s['window_reduce']})"
    lines = [
        f"fstag audio tagger from {kind}: {spec['task']}, {len(spec['labels'])} labels, "
        f"{len(spec['members'])} member(s), {combo['method']} of their probabilities, calibration "
        f"{spec['calibration'].get('name', 'none')}; {how}; backend {spec['backend']}.",
        "",
        f"- source run: `{src.get('run_id')}`" + (f" (blend `{src.get('blend_name')}`, {src.get('blend_dir')})"
                                                  if src.get("kind") == "blend" else ""),
        f"- {'blend config' if src.get('kind') == 'blend' else 'members and settings'} digest: `{src.get('config_digest')}`",
    ]
    split = src.get("fold_split") or {}
    if split:
        lines.append(f"- fold split: {split.get('n_splits')} folds, seed {split.get('seed')}, digest `{split.get('digest')}`")
    lines.append(f"- data: `{src.get('data_name')}`, train table sha256 `{src.get('data_digest')}`; features "
                 f"`{spec['feature_key']}`")
    scores = {k: v for k, v in (src.get("metrics") or {}).items()}
    if scores:
        lines.append("- scores: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items())))
    lines.append("- members: " + "; ".join(f"{m['key']} ({m['arch']}, weight {m['weight']:.3f}, run "
                                          f"`{m.get('mlflow_run_id')}`)" for m in spec["members"]))
    lines += ["", "Request: a table of clips, `audio` (base64 file bytes) or `path`, optional `name`; params "
              "`top_k`, `threshold`, `errors` (raise|flag). See docs/serving.md."]
    return "\n".join(lines)


def headline_scores(metrics: Mapping[str, float], primary: str) -> dict[str, float]:
    """The blend's (or runs') scores worth a description: OOF and test, the task's metrics, no per-member rows."""
    keep = {}
    for k, v in metrics.items():
        if "/" in k or not k.startswith(("oof_", "test_", "val_")):
            continue
        if primary in k or k.split("_", 1)[1] in ("acc1", "map", "lwlrap"):
            keep[k] = float(v)
    return keep


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` (tracking and registry) for the block, then restored."""
    import mlflow

    before, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(registry)


def model_kwargs(bundle: Path, spec: Mapping[str, Any], code_dir: Path) -> dict[str, Any]:
    """What ``mlflow.pyfunc.log_model`` and ``save_model`` are given for a bundle: the python model, the bundle as
    its artifact, a copy of fstag's code (made in ``code_dir``), the signature, the input example, the pinned
    requirements and fstag's metadata."""
    from fstag.serve.pyfunc import ARTIFACT, input_example, signature

    s = spec["settings"]
    return dict(
        python_model=str(MODEL_CODE), artifacts={ARTIFACT: str(bundle)}, code_paths=[str(code_copy(code_dir))],
        signature=signature(spec["task"] == "multi_label", s["top_k"], s["threshold"]), input_example=input_example(),
        pip_requirements=pinned_requirements(spec["backend"], spec["calibration"].get("name", "none")),
        metadata={"fstag": {"name": spec["name"], "task": spec["task"], "labels": spec["labels"],
                            "backend": spec["backend"], "feature_key": spec["feature_key"],
                            "source": {k: v for k, v in (spec.get("source") or {}).items() if k != "metrics"}}},
    )


def log_model(bundle: Path, spec: Mapping[str, Any], tracking_uri: str, run_id: str) -> str:
    """Log ``bundle`` as the pyfunc model ``model`` of run ``run_id``; returns its model URI (``models:/m-...``)."""
    import mlflow

    with tracking(tracking_uri), tempfile.TemporaryDirectory(prefix="fstag-code-") as tmp, \
            mlflow.start_run(run_id=run_id):
        with warnings.catch_warnings():  # MLflow's advice to add type hints: the table's schema is the signature's
            warnings.filterwarnings("ignore", message=".*type hints.*")
            info = mlflow.pyfunc.log_model(name=ARTIFACT_PATH, **model_kwargs(bundle, spec, Path(tmp)))
    return info.model_uri


def register(model_uri: str, spec: Mapping[str, Any], tracking_uri: str, name: str, alias: str | None,
             run_id: str) -> Any:
    """Register ``model_uri`` as a new version of ``name``, describe and tag it, point ``alias`` at it and tag
    the run it came from with the version; returns the ``ModelVersion``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    src = spec.get("source") or {}
    tags = {"fstag.source_run_id": run_id, "fstag.task": spec["task"], "fstag.backend": spec["backend"],
            "fstag.feature_key": spec["feature_key"], "fstag.config_digest": str(src.get("config_digest")),
            "fstag.fold_split_digest": str((src.get("fold_split") or {}).get("digest")),
            "fstag.data_digest": str(src.get("data_digest")), "fstag.members": str(len(spec["members"]))}
    if src.get("kind") == "blend":
        tags.update({"fstag.blend_run_id": run_id, "fstag.blend_name": str(src.get("blend_name"))})
    with tracking(tracking_uri):
        mv = mlflow.register_model(model_uri, name, tags=tags)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.update_model_version(name, mv.version, description=description(spec))
        if not client.get_registered_model(name).description:
            client.update_registered_model(name, description="fstag audio tagger (docs/serving.md): a table of clips "
                                                             "in, labels and probabilities out")
        if alias:
            client.set_registered_model_alias(name, alias, mv.version)
        client.set_tag(run_id, "fstag.registered_model", name)
        client.set_tag(run_id, "fstag.registered_version", str(mv.version))
        if alias:
            client.set_tag(run_id, "fstag.registered_alias", alias)
        return client.get_model_version(name, mv.version)
