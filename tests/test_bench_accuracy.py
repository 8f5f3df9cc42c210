"""``python bench/accuracy.py --tiny`` runs end to end (the other benches: tests/test_benches.py; a file of its
own so that pytest-xdist can run it beside them). The report's key lines and numbers, never its timings."""

from __future__ import annotations

import re

import pytest

from tests.bench_runner import NUMBER, numbers, run_bench


@pytest.mark.slow(seconds=80)
def test_accuracy(tmp_path):
    out = run_bench("accuracy", tmp_path, "--root", str(tmp_path / "root"))
    assert re.search(r"^all \d+ recipes compose against conf/$", out, re.MULTILINE)
    assert "| recipe | what | test MAP@3 | shifted MAP@3 | val_acc1 | train s |" in out
    test, shifted, val, _ = numbers(rf"^\| scratch \| [^|]+ \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$", out)
    assert all(0 <= v <= 1 for v in (test, shifted, val))
    assert (tmp_path / "root" / "accuracy.json").is_file()
