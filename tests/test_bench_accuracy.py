"""``python bench/accuracy.py --tiny`` runs end to end (the other benches: tests/test_benches.py; a file of its
own so that pytest-xdist can run it beside them): the report's structure, its numbers in range, its files, and
a re-run that scores nothing again. The seed-spread verdicts and the recipe syntax on hand-made numbers."""

from __future__ import annotations

import csv
import json
import re

import pytest

from bench.accuracy import parse_recipe, render, split_overrides, summarise, verdict
from tests.bench_runner import NUMBER, numbers, run_bench

SCORE = rf"{NUMBER} \({NUMBER}-{NUMBER}\)"                       # mean (min-max)
GAIN = rf"([+-]\d\.\d{{4}}) \(spread (\d\.\d{{4}})\): (gain|loss|none)"


@pytest.mark.slow(seconds=130)
def test_accuracy(tmp_path):
    root = tmp_path / "root"
    out = run_bench("accuracy", tmp_path, "--root", str(root))
    assert re.search(r"^all \d+ override sets compose against conf/$", out, re.MULTILINE)
    assert "2 seed(s), 1 fold(s), epochs 1" in out
    header = ("| recipe | self-training | seeds | single test | blend test | blend - single (test) | single shifted "
              "| blend shifted | blend - single (shifted) |")
    assert header in out
    row = re.search(rf"^\| tiny \| no \| 2 \| {SCORE} \| {SCORE} \| {GAIN} \| {SCORE} \| {SCORE} \| {GAIN} \|$",
                    out, re.MULTILINE)
    assert row, out[-3000:]
    g = row.groups()
    scores = [float(v) for v in g[0:6] + g[9:15] + g[18:24]]
    assert all(0 <= v <= 1 for v in scores)
    for mean, lo, hi in zip(scores[::3], scores[1::3], scores[2::3]):
        assert lo <= mean <= hi
    # the verdict follows the numbers: beyond the spread a gain or a loss, else none
    for diff, width, word in (g[6:9], g[15:18]):
        expected = "none" if abs(float(diff)) <= float(width) else ("gain" if float(diff) > 0 else "loss")
        assert word == expected

    report = root / "report"
    assert header in (report / "report.md").read_text()
    with open(report / "scores.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["recipe"], r["seed"], r["self_train"], r["members"]) for r in rows] == \
        [("tiny", "0", "False", "2"), ("tiny", "1", "False", "2")]  # fold 0 and its retrain_val job
    assert all(0 <= float(r[c]) <= 1 for r in rows for c in ("single_test", "blend_test", "single_shifted", "blend_shifted"))
    assert json.loads((report / "results.json").read_text())["folds"] == 1
    assert not list(report.glob(".*.tmp"))  # written atomically: no temporary file left

    before, log = (report / "scores.csv").read_text(), (root / "acc-tiny.log").read_text()
    assert log.count("$ python train.py -m") == 1 and log.count("$ python blend.py -m") == 1
    again = run_bench("accuracy", tmp_path, "--root", str(root))
    assert "tiny: scored before with the same settings" in again
    assert (root / "acc-tiny.log").read_text() == log  # no train, blend or predict launch this time
    assert (report / "scores.csv").read_text() == before
    assert numbers(rf"^\| tiny \| no \| 2 \| {SCORE} \|", again) == numbers(rf"^\| tiny \| no \| 2 \| {SCORE} \|", out)


def _rows(name: str, st: bool, **cols: list[float]) -> list[dict]:
    n = len(next(iter(cols.values())))
    return [{"recipe": name, "self_train": st, "seed": s, "what": name, **{c: v[s] for c, v in cols.items()}}
            for s in range(n)]


def test_a_difference_counts_only_beyond_the_seed_spread():
    diff, width, word = verdict([0.50, 0.54], [0.60, 0.62])
    assert (diff, width, word) == (pytest.approx(0.09), pytest.approx(0.04), "gain")
    assert verdict([0.50, 0.60], [0.55, 0.58])[2] == "none"        # +0.015 within the 0.10 range of the first
    assert verdict([0.60, 0.61], [0.50, 0.52])[2] == "loss"
    assert verdict([0.5], [0.7])[2] == "1 seed"                   # no spread to judge by
    rows = _rows("a", False, single_test=[0.50, 0.52], blend_test=[0.60, 0.61],
                 single_shifted=[0.30, 0.40], blend_shifted=[0.33, 0.41])
    rows += _rows("b", False, single_test=[0.40, 0.42], blend_test=[0.61, 0.60],
                  single_shifted=[0.30, 0.31], blend_shifted=[0.30, 0.31])
    (a, b) = summarise(rows)
    assert a["blend_test"] == pytest.approx(0.605) and a["blend_test_min"] == 0.60 and a["blend_test_max"] == 0.61
    assert a["blend_gain_test_verdict"] == "gain" and a["blend_gain_shifted_verdict"] == "none"
    assert b["blend_gain_shifted"] == pytest.approx(0.0) and b["blend_gain_shifted_verdict"] == "none"
    text = render(rows, "header")
    assert "| a | no | 2 | 0.5100 (0.5000-0.5200) | 0.6050 (0.6000-0.6100) | +0.0950 (spread 0.0200): gain |" in text
    assert "| b vs a | -0.1000 (spread 0.0200): loss | +0.0000 (spread 0.0100): none |" in text


def test_recipes_on_the_command_line():
    assert split_overrides("experiment=demo,+arch.kwargs.widths=[16,32],x='a,b'") == \
        ["experiment=demo", "+arch.kwargs.widths=[16,32]", "x='a,b'"]
    r = parse_recipe("cnn6:experiment=demo,arch=cnn6")
    assert (r.name, r.overrides) == ("cnn6", ["experiment=demo", "arch=cnn6"])
    with pytest.raises(SystemExit, match="NAME:OVERRIDES"):
        parse_recipe("experiment=demo")
    with pytest.raises(SystemExit, match=r"\['seed=3'\] set keys the bench sweeps itself"):
        parse_recipe("x:experiment=demo,seed=3")
