"""Member selectors and the runs catalog on job directories written as fstag/runs/run_dir.py describes:
patterns, sweeps, rankings (hand-computed), what a selector that matches nothing says, and the errors
that name the sibling variants of a job that is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fstag.ensemble.blending import BlendError
from fstag.ensemble.spec import parse_blend
from fstag.runs.catalog import SWEEP_JOBS, SWEEPS_DIR, load_catalog, local_jobs, read_job
from fstag.runs.members import MemberError, resolve_member
from fstag.runs.selectors import SelectorError, expand, is_selector, matches, select

LR1, LR5 = "optimizer.lr=0.01", "optimizer.lr=0.05"
# (variant, job, val_map3, complete): two variants x folds 0, 1 and their retrains, a default-variant
# job, and an unfinished one
JOBS = [
    (LR1, "fold_0", 0.60, True), (LR1, "fold_1", 0.40, True), (LR1, "fold_0_r", 0.99, True), (LR1, "fold_1_r", 0.99, True),
    (LR5, "fold_0", 0.50, True), (LR5, "fold_1", 0.70, True), (LR5, "fold_0_r", 0.10, True), (LR5, "fold_1_r", 0.10, True),
    ("default", "fold_0", 0.55, True), ("default", "fold_2", 0.90, False),
]


def write_job(exp_dir: Path, variant: str, job: str, val_map3: float, complete: bool, arch="cnn_small", aug="none") -> Path:
    d = exp_dir / arch / aug / variant / job
    d.mkdir(parents=True)
    items = [] if variant == "default" else variant.split(",")
    info = {"arch": arch, "aug": aug, "variant": variant, "name": job, "fold": int(job.split("_")[1]),
            "stage": "retrain_val" if job.endswith("_r") else "train", "overrides": items, "complete": complete,
            "best_val_acc1": val_map3 - 0.1, "best_metrics": {"val_map3": val_map3, "val_acc1": val_map3 - 0.1},
            "oof_map3": round(val_map3 / 2, 3), "epochs_trained": 3, "mlflow_run_id": f"{abs(hash((variant, job))):032x}"[:32]}
    (d / "run.json").write_text(json.dumps(info))
    (d.parent / "variant.json").write_text(json.dumps({"variant": variant, "overrides": items}))
    return d


def write_sweep(exp_dir: Path, parent_id: str, name: str, job_dirs: list[Path]) -> None:
    folder = exp_dir / SWEEPS_DIR
    (folder / parent_id / SWEEP_JOBS).mkdir(parents=True)
    (folder / f"20261130-000000-{parent_id[:8]}.json").write_text(json.dumps(
        {"mlflow_parent_run_id": parent_id, "name": name, "run_name": f"sweep/demo/{name}", "overrides": []}))
    for i, d in enumerate(job_dirs):
        (folder / parent_id / SWEEP_JOBS / f"{i:05d}.json").write_text(json.dumps(
            {"job_dir": str(d), "num": i, "status": "COMPLETED", "overrides": []}))


@pytest.fixture
def exp_dir(tmp_path) -> Path:
    exp = tmp_path / "multirun" / "demo"
    dirs = {(v, j): write_job(exp, v, j, m, c) for v, j, m, c in JOBS}
    write_sweep(exp, "a" * 32, "lr", [dirs[(v, j)] for v in (LR1, LR5) for j in ("fold_0", "fold_1")])
    write_sweep(exp, "b" * 32, "lr_r", [dirs[(v, j)] for v in (LR1, LR5) for j in ("fold_0_r", "fold_1_r")])
    return exp


def names(recs) -> list[str]:
    return [r.key for r in recs]


def test_is_selector_tells_selectors_from_names_paths_and_run_ids():
    assert is_selector("cnn_small/*/fold_*") and is_selector("sweep:lr") and is_selector("all")
    assert is_selector("all|best:val_map3") and is_selector("cnn_small/none/fold_?")
    assert not is_selector("cnn_small/none/fold_0") and not is_selector("/abs/path/fold_0")
    assert not is_selector("runs:/" + "a" * 32) and not is_selector("cnn_small/none/optimizer.lr=0.05/fold_0")


def test_patterns_match_part_by_part(exp_dir):
    rec = read_job(exp_dir / "cnn_small" / "none" / LR5 / "fold_1_r")
    assert matches("cnn_small/*/optimizer.lr=0.05*/fold_*", rec) and matches("*/*/*/fold_?_r", rec) and matches("*_r", rec)
    assert not matches("cnn_small/*/fold_*", rec)  # three parts: the default variant only, as short names
    assert not matches("cnn_small/*/fold_1", rec) and not matches("cnn*", rec)  # '*' never crosses a '/'
    default = read_job(exp_dir / "cnn_small" / "none" / "default" / "fold_0")
    assert matches("cnn_small/*/fold_*", default) and matches("cnn_small/none/default/fold_0", default)
    with pytest.raises(SelectorError, match="expected"):
        matches("a/b", rec)


def test_a_pattern_selects_complete_jobs_only(exp_dir):
    cat = load_catalog(exp_dir, None, None)
    assert len(cat.jobs) == len(JOBS) and cat.source == "local"
    got = select("cnn_small/none/fold_*", cat)
    assert names(got) == ["cnn_small/none/fold_0"]  # fold_2 is not complete
    assert names(select(f"cnn_small/*/{LR1}/fold_?", cat)) == [f"cnn_small/none/{LR1}/fold_0", f"cnn_small/none/{LR1}/fold_1"]
    with pytest.raises(SelectorError) as e:
        select("cnn_small/none/fold_2", cat)  # no glob character, but select() takes a plain pattern too
    assert "only jobs that are not complete: cnn_small/none/fold_2 (not complete)" in str(e.value)
    with pytest.raises(SelectorError) as e:
        select("resnet50/*/*/fold_*", cat)
    msg = str(e.value)
    assert "matches no job" in msg and "it has 10 job(s)" in msg and "python -m fstag.runs" in msg


def test_a_sweep_by_name_id_prefix_or_run_name_with_an_optional_job_pattern(exp_dir):
    cat = load_catalog(exp_dir, None, None)
    expected = sorted(f"cnn_small/none/{v}/fold_{k}" for v in (LR1, LR5) for k in (0, 1))
    for name in ("lr", "a" * 32, "aaaaaaaa", "sweep/demo/lr"):
        assert names(select(f"sweep:{name}", cat)) == expected, name
    assert names(select("sweep:lr_r:fold_0_r", cat)) == [f"cnn_small/none/{v}/fold_0_r" for v in (LR1, LR5)]
    with pytest.raises(SelectorError) as e:
        select("sweep:nope", cat)
    assert "no sweep called 'nope'" in str(e.value) and "lr (aaaaaaaa)" in str(e.value) and "lr_r (bbbbbbbb)" in str(e.value)


def test_rankings_by_hand(exp_dir):
    cat = load_catalog(exp_dir, None, None)
    # best per family (arch/aug/variant): LR1's fold_0 (0.60); LR5's fold_1 (0.70); a retrain ranks by its parent
    assert names(select("sweep:lr|best:val_map3", cat)) == [f"cnn_small/none/{LR1}/fold_0", f"cnn_small/none/{LR5}/fold_1"]
    assert names(select("sweep:lr_r|best:val_map3", cat)) == [f"cnn_small/none/{LR1}/fold_0_r", f"cnn_small/none/{LR5}/fold_1_r"]
    assert len(select("sweep:lr|top2:val_map3", cat)) == 4
    # best variant per fold: fold_0 -> LR1 (0.60 > 0.50), fold_1 -> LR5 (0.70 > 0.40); retrains follow their parents
    got = select(f"cnn_small/none/optimizer.lr=*/fold_*|best_per_fold:val_map3", cat)
    assert names(got) == [f"cnn_small/none/{LR1}/fold_0", f"cnn_small/none/{LR1}/fold_0_r",
                          f"cnn_small/none/{LR5}/fold_1", f"cnn_small/none/{LR5}/fold_1_r"]
    # best variant by mean over its train folds: LR5 (0.60) beats LR1 (0.50): all of its jobs
    assert names(select("cnn_small/none/optimizer.lr=*/fold_*|best_variant:val_map3", cat)) == [
        f"cnn_small/none/{LR5}/{j}" for j in ("fold_0", "fold_0_r", "fold_1", "fold_1_r")]
    # oof_map3 (val_map3 / 2 here) ranks the same way; an unknown metric or ranking is an error
    assert names(select("sweep:lr|best_per_fold:oof_map3", cat)) == [f"cnn_small/none/{LR1}/fold_0", f"cnn_small/none/{LR5}/fold_1"]
    with pytest.raises(SelectorError, match="no selected job has a score 'val_f1'"):
        select("sweep:lr|best:val_f1", cat)
    with pytest.raises(SelectorError, match="is not best:<metric>"):
        select("sweep:lr|worst:val_map3", cat)


def test_expand_keeps_named_specs_and_lists_a_job_once(exp_dir):
    cat = load_catalog(exp_dir, None, None)
    calls = []

    def catalog_of():
        calls.append(1)
        return cat

    out = expand(["cnn_small/none/fold_0", "sweep:lr", f"cnn_small/none/{LR1}/fold_?"], catalog_of)
    assert out[0] == ("cnn_small/none/fold_0", None) and len(calls) == 1
    assert [s for s, sel in out if sel == "sweep:lr"] == [str((exp_dir / "cnn_small/none" / v / f"fold_{k}").resolve())
                                                         for v in (LR1, LR5) for k in (0, 1)]
    assert not [s for s, sel in out if sel and sel.startswith("cnn_small")]  # already picked by sweep:lr
    assert expand(["cnn_small/none/fold_0"], lambda: pytest.fail("no selector: the catalog is not read")) == [
        ("cnn_small/none/fold_0", None)]


def test_local_jobs_know_their_sweeps_and_scores(exp_dir):
    jobs = {r.name: r for r in local_jobs(exp_dir)}
    rec = jobs[f"cnn_small/none/{LR5}/fold_1"]
    assert rec.sweeps == ["a" * 32] and rec.complete and rec.metric("val_map3") == 0.70 and rec.epochs == 3
    assert rec.spec == str(rec.path.resolve()) and rec.family == ("cnn_small", "none", LR5)
    assert jobs["cnn_small/none/default/fold_2"].status == "incomplete" and not jobs["cnn_small/none/default/fold_2"].complete


def test_blend_members_may_be_one_selector_but_not_with_a_weights_list():
    base = {"name": "x", "submission": "s.csv"}
    assert parse_blend({**base, "members": "sweep:lr"}).members == ["sweep:lr"]
    with pytest.raises(BlendError, match="selectors"):
        parse_blend({**base, "members": ["sweep:lr", "cnn_small/none/fold_0"], "weights": [1, 1]})


def test_a_missing_member_names_the_variants_that_exist(exp_dir):
    runs_root = exp_dir
    with pytest.raises(MemberError) as e:
        resolve_member("cnn_small/none/optimizer.lr=0.02/fold_1", runs_root, "sqlite:///unused.db")
    msg = str(e.value)
    assert f"cnn_small/none/{LR1}/fold_1 (complete; differs by +{LR1} -optimizer.lr=0.02)" in msg
    assert f"'cnn_small/none/{LR5}/fold_1'" in msg  # the spelling that would use it
    with pytest.raises(MemberError) as e:
        resolve_member("cnn_small/none/fold_1", runs_root, "sqlite:///unused.db")  # the default variant has no fold_1
    assert f"cnn_small/none/{LR1}/fold_1" in str(e.value) and f"+{LR1}" in str(e.value)
    with pytest.raises(MemberError) as e:
        resolve_member("resnet50/none/fold_1", runs_root, "sqlite:///unused.db")
    assert "No variant of resnet50/none has a fold_1" in str(e.value)


def test_a_selector_picking_jobs_of_different_label_sets_is_an_error_that_says_what_it_matched(exp_dir):
    from fstag.runs.members import resolve_members

    for d in exp_dir.glob("cnn_small/none/*/fold_*"):
        info = json.loads((d / "run.json").read_text())
        labels = ["Bark", "Oboe"] if LR5 in str(d) and d.name == "fold_1" else ["Bark", "Cello"]
        (d / "run.json").write_text(json.dumps({**info, "labels": labels, "feature_key": "logmel64-x"}))
    with pytest.raises(MemberError) as e:
        resolve_members(["sweep:lr"], exp_dir, "sqlite:///unused.db")
    msg = str(e.value)
    assert f"member cnn_small/none/{LR5}/fold_1 has a different label set" in msg
    assert ("selector 'sweep:lr' matched 4 job(s): " + ", ".join(
        f"cnn_small/none/{v}/fold_{k}" for v in (LR1, LR5) for k in (0, 1))) in msg
