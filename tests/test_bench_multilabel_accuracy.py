"""``python bench/multilabel_accuracy.py --tiny`` runs end to end (a file of its own so that pytest-xdist can
run it beside the other benches): the report's tables, its numbers in range, the best member chosen on
validation, the files written atomically. The verdict and best-member rules on hand-made rows."""

from __future__ import annotations

import csv
import json
import re

import pytest

from bench.multilabel_accuracy import best_members, summarise
from tests.bench_runner import NUMBER, run_bench

SCORE = rf"{NUMBER} \({NUMBER}-{NUMBER}\)"                       # mean (min-max)
GAIN = rf"([+-]\d\.\d{{4}}) \(spread (\d\.\d{{4}})\): (gain|loss|none)"


@pytest.mark.slow(seconds=80)
def test_multilabel_accuracy(tmp_path):
    root = tmp_path / "root"
    out = run_bench("multilabel_accuracy", tmp_path, "--root", str(root))
    assert "cnn_small, experiment=demo_multilabel, fold 0, 2 seed(s), epochs 1, retrain_val epochs 1" in out
    for aug in ("none", "specmask_concat"):
        row = re.search(rf"^\| {aug} \| 2 \| {SCORE} \| {SCORE} \| {SCORE} \| {SCORE} \| {SCORE} \| {SCORE} \| {SCORE} \|$",
                        out, re.MULTILINE)
        assert row, out[-3000:]
        values = [float(v) for v in row.groups()]
        assert all(0 <= v <= 1 for v in values)
        for mean, lo, hi in zip(values[::3], values[1::3], values[2::3]):
            assert lo <= mean <= hi
    blend = re.search(rf"^\| 2 \| {SCORE} \| {SCORE} \| {GAIN} \| {SCORE} \| {SCORE} \| {GAIN} \| {SCORE} \|$", out,
                      re.MULTILINE)
    assert blend, out[-3000:]
    g = blend.groups()
    for diff, width, word in (g[6:9], g[15:18]):  # the verdict follows the numbers
        assert word == ("none" if abs(float(diff)) <= float(width) else ("gain" if float(diff) > 0 else "loss"))

    report = root / "report"
    with open(report / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["what"], r["stage"]) for r in rows] == [("job", "train"), ("job", "retrain_val")] * 4 + [("blend", "")] * 2
    results = json.loads((report / "results.json").read_text())
    best = best_members(results["rows"])
    # the best member is the train job with the best validation lwlrap of its seed, and the report names it
    for seed in (0, 1):
        jobs = [r for r in results["rows"] if r["seed"] == seed and r["stage"] == "train"]
        assert best[seed]["val_lwlrap"] == max(r["val_lwlrap"] for r in jobs)
        assert f"seed {seed}: {best[seed]['aug']}" in out
    assert (report / "report.md").read_text() in out and not list(report.glob(".*.tmp"))


def _row(seed, what, aug, stage, val, test_lwlrap, test_map):
    return {"seed": seed, "what": what, "aug": aug, "stage": stage, "val_lwlrap": val, "test_lwlrap": test_lwlrap,
            "test_map": test_map}


def test_the_blend_is_compared_with_the_member_best_on_validation():
    rows = [_row(0, "job", "a", "train", 0.60, 0.70, 0.50), _row(0, "job", "b", "train", 0.65, 0.60, 0.45),
            _row(0, "job", "a", "retrain_val", float("nan"), 0.99, 0.99),  # never a candidate: no own validation
            _row(1, "job", "a", "train", 0.70, 0.72, 0.52), _row(1, "job", "b", "train", 0.50, 0.80, 0.60),
            _row(0, "blend", "a+b", "", float("nan"), 0.75, 0.58), _row(1, "blend", "a+b", "", float("nan"), 0.77, 0.59)]
    best = best_members(rows)
    assert (best[0]["aug"], best[1]["aug"]) == ("b", "a")  # by validation, not by the better test score
    s = summarise(rows)
    # best members' test lwlrap 0.60, 0.72 (spread 0.12) against the blend's 0.75, 0.77: +0.10 <= 0.12
    assert s["lwlrap"] == (pytest.approx(0.10), pytest.approx(0.12), "none")
    # best members' test mAP 0.45, 0.52 (spread 0.07) against the blend's 0.58, 0.59: +0.10 > 0.07
    assert s["map"] == (pytest.approx(0.10), pytest.approx(0.07), "gain")
