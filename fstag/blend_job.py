"""The job of blend.py: members -> blended, calibrated test probabilities -> validated, scored submission.

Also saves the self-contained config that rebuilds the same submission (resolved paths, member run
directories, the exact weights used) and logs the blend as one MLflow run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fstag import calibration as calib
from fstag.blending import (
    METHODS,
    BlendError,
    Families,
    SharedOOF,
    align,
    combine,
    family_oof,
    fit_weights,
    group_families,
    normalise,
    scores,
    shared_oof,
)
from fstag.config import to_plain
from fstag.dataset_layout import DatasetLayout, read_sample_submission, read_train_csv
from fstag.io_utils import write_text_atomic
from fstag.members import Member, resolve_members
from fstag.submission import score_submission, validate_submission, write_submission
from fstag.tracking import ensure_experiment, log_params_flat, metric_name

CALIBRATIONS = ("none", "prior", "temperature")
CONFIG_NAME = "config.yaml"


@dataclass(frozen=True)
class BlendSpec:
    """The ``blend`` config group, checked: member specs, weights (None = equal, a list, or ``"oof"``)."""

    name: str
    members: list[str]
    weights: list[float] | str | None
    method: str
    calibration: str
    test_share: Any
    submission: Path


def parse_blend(blend: Mapping[str, Any]) -> BlendSpec:
    """Check the plain ``blend`` mapping; per-member ``{run, weight}`` entries become a weights list."""
    members, member_weights = [], []
    for i, entry in enumerate(blend.get("members") or []):
        if isinstance(entry, Mapping):
            if "run" not in entry:
                raise BlendError(f"blend.members[{i}]: a mapping needs a 'run' key, got {dict(entry)}")
            members.append(str(entry["run"]))
            member_weights.append(entry.get("weight"))
        else:
            members.append(str(entry))
            member_weights.append(None)
    weights = blend.get("weights")
    if any(w is not None for w in member_weights):
        if weights is not None:
            raise BlendError(f"blend.weights={weights!r} and per-member weights are both given; use one")
        weights = [1.0 if w is None else w for w in member_weights]
    if isinstance(weights, str) and weights != "oof":
        raise BlendError(f"blend.weights must be null, a list of numbers or 'oof', got {weights!r}")
    if isinstance(weights, list):
        if len(weights) != len(members):
            raise BlendError(f"blend.weights has {len(weights)} numbers for {len(members)} members")
        normalise(weights)  # raises on negative, non-finite or all-zero weights
        weights = [float(w) for w in weights]
    method = str(blend.get("method") or "gmean")
    if method not in METHODS:
        raise BlendError(f"blend.method must be one of {sorted(METHODS)}, got {method!r}")
    calibration = str(blend.get("calibration") or "none")
    if calibration not in CALIBRATIONS:
        raise BlendError(f"blend.calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    return BlendSpec(
        name=str(blend["name"]),
        members=members,
        weights=weights,
        method=method,
        calibration=calibration,
        test_share=(blend.get("prior") or {}).get("test_share"),
        submission=Path(blend["submission"]),
    )


def _test_stack(members: list[Member], fnames: list[str], n_classes: int) -> np.ndarray:
    stack = []
    for m in members:
        probs = align(m.run.test(), fnames, f"member {m.key} ({m.path}) test.npz vs sample_submission.csv")
        if probs.shape[1] != n_classes:
            raise BlendError(f"member {m.key}: test.npz has {probs.shape[1]} classes, run.json {n_classes} labels")
        stack.append(probs)
    return np.stack(stack)


def _require_shared_rows(spec: BlendSpec, members, oofs, shared: SharedOOF) -> None:
    """OOF weights and temperature scaling need OOF rows that every member predicts."""
    if shared.fnames:
        return
    need = []
    if spec.weights == "oof":
        need.append("blend.weights=oof")
    if spec.calibration == "temperature":
        need.append("blend.calibration=temperature")
    if need:
        counts = ", ".join(f"{m.key}: {len(o.fnames)} rows" for m, o in zip(members, oofs))
        raise BlendError(
            f"{' and '.join(need)} need{'s' if len(need) == 1 else ''} OOF rows that every member predicts, "
            "but these members share none "
            f"({counts}); blend members validated on the same fold, or drop {' and '.join(need)}"
        )


def _weights(spec: BlendSpec, shared: SharedOOF, families: Families, n: int) -> list[float]:
    """The member weights passed to :func:`combine`, exactly as saved for a rebuild (``oof``: fitted
    per family on the families' shared OOF rows, then spread over each family's members)."""
    if spec.weights == "oof":
        return families.member_weights(fit_weights(shared.probs, shared.targets, spec.method))
    if spec.weights is None:
        return [float(w) for w in normalise(np.ones(n))]
    return list(spec.weights)


def _oof_report(members, oofs, shared, families, spec, weights) -> tuple[list[tuple], dict[str, float]]:
    """Rows (name, n, map3, acc1, weight) for the table, and the matching MLflow metrics."""
    rows, metrics = [], {}
    family_w = families.family_weights(weights)
    shown = normalise(weights)
    for m, oof, w in zip(members, oofs, shown):
        s = scores(oof.probs, oof.targets)
        rows.append((m.key, len(oof.fnames), s["map3"], s["acc1"], w))
        metrics[f"oof_map3/{m.key}"], metrics[f"oof_acc1/{m.key}"] = s["map3"], s["acc1"]
    if shared.fnames:
        n = len(shared.fnames)
        if spec.weights == "oof":
            eq = scores(combine(shared.probs, None, spec.method), shared.targets)
            rows.append(("blend, equal weights", n, eq["map3"], eq["acc1"], None))
            metrics["oof_map3_equal_weights"] = eq["map3"]
        s = scores(combine(shared.probs, family_w, spec.method), shared.targets)
        rows.append(("blend", n, s["map3"], s["acc1"], None))
        metrics.update({"oof_map3": s["map3"], "oof_acc1": s["acc1"], "oof_n_shared": float(n)})
    return rows, metrics


def _print_table(rows: list[tuple]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'OOF':<{width}}  {'n':>6}  {'MAP@3':>6}  {'top-1':>6}  {'weight':>6}")
    for name, n, map3, acc1, w in rows:
        weight = "" if w is None else f"{w:.4f}"
        print(f"{name:<{width}}  {n:>6}  {map3:>6.4f}  {acc1:>6.4f}  {weight:>6}")


def _calibrate(spec, blend_test, shared, family_w, labels, layout) -> tuple[np.ndarray, dict[str, float]]:
    """Apply ``blend.calibration`` to the blended test probabilities; also return metrics to log."""
    if spec.calibration == "prior":
        train = calib.class_shares(read_train_csv(layout.train_csv)["label"], labels)
        return calib.prior_correction(blend_test, train, calib.expected_test_shares(spec.test_share, labels)), {}
    if spec.calibration == "temperature":
        model = calib.fit_temperature(combine(shared.probs, family_w, spec.method), shared.targets)
        return calib.apply_temperature(model, blend_test), {"temperature": calib.temperature_of(model)}
    return blend_test, {}


def save_config(cfg: DictConfig, members: list[Member], weights: list[float], output_dir: str | Path) -> Path:
    """Write the resolved config with the member run directories and the weights used to ``config.yaml``.

    Under Hydra, its run-dir template is kept (unresolved) so a rebuild writes to a fresh output folder.
    """
    from hydra.core.hydra_config import HydraConfig

    plain = to_plain(cfg)
    plain["blend"]["members"] = [str(m.path.resolve()) for m in members]
    plain["blend"]["weights"] = weights
    if HydraConfig.initialized():
        plain["hydra"] = {"run": {"dir": OmegaConf.to_container(HydraConfig.get().run, resolve=False)["dir"]}}
    path = Path(output_dir) / CONFIG_NAME
    write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(plain)))
    return path


def log_to_mlflow(cfg: DictConfig, spec: BlendSpec, members, weights, metrics, artifacts, output_dir) -> str:
    """Log the blend as one MLflow run ``blend/<name>``; return its run id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = str(cfg.mlflow.tracking_uri)
    exp_id = ensure_experiment(uri, str(cfg.mlflow.experiment), cfg.mlflow.get("artifact_location"))
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(exp_id, run_name=f"blend/{spec.name}", tags={"fstag.blend_dir": str(output_dir)})
    run_id = run.info.run_id
    try:
        log_params_flat(
            client,
            run_id,
            {
                "members": json.dumps([m.key for m in members]),
                "member_dirs": json.dumps([str(m.path.resolve()) for m in members]),
                "weights": json.dumps(weights),
                "weights_mode": "oof" if spec.weights == "oof" else "equal" if spec.weights is None else "given",
                "method": spec.method,
                "calibration": spec.calibration,
                "prior.test_share": json.dumps(spec.test_share),
                "exp": str(cfg.exp),
            },
        )
        clean = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(metric_name(k), v, now, 0) for k, v in sorted(clean.items())])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def run_blend(cfg: DictConfig, output_dir: str | Path) -> dict[str, float]:
    """Blend, calibrate, write, validate and score the submission; save the config; log to MLflow.

    Returns the metrics logged. Every member is resolved and checked before any predictions are read.
    """
    spec = parse_blend(to_plain(cfg.blend))
    members = resolve_members(spec.members, Path(cfg.paths.runs_dir) / str(cfg.exp), str(cfg.mlflow.tracking_uri),
                              str(cfg.data.root))
    labels = members[0].run.labels
    layout = DatasetLayout(Path(cfg.data.root))
    test_fnames = read_sample_submission(layout.sample_submission_csv)["fname"].tolist()
    test = _test_stack(members, test_fnames, len(labels))

    oofs = [m.run.oof() for m in members]
    keys = [m.key for m in members]
    families = group_families([m.run.info for m in members])
    shared = shared_oof(family_oof(oofs, families, keys), families.keys)
    _require_shared_rows(spec, members, oofs, shared)
    weights = _weights(spec, shared, families, len(members))
    rows, metrics = _oof_report(members, oofs, shared, families, spec, weights)
    _print_table(rows)
    if not shared.fnames:
        print("(the members share no OOF row, so the blend has no OOF score)")

    family_w = families.family_weights(weights)
    blend_test, extra = _calibrate(spec, combine(test, weights, spec.method), shared, family_w, labels, layout)
    metrics.update(extra)

    submission = write_submission(spec.submission, test_fnames, blend_test, labels)
    validate_submission(submission, layout.sample_submission_csv, labels)
    labels_csv = layout.test_labels_csv()
    test_scores = score_submission(submission, labels_csv, labels) if labels_csv else {}
    metrics.update({f"test_{k}": v for k, v in test_scores.items()})

    config_path = save_config(cfg, members, weights, output_dir)
    log_to_mlflow(cfg, spec, members, weights, metrics, [submission, config_path], output_dir)

    if "temperature" in metrics:
        print(f"temperature scaling: T = {metrics['temperature']:.4f} (fitted on {len(shared.fnames)} OOF rows)")
    print(f"submission: {submission}")
    if test_scores:
        parts = "".join(
            f", {p} {test_scores[f'map3_{p}']:.4f}" for p in ("public", "private") if f"map3_{p}" in test_scores
        )
        print(f"test MAP@3 {test_scores['map3']:.4f} (top-1 {test_scores['acc1']:.4f}{parts}) on {labels_csv}")
    return metrics
