"""Per-class reports (fstag.evaluate.reports): the numbers against a direct computation, the files, and what a train
job and a blend log to MLflow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fstag.ensemble import blend_reports
from fstag.evaluate import reports
from fstag.evaluate.metrics import map_at_3
from fstag.runs.run_dir import OOF_NPZ, RUN_JSON
from fstag.ensemble.submission import score_submission
from fstag.runs.tracking import metric_name
from tests.test_blend import LABELS, compose, noisy_probs, world  # noqa: F401 (world: the blend fixture)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_FILES = ["oof_confusion.png", "oof_per_class.csv", "oof_per_class.png", "oof_top_confusions.csv"]


def hand_ap(positive: np.ndarray, score: np.ndarray) -> float:
    """Average precision by its definition: sum over score thresholds of (recall gain) x precision."""
    total, ap, last_recall = positive.sum(), 0.0, 0.0
    for t in np.unique(score)[::-1]:
        kept = score >= t
        tp = (positive & kept).sum()
        recall = tp / total
        ap += (recall - last_recall) * tp / kept.sum()
        last_recall = recall
    return ap


def direct_table(probs, targets, labels) -> pd.DataFrame:
    """The per-class numbers computed class by class, without fstag.evaluate.reports."""
    n, rows = len(targets), []
    for c, label in enumerate(labels):
        mine = targets == c
        support = int(mine.sum())
        rows.append({
            "label": label, "support": support, "predicted": int((probs.argmax(1) == c).sum()),
            "acc1": (probs[mine].argmax(1) == c).mean() if support else np.nan,
            "ap": hand_ap(targets == c, probs[:, c]) if support else np.nan,
            "map3": map_at_3(probs[mine], targets[mine]) if support else np.nan,
            "map3_contribution": map_at_3(probs[mine], targets[mine]) * support / n if support else 0.0,
        })
    return pd.DataFrame(rows)


def assert_tables_match(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == reports.TABLE_COLUMNS
    assert got["label"].tolist() == want["label"].tolist()
    assert got["support"].tolist() == want["support"].tolist()
    assert got["predicted"].tolist() == want["predicted"].tolist()
    for col in ("acc1", "ap", "map3", "map3_contribution"):
        np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-9, atol=1e-12,
                                   err_msg=col)


def synthetic(n=300, n_classes=41, seed=0, empty_class=None):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, n)
    if empty_class is not None:
        targets[targets == empty_class] = (empty_class + 1) % n_classes
    labels = [f"Label_{i:02d}_of_a_class" for i in range(n_classes)]
    return noisy_probs(targets, 1.5, rng, n_classes), targets, labels


# --- the numbers ------------------------------------------------------------------------------------
def test_class_table_matches_a_direct_computation_and_sums_to_map3():
    probs, targets, labels = synthetic(empty_class=3)
    table = reports.class_table(probs, targets, labels)
    assert_tables_match(table, direct_table(probs, targets, labels))
    assert table["map3_contribution"].sum() == pytest.approx(map_at_3(probs, targets), abs=1e-12)
    assert table["support"].sum() == len(targets) and table.loc[3, "support"] == 0
    assert np.isnan(table.loc[3, ["acc1", "ap", "map3"]].to_numpy(float)).all()


def test_ties_rank_as_map_at_3_ranks_them():
    probs = np.array([[0.25, 0.25, 0.25, 0.25]] * 4)  # all tied: class 0 ranks first, 3 outside the top 3
    targets = np.array([0, 1, 2, 3])
    table = reports.class_table(probs, targets, ["a", "b", "c", "d"])
    assert table["map3"].tolist() == pytest.approx([1.0, 0.5, 1 / 3, 0.0])
    assert table["map3_contribution"].sum() == pytest.approx(map_at_3(probs, targets))


def test_top_confusions_by_hand():
    counts = np.array([[5, 3, 0], [1, 4, 1], [0, 3, 2]])
    top = reports.top_confusions(counts, ["a", "b", "c"], n=3)
    assert list(top.columns) == reports.CONFUSION_COLUMNS
    assert top[["true", "predicted", "count"]].values.tolist() == [["c", "b", 3], ["a", "b", 3], ["b", "a", 1]]
    assert top["share_of_true"].tolist() == pytest.approx([3 / 5, 3 / 8, 1 / 6])


def test_bad_input_is_a_clear_error():
    probs, targets, labels = synthetic(n=10, n_classes=5)
    with pytest.raises(reports.ReportError, match="no rows"):
        reports.class_table(probs[:0], targets[:0], labels)
    with pytest.raises(reports.ReportError, match="5 classes but 4 labels"):
        reports.class_table(probs, targets, labels[:4])
    with pytest.raises(reports.ReportError, match=r"probs \(10, 5\) and targets \(9,\)"):
        reports.class_table(probs, targets[:9], labels)
    with pytest.raises(reports.ReportError, match="target 7 is not a class index 0..4"):
        reports.class_table(probs, np.r_[targets[:9], 7], labels)


def test_no_rows_skips_the_report_without_touching_mlflow(tmp_path, caplog):
    assert reports.log_class_report(None, "run0", np.zeros((0, 3)), np.zeros(0, int), ["a", "b", "c"], tmp_path) is None
    assert "no oof rows" in caplog.text and not any(tmp_path.iterdir())


# --- the files --------------------------------------------------------------------------------------
def png_size(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_report_files_at_41_classes(tmp_path):
    probs, targets, labels = synthetic(n=400)
    labels[5] = "Writing, typing=fast"  # not a valid MLflow metric name as it is
    report = reports.write_class_report(probs, targets, labels, tmp_path)
    assert sorted(p.name for p in report.files) == REPORT_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == REPORT_FILES  # no temporary files left
    width, height = png_size(tmp_path / "oof_confusion.png")
    fig_w, fig_h = reports.confusion_figsize(41)
    assert (width, height) == (round(fig_w * reports.DPI), round(fig_h * reports.DPI))
    assert height >= 25 * 41  # room for 41 readable row labels
    chart_w, chart_h = reports.chart_figsize(41)
    assert png_size(tmp_path / "oof_per_class.png") == (round(chart_w * reports.DPI), round(chart_h * reports.DPI))
    table = pd.read_csv(tmp_path / "oof_per_class.csv", keep_default_na=False, na_values=[""])
    assert_tables_match(table, direct_table(probs, targets, labels))
    top = pd.read_csv(tmp_path / "oof_top_confusions.csv")
    assert list(top.columns) == reports.CONFUSION_COLUMNS and len(top) == reports.TOP_CONFUSIONS
    assert top["count"].is_monotonic_decreasing and (top["true"] != top["predicted"]).all()
    assert report.metrics[metric_name("map3/Writing, typing=fast")] == pytest.approx(table.loc[5, "map3"])
    assert "map3/Writing_ typing:fast" in report.metrics
    assert reports.metric_prefix("oof") == "" and reports.metric_prefix("test") == "test_"


def test_scored_test_rows_leave_out_ignored_clips_and_name_bad_labels(tmp_path):
    csv = tmp_path / "test_post_competition.csv"
    pd.DataFrame({"fname": ["x.wav", "y.wav", "z.wav"], "label": ["b", "None", "a"],
                  "usage": ["Public", "Ignored", "Private"]}).to_csv(csv, index=False)
    rows, targets = blend_reports.scored_test_rows(csv, ["z.wav", "y.wav", "x.wav"], ["a", "b"])
    assert rows.tolist() == [2, 0] and targets.tolist() == [1, 0]
    with pytest.raises(reports.ReportError, match=r"test_post_competition.csv: label\(s\) \['a'\] are not among"):
        blend_reports.scored_test_rows(csv, ["z.wav", "y.wav", "x.wav"], ["b", "c"])
    with pytest.raises(reports.ReportError, match=r"1 scored clip\(s\) have no prediction, e.g. \['z.wav'\]"):
        blend_reports.scored_test_rows(csv, ["x.wav"], ["a", "b"])


# --- the train job and the blend in MLflow -------------------------------------------------------------
def _artifact_paths(client, run_id: str, folder: str) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run_id, folder))


@pytest.mark.slow
def test_train_job_logs_its_oof_report_to_mlflow(swept_project):
    from mlflow.tracking import MlflowClient

    job = swept_project.runs_dir / "cnn_small" / "none" / "default" / "fold_0"
    info = json.loads((job / RUN_JSON).read_text())
    labels = info["labels"]
    with np.load(job / OOF_NPZ) as oof:
        probs, targets = oof["probs"].astype(np.float64), oof["targets"].astype(np.int64)
    table = pd.read_csv(job / reports.REPORTS_DIR / "oof_per_class.csv", keep_default_na=False, na_values=[""])
    assert_tables_match(table, direct_table(probs, targets, labels))
    assert table["map3_contribution"].sum() == pytest.approx(info["oof_map3"])
    fig_w, fig_h = reports.confusion_figsize(len(labels))
    assert png_size(job / reports.REPORTS_DIR / "oof_confusion.png") == (round(fig_w * 100), round(fig_h * 100))

    client = MlflowClient(swept_project.tracking_uri)
    run = client.get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert _artifact_paths(client, run.info.run_id, "reports") == [f"reports/{f}" for f in REPORT_FILES]
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith("map3/")}
    want = {metric_name(f"map3/{lab}"): v for lab, v in zip(table["label"], table["map3"]) if np.isfinite(v)}
    assert logged.keys() == want.keys() and len(logged) > 0
    for k, v in want.items():
        assert logged[k] == pytest.approx(v)


def test_blend_logs_oof_and_test_reports(world, monkeypatch, tmp_path):  # noqa: F811 (the imported fixture)
    from mlflow.tracking import MlflowClient

    from fstag.ensemble.job import run_blend

    root, _ = world
    db = tmp_path / "blend.db"
    monkeypatch.setenv("FSTAG_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    members = "[cnn_small/none/fold_0,cnn_small/none/fold_1]"
    metrics = run_blend(compose([f"blend.members={members}", "blend.name=rep"]), tmp_path / "out")
    out = tmp_path / "out" / reports.REPORTS_DIR
    oof = pd.read_csv(out / "oof_per_class.csv")
    test = pd.read_csv(out / "test_per_class.csv")
    assert oof["support"].sum() == metrics["oof_n_shared"] == 60
    assert oof["map3_contribution"].sum() == pytest.approx(metrics["oof_map3"])
    assert test["support"].sum() == metrics["test_n_scored"] == 14  # 16 clips, 2 of them Ignored
    assert test["map3_contribution"].sum() == pytest.approx(metrics["test_map3"])  # the submission's top 3
    assert test["map3_contribution"].sum() == pytest.approx(
        score_submission(root / "submissions" / "rep.csv", root / "data" / "demo" / "test_post_competition.csv",
                         LABELS)["map3"])

    client = MlflowClient(f"sqlite:///{db}")
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
              if r.info.run_name == "blend/rep"]
    files = REPORT_FILES + [f.replace("oof_", "test_") for f in REPORT_FILES]
    assert _artifact_paths(client, run.info.run_id, "reports") == sorted(f"reports/{f}" for f in files)
    for split, table in (("map3", oof), ("test_map3", test)):
        for label, value in zip(table["label"], table["map3"]):
            if np.isfinite(value):
                assert run.data.metrics[f"{split}/{label}"] == pytest.approx(value)
