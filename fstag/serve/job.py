"""The ways to a packaged model: ``python blend.py ... blend.register=<name>`` (:func:`register_blend`, after the
blend job), ``python -m fstag.export runs=[...]`` (:func:`run_export`, runs without a blend) and
``python -m fstag.export from_blend=<blend folder>`` (:func:`package_blend`, a blend made earlier).

Both resolve the members with their checkpoints (as predict.py does: local run directories, or MLflow runs fetched
from the tracking server), write a bundle (:mod:`fstag.serve.bundle`) in the format asked (``torch`` or ``onnx``),
log it as the pyfunc model ``model`` of an MLflow run (the blend's own run; an ``export/<name>`` run for runs), and
register it with an alias (:mod:`fstag.serve.registry`). ``python -m fstag.export`` also saves the model folder
under its output directory, which ``mlflow models serve -m <folder>`` serves without a registry.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fstag.core.config import to_plain
from fstag.serve.bundle import FORMATS, SETTINGS, BundleError, build_bundle
from fstag.serve.registry import DEFAULT_ALIAS, headline_scores, log_model, register


def _settings(cfg: DictConfig) -> dict[str, Any]:
    return dict(to_plain(cfg.serve)) if cfg.get("serve") is not None else dict(SETTINGS)


def _format(value: Any, key: str) -> str:
    fmt = str(value or "torch")
    if fmt not in FORMATS:
        raise BundleError(f"{key}={fmt!r}: choose one of {FORMATS} (torch: the members' weights for PyTorch; onnx: "
                          "each member as ONNX, run by onnxruntime)")
    return fmt


def _calibration(saved: DictConfig, blend: dict) -> dict[str, Any]:
    """The blend's calibration as numbers the served model applies: the fitted temperature, or the prior
    correction's train and test class shares (from the blend's saved config: its data set and blend.prior)."""
    name = str(blend.get("calibration") or "none")
    if name == "temperature":
        return {"name": name, "temperature": float(blend["metrics"]["temperature"])}
    if name == "prior":
        from fstag.data.layouts import open_layout
        from fstag.ensemble.calibration import class_shares, expected_test_shares

        labels = blend["labels"]
        train = class_shares(open_layout(saved.data).train_table()["label"], labels)
        test = expected_test_shares(to_plain((saved.blend.get("prior") or {}).get("test_share")), labels)
        return {"name": name, "train_share": train.tolist(), "test_share": test.tolist()}
    return {"name": "none"}


def _resolve(cfg: DictConfig, specs: list[str]):
    from fstag.runs.members import resolve_members

    return resolve_members(specs, Path(str(cfg.paths.runs_dir)) / str(cfg.exp), str(cfg.mlflow.tracking_uri),
                           str(cfg.data.root), checkpoints=True, experiment=str(cfg.mlflow.experiment))


def _report(spec: dict, model_uri: str, version, name: str | None, alias: str | None, tracking_uri: str) -> None:
    """What was made, and the command that serves it."""
    print(f"model: {model_uri} ({spec['backend']}, {len(spec['members'])} member(s), {spec['task']})")
    if version is not None:
        ref = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version.version}"
        print(f"registered: {name} version {version.version}" + (f", alias {alias}" if alias else ""))
        print(f"serve it:   MLFLOW_TRACKING_URI={tracking_uri} mlflow models serve -m {ref} --env-manager local "
              "--host 127.0.0.1 --port 5001")


def package_blend(cfg: DictConfig, blend_dir: str | Path, name: str | None, alias: str | None, fmt: str,
                  save_to: Path | None = None):
    """A finished blend (its folder: blend.json, config.yaml) packaged, logged as the model of the blend's own
    MLflow run and, with ``name``, registered as a new version of it with ``alias``; ``save_to``: also save the
    model folder there. Returns ``(tagger.json's content, model URI, ModelVersion or None)``."""
    import mlflow
    from omegaconf import OmegaConf

    from fstag.ensemble.job import BLEND_JSON, CONFIG_NAME
    from fstag.serve.registry import model_kwargs, tracking

    blend_dir = Path(blend_dir)
    if not (blend_dir / BLEND_JSON).is_file():
        raise BundleError(f"{blend_dir}: not a blend output folder ({BLEND_JSON} not found; blend.py writes it)")
    blend = json.loads((blend_dir / BLEND_JSON).read_text())
    run_id = str(blend.get("mlflow_run_id") or "")
    tracking_uri = str(blend.get("mlflow_tracking_uri") or cfg.mlflow.tracking_uri)
    if not run_id or run_id.startswith("local-"):
        raise BundleError(f"{blend_dir / BLEND_JSON}: the blend's MLflow run ({run_id or 'none'}) has not reached the "
                          f"tracking store {tracking_uri} yet; once `python -m fstag.runs sync` has sent it, package the "
                          f"blend with: python -m fstag.export from_blend={blend_dir} register=<name>")
    saved = OmegaConf.load(blend_dir / CONFIG_NAME)
    members = _resolve(cfg, [m["spec"] for m in blend["members"]])
    if len(members) != len(blend["members"]):
        raise BundleError(f"{blend_dir / BLEND_JSON}: {len(blend['members'])} members, {len(members)} resolved")
    primary = "lwlrap" if blend["task"] == "multi_label" else "map3"
    source = {
        "kind": "blend", "blend_name": blend["name"], "blend_dir": str(blend_dir.resolve()), "run_id": run_id,
        "tracking_uri": tracking_uri,
        "config_digest": "sha256:" + hashlib.sha256((blend_dir / CONFIG_NAME).read_bytes()).hexdigest()[:16],
        "fold_split": blend.get("fold_split"), "data_digest": blend.get("data_digest"),
        "data_name": blend.get("data_name"), "metrics": headline_scores(blend.get("metrics") or {}, primary),
    }
    parts = [(m.key, m.run, float(b["weight"]), b["spec"]) for m, b in zip(members, blend["members"])]
    with tempfile.TemporaryDirectory(prefix="fstag-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        spec = build_bundle(bundle, parts, name=str(name or blend["name"]), fmt=fmt, settings=_settings(cfg),
                            method=blend["method"], calibration=_calibration(saved, blend), source=source)
        if save_to is not None:
            with tracking(tracking_uri), tempfile.TemporaryDirectory(prefix="fstag-code-") as code:
                mlflow.pyfunc.save_model(path=str(save_to), **model_kwargs(bundle, spec, Path(code)))
        model_uri = log_model(bundle, spec, tracking_uri, run_id)
        version = register(model_uri, spec, tracking_uri, str(name), alias, run_id) if name else None
    _report(spec, model_uri, version, name, alias, tracking_uri)
    return spec, model_uri, version


def register_blend(cfg: DictConfig, output_dir: str | Path):
    """blend.py's ``blend.register=<name>``: the blend just written to ``output_dir`` packaged (``blend.format``),
    logged into its MLflow run and registered as a new version of ``<name>`` with ``blend.alias``. Returns the
    ``ModelVersion`` (None when ``blend.register`` is not set)."""
    name = cfg.blend.get("register")
    if not name:
        return None
    return package_blend(cfg, output_dir, str(name), cfg.blend.get("alias", DEFAULT_ALIAS),
                         _format(cfg.blend.get("format"), "blend.format"))[2]


def run_export(cfg: DictConfig) -> Path:
    """``python -m fstag.export``: runs (equal weights, or ``weights=[...]``) packaged into ``<output_dir>/model``
    (an MLflow model folder), logged as the model of an ``export/<name>`` MLflow run, and registered as
    ``register=<name>`` when given. Returns the model folder."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from fstag.core.task import task_of
    from fstag.runs.identity import run_digest
    from fstag.runs.tracking import ensure_experiment, log_params_flat
    from fstag.serve.registry import model_kwargs, tracking

    out = Path(str(cfg.output_dir))
    fmt = _format(cfg.get("format"), "format")
    if cfg.get("from_blend"):
        if cfg.runs:
            raise BundleError("give runs=[...] or from_blend=<blend folder>, not both")
        package_blend(cfg, Path(str(cfg.from_blend)).expanduser(), cfg.get("register"), cfg.get("alias"), fmt,
                      save_to=out / "model")
        print(f"model folder: {out / 'model'} (mlflow models serve -m {out / 'model'} --env-manager local)")
        return out / "model"
    specs = [str(cfg.runs)] if isinstance(cfg.runs, str) else [str(s) for s in (cfg.runs or [])]
    if not specs:
        raise BundleError("python -m fstag.export needs runs=[...]: run directories, MLflow run ids, arch/aug/fold_k "
                          "names or selectors (sweep:<name>, a pattern such as cnn_small/*/fold_*); or "
                          "from_blend=<a blend.py output folder>")
    members = _resolve(cfg, specs)
    weights = to_plain(cfg.get("weights"))
    if weights is None:
        weights = [1.0] * len(members)
    if not isinstance(weights, list) or len(weights) != len(members):
        raise BundleError(f"weights={weights!r}: null (equal) or one number for each of the {len(members)} runs")
    name = str(cfg.get("register") or cfg.name)
    task = task_of(members[0].run.info)
    first = members[0].run
    settings = _settings(cfg)
    digest = hashlib.sha256(json.dumps({"runs": [run_digest(m.path) for m in members], "weights": weights,
                                        "method": str(cfg.method), "settings": settings, "format": fmt},
                                       sort_keys=True, default=str).encode()).hexdigest()[:16]
    tracking_uri = str(cfg.mlflow.tracking_uri)
    exp_id = ensure_experiment(tracking_uri, str(cfg.mlflow.experiment), cfg.mlflow.get("artifact_location"))
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.create_run(exp_id, run_name=f"export/{name}", tags={
        "fstag.kind": "export", "fstag.task": task.name, "fstag.export_dir": str(Path(str(cfg.output_dir)).resolve()),
        "fstag.member_run_ids": json.dumps([m.run.info.get("mlflow_run_id") for m in members])})
    run_id = run.info.run_id
    metrics = {f"{m.key} {k}": float(v) for m in members for k, v in (m.run.info.get("best_metrics") or {}).items()
               if k == task.val_metric}
    source = {"kind": "runs", "run_id": run_id, "tracking_uri": tracking_uri, "config_digest": "sha256:" + digest,
              "fold_split": first.fold_split, "data_digest": (first.fold_split or {}).get("train_csv_sha256"),
              "data_name": first.info.get("data_name"), "metrics": metrics}
    try:
        log_params_flat(client, run_id, {"members": json.dumps([m.key for m in members]),
                                         "member_dirs": json.dumps([str(m.path.resolve()) for m in members]),
                                         "weights": json.dumps(weights), "method": str(cfg.method), "format": fmt,
                                         **{f"serve.{k}": v for k, v in settings.items()}})
        with tempfile.TemporaryDirectory(prefix="fstag-bundle-") as tmp:
            parts = [(m.key, m.run, float(w), m.saved_spec) for m, w in zip(members, weights)]
            spec = build_bundle(Path(tmp) / "bundle", parts, name=name, fmt=fmt, settings=settings,
                                method=str(cfg.method), source=source)
            with tracking(tracking_uri), tempfile.TemporaryDirectory(prefix="fstag-code-") as code:
                mlflow.pyfunc.save_model(path=str(out / "model"), **model_kwargs(Path(tmp) / "bundle", spec, Path(code)))
            model_uri = log_model(Path(tmp) / "bundle", spec, tracking_uri, run_id)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    version = register(model_uri, spec, tracking_uri, name, cfg.get("alias"), run_id) if cfg.get("register") else None
    print(f"model folder: {out / 'model'} (mlflow models serve -m {out / 'model'} --env-manager local)")
    _report(spec, model_uri, version, name, cfg.get("alias"), tracking_uri)
    return out / "model"
