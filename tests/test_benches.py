"""Every bench/*.py runs end to end in its ``--tiny`` mode, as a user runs it (``python bench/<name>.py
--tiny``, a real subprocess from the project root), so a refactor that breaks a bench fails here.

Each test checks the exit code and that the report's key lines and numbers are there (finite), never
the timings: a tiny run's figures mean nothing. The benches that train through the entry points
(accuracy, inference_modes, seed_recipe) and the preprocessing one take a minute or more on 2 CPU cores:
they are marked slow, like the other end-to-end tests.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_env

NUMBER = r"(-?\d+(?:\.\d+)?|nan|inf)"


def run_bench(name: str, tmp_path: Path, *args: str, timeout: float = 600) -> str:
    """``python bench/<name>.py --tiny <args>`` from the project root; its standard output (stderr on failure)."""
    cmd = [sys.executable, str(REPO / "bench" / f"{name}.py"), "--tiny", *args]
    res = subprocess.run(cmd, cwd=REPO, env=make_env(tmp_path), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
    assert "TINY RUN" in res.stdout, "a tiny run's report says so"
    return res.stdout


def numbers(pattern: str, text: str) -> list[float]:
    """The numbers of the first line matching ``pattern`` (its groups), each finite."""
    m = re.search(pattern, text, re.MULTILINE)
    assert m, f"no line matching {pattern!r} in:\n{text[-3000:]}"
    values = [float(g) for g in m.groups()]
    assert all(math.isfinite(v) for v in values), m.group(0)
    return values


def test_report_render(tmp_path):
    out = run_bench("report_render", tmp_path)
    assert "cores; 5 classes, 60 rows; median of 1" in out
    for step in ("per-class table", "confusion PNG", "bar chart PNG", "whole report"):
        wall, cpu = numbers(rf"^\s*{step}: {NUMBER} s wall, {NUMBER} s CPU$", out)
        assert wall >= 0 and cpu >= 0


def test_augment_overhead(tmp_path):
    out = run_bench("augment_overhead", tmp_path)
    assert "cores; " in out and "cnn_small, batch 8, 2 steps each" in out
    assert "| step | s/step | ratio to the seed path |" in out
    assert numbers(rf"^\| seed path \| {NUMBER} \| {NUMBER} \|$", out)[1] == 1.0
    for step in ("experiment=scratch", r"\+ aug=robust", r"\+ mixstyle"):
        sec, ratio = numbers(rf"^\| {step} \| {NUMBER} \| {NUMBER} \|$", out)
        assert sec > 0 and ratio > 0


def test_train_throughput(tmp_path):
    out = run_bench("train_throughput", tmp_path)
    assert out.count("machine: ") == 1 and "recipe: optimizer=sgd scheduler=seed" in out
    assert re.search(r"^arch\s+batch\s+limit/s\s+pipeline/s\s+ratio$", out, re.MULTILINE)
    limit, pipeline, ratio = numbers(rf"^cnn_small\s+8\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}%$", out)
    assert limit > 0 and pipeline > 0 and ratio > 0


@pytest.mark.slow
def test_preprocess(tmp_path):
    out = run_bench("preprocess", tmp_path, "--data-dir", str(tmp_path / "clips"))
    assert "24 clips of ~1 s" in out and "machine: " in out
    assert numbers(rf"max \|seed - preprocess.py\| over 5 clips \(float16 cache\): {NUMBER}$", out)[0] < 0.1
    for run in (r"seed \(librosa per file, Pool, as written\)", "preprocess.py"):
        assert numbers(rf"^\s+{run}\s+{NUMBER} s\s+{NUMBER} clips/s$", out)[1] > 0
    assert numbers(rf"^\s+speed-up of preprocess.py over seed \(librosa per file, Pool, as written\): {NUMBER}x$", out)[0] > 0


@pytest.mark.slow
def test_accuracy(tmp_path):
    out = run_bench("accuracy", tmp_path, "--root", str(tmp_path / "root"))
    assert re.search(r"^all \d+ recipes compose against conf/$", out, re.MULTILINE)
    assert "| recipe | what | test MAP@3 | shifted MAP@3 | val_acc1 | train s |" in out
    test, shifted, val, _ = numbers(rf"^\| scratch \| [^|]+ \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$", out)
    assert all(0 <= v <= 1 for v in (test, shifted, val))
    assert (tmp_path / "root" / "accuracy.json").is_file()


@pytest.mark.slow
def test_inference_modes(tmp_path):
    out = run_bench("inference_modes", tmp_path, "--root", str(tmp_path / "root"))
    assert "| setting | test MAP@3 | val-fold MAP@3 (" in out
    for setting in ("crops, 5", "crops, 1", "windows, hop 150", "windows, hop 75", "windows, hop 37"):
        test, val, rate = numbers(rf"^\| {re.escape(setting)} [^|]*\| {NUMBER} \| {NUMBER} \| {NUMBER} \|$", out)
        assert 0 <= test <= 1 and 0 <= val <= 1 and rate > 0
    # the entry point predicts what the in-process predictor does
    for mode in ("crops", "windows"):
        entry, in_process = numbers(rf"^predict.py mode={mode}: test MAP@3 {NUMBER} \(in-process {NUMBER}\)$", out)
        assert entry == in_process
    assert (tmp_path / "root" / "inference_modes.json").is_file()


@pytest.mark.slow
def test_seed_recipe(tmp_path):
    out = run_bench("seed_recipe", tmp_path, "--root", str(tmp_path / "root"))
    assert "machine: " in out and re.search(r"^step\s+seconds$", out, re.MULTILINE)
    assert "not trained (--tiny): resnext101_32x4d aug=none; its train and retrain_val overrides compose" in out
    for step in ("preprocess.py", "train.py arch=resnet50 arch.name=cnn_small aug=specmask_concat",
                 "train.py arch=resnet50 arch.name=cnn_small aug=specmask_concat stage=retrain_val",
                 "blend.py blend=seed_solution"):
        numbers(rf"^{re.escape(step)}\s+{NUMBER}$", out)
    numbers(rf"^total \(data generation included\)\s+{NUMBER}\s+\({NUMBER} min\)$", out)
    # the retrain_val job found its parent, the blend found both jobs by name and scored the test split
    for member in ("fold_1", "fold_1_r"):
        assert re.search(rf"^cnn_small/specmask_concat/\S+/{member}\s+\d+\s", out, re.MULTILINE), member
    assert 0 <= numbers(rf"^test MAP@3 {NUMBER} ", out)[0] <= 1
    assert (tmp_path / "root" / "submissions" / "seed_solution.csv").is_file()
