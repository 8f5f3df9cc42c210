"""Every bench/*.py runs end to end in its ``--tiny`` mode, as a user runs it (``python bench/<name>.py
--tiny``, a real subprocess from the project root), so a refactor that breaks a bench fails here.

Each test checks the exit code and that the report's key lines and numbers are there (finite), never
the timings: a tiny run's figures mean nothing. The benches that train through the entry points
(accuracy, inference_modes, seed_recipe) take a minute or more on 2 CPU cores each, so each has its own
file, tests/test_bench_<name>.py, which pytest-xdist's --dist loadfile can give to another worker; they and
the preprocessing one here are marked slow, like the other end-to-end tests.
"""

from __future__ import annotations

import re

import pytest

from tests.bench_runner import NUMBER, numbers, run_bench


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
    out = run_bench("train_throughput", tmp_path, "--memory-format", "contiguous,channels_last")
    assert out.count("machine: ") == 1 and "recipe: optimizer=sgd scheduler=seed" in out
    assert re.search(r"^arch\s+batch\s+compile\s+format\s+input\s+limit/s\s+pipeline/s\s+ratio$", out, re.MULTILINE)
    for fmt in ("contiguous", "channels_last"):  # cpu.channels_last=false|true
        for path in ("loader", "resident"):  # both input paths (loader.resident=false|true)
            limit, pipeline, ratio = numbers(rf"^cnn_small\s+8\s+off\s+{fmt}\s+{path}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}%$", out)
            assert limit > 0 and pipeline > 0 and ratio > 0


def test_jobs_per_gpu(tmp_path):
    out = run_bench("jobs_per_gpu", tmp_path)
    assert "machine: " in out and "cnn_small, batch 8, model-only training steps" in out
    per_job, together, speedup = numbers(rf"^\s+2\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$", out)  # two processes at once
    assert per_job > 0 and together > per_job and speedup > 0


def test_checkpoint_write(tmp_path, capsys):
    # its main() in this process: the bench starts no process of its own, and a fresh interpreter would spend
    # most of the test importing torch and Lightning again
    from bench.checkpoint_write import main

    folder = tmp_path / "writes"
    folder.mkdir()
    main(["--tiny", "--dir", str(folder)])
    out = capsys.readouterr().out
    assert "TINY RUN" in out
    assert "machine: " in out and "median of 2 writes each" in out
    for writer in ("lightning", "file", "async"):  # Lightning's writer (the reference), fstag's, fstag's in a thread
        size, per_write, ratio, drain = numbers(rf"^cnn_small\s+{NUMBER}\s+{writer}\s+{NUMBER}\s+{NUMBER}x\s+{NUMBER}$", out)
        assert size > 1 and per_write > 0 and ratio > 0 and drain >= 0
    assert list(folder.iterdir()) == []  # its checkpoints, and no temporary file, are gone


@pytest.mark.slow(seconds=20)
def test_preprocess(tmp_path):
    out = run_bench("preprocess", tmp_path, "--data-dir", str(tmp_path / "clips"))
    assert "24 clips of ~1 s" in out and "machine: " in out
    assert numbers(rf"max \|seed - preprocess.py\| over 5 clips \(float16 cache\): {NUMBER}$", out)[0] < 0.1
    seed = r"seed \(librosa per file, Pool, as written\)"
    assert numbers(rf"^\s+{seed}\s+24 clips\s+{NUMBER} s\s+{NUMBER} clips/s$", out)[1] > 0  # --tiny: the seed at 24 only
    for n in (12, 24):  # preprocess.py at each count
        assert numbers(rf"^\s+preprocess.py\s+{n} clips\s+{NUMBER} s\s+{NUMBER} clips/s$", out)[1] > 0
    # the line through its counts: start-up and steady rate, extrapolated to FSDKaggle2018's 18,873 clips
    # (its values are not checked: at 12 and 24 clips of 1 s, start-up noise can tilt the line either way)
    assert re.search(rf"^\s+preprocess.py\s+start-up\s+{NUMBER} s,\s+{NUMBER} clips/s ->\s+{NUMBER} s$", out, re.MULTILINE), out
    assert numbers(rf"^\s+speed-up of preprocess.py over {seed}: {NUMBER}x at 24 clips$", out)[0] > 0
