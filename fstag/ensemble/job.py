"""The job of blend.py: members -> blended, calibrated test probabilities -> validated, scored submission.

Also saves the blended test probabilities (``probs.npz``), the self-contained config that rebuilds the
same submission (resolved paths, member run directories, the exact weights used) and ``blend.json`` (what
the blend is: its task, labels, members, weights, scores and MLflow run, for tools that package it), and
logs the blend as one MLflow run. Everything follows the members' task (:mod:`fstag.core.task`): a
multi-label blend combines per label, fits its weights on lwlrap and writes one probability column per
label.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fstag.ensemble import calibration as calib
from fstag.ensemble.blending import (
    BlendError,
    Families,
    SharedOOF,
    WeightFit,
    align,
    combine,
    family_oof,
    fit_weights_cv,
    group_families,
    kfold_parts,
    normalise,
    scores,
    shared_oof,
)
from fstag.core.config import to_plain
from fstag.core.task import METRIC_TITLES, Task, task_of
from fstag.data.layouts import Layout, open_layout
from fstag.core.io import save_npz_atomic, write_json_atomic, write_text_atomic
from fstag.runs.members import Member, resolve_members
from fstag.runs.run_dir import TEST_NPZ
from fstag.ensemble.blend_reports import log_blend_reports
from fstag.evaluate.reports import REPORTS_DIR
from fstag.ensemble.spec import BlendSpec, parse_blend
from fstag.ensemble.submission import (
    read_test_flags,
    score_probabilities,
    score_submission,
    validate_probability_submission,
    validate_submission,
    write_probability_submission,
    write_submission,
)
from fstag.runs.tracking import ensure_experiment, log_params_flat, metric_name

CONFIG_NAME = "config.yaml"
PROBS_NPZ = "probs.npz"
BLEND_JSON = "blend.json"  # what the blend is (task, labels, members, weights, scores, MLflow run): fstag.serve reads it


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


def _verified(layout: Layout, fnames: list[str]) -> np.ndarray:
    """The train table's ``manually_verified`` flag of each OOF row (True where train.csv has no such column)."""
    train = layout.train_table()
    flag = dict(zip(train["fname"], train["manually_verified"].astype(bool)))
    return np.array([flag.get(f, False) for f in fnames], dtype=bool)


def _weights(spec: BlendSpec, shared: SharedOOF, families: Families, n: int, verified,
             task: Task) -> tuple[list[float], WeightFit | None]:
    """The member weights passed to :func:`combine`, exactly as saved for a rebuild (``oof``: fitted
    per family on the families' shared OOF rows, cross-validated, then split equally over each family's
    members), and the fit's report (None unless ``oof``)."""
    if spec.weights == "oof":
        fit = fit_weights_cv(shared.probs, shared.targets, spec.method, verified, spec.min_verified, spec.cv_folds,
                             spec.cv_seed, task)
        return families.member_weights(fit.weights), fit
    if spec.weights is None:
        return [float(w) for w in normalise(np.ones(n))], None
    return list(spec.weights), None


def _oof_report(members, oofs, shared, families, spec, weights, fit, task: Task) -> tuple[list[tuple], dict[str, float]]:
    """Rows (name, n, <the task's two scores>, weight) for the table, and the matching MLflow metrics."""
    rows, metrics = [], {}
    family_w = families.family_weights(weights)
    shown = normalise(weights)
    first, second = task.metrics
    for m, oof, w in zip(members, oofs, shown):
        s = scores(oof.probs, oof.targets, task)
        rows.append((m.key, len(oof.fnames), s[first], s[second], w))
        metrics[f"oof_{first}/{m.key}"], metrics[f"oof_{second}/{m.key}"] = s[first], s[second]
    if shared.fnames:
        n = len(shared.fnames)
        if spec.weights == "oof":
            eq = scores(combine(shared.probs, None, spec.method, task), shared.targets, task)
            rows.append(("blend, equal weights", n, eq[first], eq[second], None))
            metrics[f"oof_{first}_equal_weights"] = eq[first]
        s = scores(combine(shared.probs, family_w, spec.method, task), shared.targets, task)
        rows.append(("blend", n, s[first], s[second], None))
        metrics.update({f"oof_{first}": s[first], f"oof_{second}": s[second], "oof_n_shared": float(n)})
    if fit is not None:
        metrics.update({
            f"oof_{first}_in_sample": fit.in_sample, f"oof_{first}_cv": fit.cv,
            f"oof_{first}_equal_weights_fit_rows": fit.equal,
            "oof_fit_n": float(fit.n_rows), "oof_fit_verified_only": float(fit.verified_only),
            "oof_cv_folds": float(fit.folds),
        })
    return rows, metrics


def _weight_notes(members, families: Families, fit: WeightFit | None, spec: BlendSpec, task: Task) -> list[str]:
    """What the OOF weights rest on: the fitting rows and both scores, and the members weighed by family."""
    notes = []
    title = METRIC_TITLES[task.primary]
    if fit is not None:
        rows = f"{fit.n_rows} verified" if fit.verified_only else f"all {fit.n_rows}"
        why = "" if fit.verified_only else f" (fewer than blend.oof.min_verified={spec.min_verified} are verified)"
        notes.append(
            f"OOF weights fitted per family on {rows} shared OOF rows{why}: {title} in-sample {fit.in_sample:.4f}, "
            f"{fit.folds}-fold cross-validated {fit.cv:.4f} (equal weights {fit.equal:.4f}); "
            "the cross-validated score is the honest one"
        )
    for i, m in enumerate(members):
        if spec.weights == "oof" and families.retrain and families.retrain[i]:
            notes.append(
                f"{m.key}: retrain_val run carrying its parent's OOF, so OOF rows cannot weigh it; it shares the "
                f"weight of family {families.keys[families.of_member[i]]} equally with its "
                f"{families.size(i) - 1} other member(s)"
            )
    return notes


def _print_table(rows: list[tuple], task: Task) -> None:
    width = max(len(r[0]) for r in rows)
    a, b = (METRIC_TITLES[m] for m in task.metrics)
    print(f"{'OOF':<{width}}  {'n':>6}  {a:>6}  {b:>6}  {'weight':>6}")
    for name, n, first, second, w in rows:
        weight = "" if w is None else f"{w:.4f}"
        print(f"{name:<{width}}  {n:>6}  {first:>6.4f}  {second:>6.4f}  {weight:>6}")


def _calibrate(spec, blend_test, shared, family_w, labels, layout, task: Task) -> tuple[np.ndarray, dict[str, float]]:
    """Apply ``blend.calibration`` to the blended test probabilities; also return metrics to log.

    Temperature scaling keeps every row's ranking (the submission is the same without it); it is scored
    on the shared OOF rows by log-loss and top-1 ECE, before and after, with the temperature of each
    row fitted on the other parts of a K-fold split (out of sample).
    """
    if spec.calibration != "none" and task.multi_label:
        raise BlendError(f"blend.calibration={spec.calibration}: the prior correction and temperature scaling are "
                         "single-label calibrations (one softmax per row); a multi-label blend takes blend.calibration=none")
    if spec.calibration == "prior":
        train = calib.class_shares(layout.train_table()["label"], labels)
        return calib.prior_correction(blend_test, train, calib.expected_test_shares(spec.test_share, labels)), {}
    if spec.calibration == "temperature":
        oof_blend = combine(shared.probs, family_w, spec.method)
        model = calib.fit_temperature(oof_blend, shared.targets)
        metrics = {"temperature": calib.temperature_of(model),
                   "oof_logloss_before": calib.log_loss(oof_blend, shared.targets),
                   "oof_ece_before": calib.expected_calibration_error(oof_blend, shared.targets)}
        parts = kfold_parts(len(shared.targets), spec.cv_folds, spec.cv_seed)
        if len(parts) >= 2:
            after = calib.cross_validated_temperature(oof_blend, shared.targets, parts)
            metrics.update({"oof_logloss_after": calib.log_loss(after, shared.targets),
                            "oof_ece_after": calib.expected_calibration_error(after, shared.targets)})
        return calib.apply_temperature(model, blend_test), metrics
    return blend_test, {}


def _print_calibration(spec: BlendSpec, metrics: dict[str, float], n_rows: int) -> None:
    if spec.calibration != "temperature":
        return
    print(f"temperature scaling: T = {metrics['temperature']:.4f} (fitted on {n_rows} OOF rows). It keeps every "
          "row's ranking, so the submission's top 3 and its MAP@3 are the same as without it; it changes only "
          f"the probabilities in {PROBS_NPZ}.")
    if "oof_logloss_after" in metrics:
        print(f"  OOF log-loss {metrics['oof_logloss_before']:.4f} -> {metrics['oof_logloss_after']:.4f}, "
              f"ECE (top-1, 15 bins) {metrics['oof_ece_before']:.4f} -> {metrics['oof_ece_after']:.4f} "
              f"({spec.cv_folds}-fold cross-validated temperature)")


def save_config(cfg: DictConfig, members: list[Member], weights: list[float], output_dir: str | Path) -> Path:
    """Write the resolved config with the member run directories and the weights used to ``config.yaml``.

    Under Hydra, its run-dir template is kept (unresolved) so a rebuild writes to a fresh output folder.
    """
    from hydra.core.hydra_config import HydraConfig

    plain = to_plain(cfg)
    plain["blend"]["members"] = [m.saved_spec for m in members]  # runs:/<id> for MLflow members, else the path
    selectors = list(dict.fromkeys(m.selector for m in members if m.selector))
    if selectors:  # what picked them, for the record: a rebuild uses the explicit list above
        plain["blend"]["selected_by"] = selectors
    plain["blend"]["weights"] = weights
    if HydraConfig.initialized():
        plain["hydra"] = {"run": {"dir": OmegaConf.to_container(HydraConfig.get().run, resolve=False)["dir"]}}
    path = Path(output_dir) / CONFIG_NAME
    write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(plain)))
    return path


def log_to_mlflow(cfg: DictConfig, spec: BlendSpec, members, weights, metrics, artifacts, output_dir,
                  families: Families | None = None, also=None, task: Task | None = None) -> str:
    """Log the blend as one MLflow run ``blend/<name>``; return its run id (a ``local-`` placeholder while the
    tracking store is away). ``families``: the members that share one OOF weight (a train run and its retrain_val
    runs), logged as the ``families`` param. ``also(run_id, client)`` logs more (the per-class reports) before the
    run is marked FINISHED. The calls go to ``<output_dir>/mlflow_journal.jsonl`` (:mod:`fstag.runs.journal`),
    sent by a thread; the blend waits ``mlflow.end_wait_s`` at most (as long as the backlog moves) and otherwise
    leaves the journal for ``python -m fstag.runs sync``, which replaces the placeholder in blend.json."""
    from mlflow.entities import Metric

    from fstag.runs.journal import RunJournal, Settings, pending_dir

    uri = str(cfg.mlflow.tracking_uri)
    settings = Settings.of(to_plain(cfg.mlflow))
    journal = RunJournal.open(output_dir, uri, expect=None, pending_root=pending_dir(str(cfg.paths.root_dir)),
                              settings=settings)
    tags = {"fstag.blend_dir": str(output_dir), "fstag.task": task.name if task is not None else "single_label"}
    run_id = journal.open_run(
        str(cfg.mlflow.experiment), cfg.mlflow.get("artifact_location"), f"blend/{spec.name}", tags,
        {
            "members": json.dumps([m.key for m in members]),
            "member_dirs": json.dumps([str(m.path.resolve()) for m in members]),
            "weights": json.dumps(weights),
            "weights_mode": "oof" if spec.weights == "oof" else "equal" if spec.weights is None else "given",
            "oof.folds": spec.cv_folds,
            "oof.seed": spec.cv_seed,
            "oof.min_verified": spec.min_verified,
            "families": json.dumps({k: [m.key for m, f in zip(members, families.of_member) if f == i]
                                    for i, k in enumerate(families.keys)} if families else None),
            "method": spec.method,
            "calibration": spec.calibration,
            "prior.test_share": json.dumps(spec.test_share),
            "exp": str(cfg.exp),
        },
    )
    client = journal.client()
    try:
        clean = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(metric_name(k), v, now, 0) for k, v in sorted(clean.items())])
        for path in artifacts:  # copied beside the journal when they live elsewhere (the submission)
            client.log_artifact(run_id, str(path))
        if also is not None:
            also(run_id, client)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        journal.close(wait_s=settings.end_wait_s)
        raise
    client.set_terminated(run_id, "FINISHED")
    journal.sync_to_disk()
    journal.close(wait_s=settings.end_wait_s)
    return journal.current_id


@dataclass
class BlendInputs:
    """What :func:`load_members` reads: the resolved members, their test predictions and OOF rows."""

    members: list[Member]
    task: Task
    labels: list[str]
    layout: Layout
    test_fnames: list[str]
    test: np.ndarray      # (members, clips, classes), in sample_submission.csv order
    oofs: list
    families: Families
    shared: SharedOOF     # the OOF rows the families share


def run_blend(cfg: DictConfig, output_dir: str | Path) -> dict[str, float]:
    """Blend, calibrate, write, validate and score the submission; save the config; log to MLflow.

    Returns the metrics logged. Every member is resolved and checked before any predictions are read.
    """
    spec = parse_blend(to_plain(cfg.blend))
    inputs = load_members(cfg, spec)
    task = inputs.task
    weights, metrics = weigh(spec, inputs)
    family_w = inputs.families.family_weights(weights)
    blend_test, extra = _calibrate(spec, combine(inputs.test, weights, spec.method, task), inputs.shared, family_w,
                                   inputs.labels, inputs.layout, task)
    metrics.update(extra)
    submission, probs_path, truth, test_scores = write_outputs(spec, inputs, blend_test, output_dir)
    metrics.update({f"test_{k}": v for k, v in test_scores.items()})
    config_path = save_config(cfg, inputs.members, weights, output_dir)

    def reports(run_id: str, client=None) -> None:  # per-class reports on the blended OOF rows and the scored test rows
        shared = inputs.shared
        log_blend_reports(client or str(cfg.mlflow.tracking_uri), run_id, inputs.labels, Path(output_dir) / REPORTS_DIR,
                          combine(shared.probs, family_w, spec.method, task) if shared.fnames else None, shared.targets,
                          blend_test, inputs.test_fnames, truth, task)

    run_id = log_to_mlflow(cfg, spec, inputs.members, weights, metrics, [submission, config_path, probs_path],
                           output_dir, inputs.families, also=reports, task=task)
    write_blend_record(output_dir, spec, inputs, weights, metrics, run_id, str(cfg.mlflow.tracking_uri), submission)
    _print_calibration(spec, metrics, len(inputs.shared.fnames))
    _print_result(submission, test_scores, truth, task, inputs.layout)
    return metrics


def write_blend_record(output_dir, spec: BlendSpec, inputs: BlendInputs, weights, metrics, run_id: str,
                       tracking_uri: str, submission: Path) -> Path:
    """``blend.json``: the blend's task, labels, members (run directories and keys), weights, method,
    calibration, scores, fold split and MLflow run, beside its config.yaml (what packages it elsewhere)."""
    first = inputs.members[0].run
    record = {
        "name": spec.name, "task": inputs.task.name, "labels": inputs.labels, "method": spec.method,
        "calibration": spec.calibration,
        "members": [{"key": m.key, "path": str(m.path.resolve()), "spec": m.saved_spec,
                     "mlflow_run_id": m.run.info.get("mlflow_run_id"), "weight": float(w)}
                    for m, w in zip(inputs.members, normalise(weights))],
        "metrics": {k: float(v) for k, v in metrics.items() if np.isfinite(v)},
        "fold_split": first.fold_split, "feature_key": first.feature_key, "features": first.info.get("features"),
        "data_name": first.info.get("data_name"), "data_digest": (first.fold_split or {}).get("train_csv_sha256"),
        "mlflow_run_id": run_id, "mlflow_tracking_uri": tracking_uri, "submission": str(submission),
    }
    path = Path(output_dir) / BLEND_JSON
    write_json_atomic(path, record)
    return path


def load_members(cfg: DictConfig, spec: BlendSpec) -> BlendInputs:
    """Resolve and check every member, then read their test predictions and OOF rows."""
    members = resolve_members(spec.members, Path(cfg.paths.runs_dir) / str(cfg.exp), str(cfg.mlflow.tracking_uri),
                              str(cfg.data.root), experiment=str(cfg.mlflow.experiment), data=cfg.data)
    labels = members[0].run.labels
    task = task_of(members[0].run.info)
    layout = open_layout(cfg.data)
    test_fnames = layout.test_fnames()
    if not test_fnames:
        raise BlendError(f"{layout.describe()}: the data set has no test clips to blend; blend.py writes the test "
                         "split's submission (predict.py tags any folder)")
    test = _test_stack(members, test_fnames, len(labels))
    oofs = [m.run.oof() for m in members]
    families = group_families([m.run.info for m in members])
    shared = shared_oof(family_oof(oofs, families, [m.key for m in members]), families.keys)
    _require_shared_rows(spec, members, oofs, shared)
    return BlendInputs(members, task, labels, layout, test_fnames, test, oofs, families, shared)


def weigh(spec: BlendSpec, inputs: BlendInputs) -> tuple[list[float], dict[str, float]]:
    """The members' weights (``blend.weights``; ``oof`` fits them per family) and the OOF scores, printed
    as a table with a note on each family's share."""
    verified = _verified(inputs.layout, inputs.shared.fnames) if spec.weights == "oof" else None
    weights, fit = _weights(spec, inputs.shared, inputs.families, len(inputs.members), verified, inputs.task)
    rows, metrics = _oof_report(inputs.members, inputs.oofs, inputs.shared, inputs.families, spec, weights, fit,
                                inputs.task)
    _print_table(rows, inputs.task)
    if not inputs.shared.fnames:
        print("(the members share no OOF row, so the blend has no OOF score)")
    for note in _weight_notes(inputs.members, inputs.families, fit, spec, inputs.task):
        print(note)
    return weights, metrics


def write_outputs(spec: BlendSpec, inputs: BlendInputs, blend_test: np.ndarray, output_dir: str | Path):
    """``probs.npz`` and the submission in the task's format (validated against sample_submission.csv, or
    the layout's test clips where it has none), scored when the data set has test labels. Returns
    ``(submission, probs.npz, test labels (a table) or None, test scores)``."""
    task, layout = inputs.task, inputs.layout
    probs_path = Path(output_dir) / PROBS_NPZ
    extra = {"task": np.array(task.name)} if task.multi_label else {}
    save_npz_atomic(probs_path, fnames=np.array(inputs.test_fnames), probs=blend_test.astype(np.float32),
                    labels=np.array(inputs.labels), **extra)
    template = layout.sample_submission if layout.sample_submission is not None and layout.sample_submission.is_file() \
        else inputs.test_fnames
    truth = layout.test_labels()
    flags = read_test_flags([m.path / TEST_NPZ for m in inputs.members])  # clips no member could hear (missing, silent)
    if task.multi_label:
        submission = write_probability_submission(spec.submission, inputs.test_fnames, blend_test, inputs.labels,
                                                  template if not isinstance(template, list) else None)
        validate_probability_submission(submission, template, inputs.labels)
        test_scores = score_probabilities(task, inputs.test_fnames, blend_test, inputs.labels, truth, flags) \
            if truth is not None else {}
        return submission, probs_path, truth, test_scores
    submission = write_submission(spec.submission, inputs.test_fnames, blend_test, inputs.labels)
    validate_submission(submission, template, inputs.labels)
    test_scores = score_submission(submission, truth, inputs.labels, flags=flags) if truth is not None else {}
    return submission, probs_path, truth, test_scores


def _print_result(submission: Path, test_scores: dict[str, float], truth, task: Task, layout: Layout) -> None:
    print(f"submission: {submission}")
    if not test_scores:
        return
    first, second = task.metrics
    parts = "".join(f", {p} {test_scores[f'{first}_{p}']:.4f}" for p in ("public", "private")
                    if f"{first}_{p}" in test_scores)
    source = layout.test_labels_file() or f"the test labels of {layout.describe()}"
    print(f"test {METRIC_TITLES[first]} {test_scores[first]:.4f} ({METRIC_TITLES[second]} {test_scores[second]:.4f}"
          f"{parts}) on {source}")
