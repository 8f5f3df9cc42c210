"""``python bench/inference_modes.py --tiny`` runs end to end (the other benches: tests/test_benches.py; a file
of its own so that pytest-xdist can run it beside them). The report's key lines and numbers, never its timings.

The settings are compared on a job the session has trained already (``--run-dir``: swept_project's fold 0, of
the same tiny demo set as the bench's own training step); the bench composes its training step's overrides
against conf/ instead of running them."""

from __future__ import annotations

import re

import pytest

from tests.bench_runner import NUMBER, numbers, run_bench


@pytest.mark.slow(seconds=35)
def test_inference_modes(swept_project, tmp_path):
    job = swept_project.runs_dir / "cnn_small" / "none" / "default" / "fold_0"
    out = run_bench("inference_modes", tmp_path, "--root", str(tmp_path / "root"), "--run-dir", str(job))
    assert "not trained (--run-dir): train.py's overrides compose against conf/" in out
    assert f"job {job} (" in out
    assert "| setting | test MAP@3 | val-fold MAP@3 (" in out
    for setting in ("crops, 5", "crops, 1", "windows, hop 150", "windows, hop 75", "windows, hop 37"):
        test, val, rate = numbers(rf"^\| {re.escape(setting)} [^|]*\| {NUMBER} \| {NUMBER} \| {NUMBER} \|$", out)
        assert 0 <= test <= 1 and 0 <= val <= 1 and rate > 0
    # the entry point predicts what the in-process predictor does
    for mode in ("crops", "windows"):
        entry, in_process = numbers(rf"^predict.py mode={mode}: test MAP@3 {NUMBER} \(in-process {NUMBER}\)$", out)
        assert entry == in_process
    assert (tmp_path / "root" / "inference_modes.json").is_file()
