"""bench/epoch_time.py --tiny: a fabricated feature cache, one real train.py job on the resident input path
(its checkpoints written in the background: checkpoint.async_write=true), its whole-epoch time against the
model-only time and where its time went (tests/bench_runner.py runs it as a user does)."""

from __future__ import annotations

import pytest
import torch

from tests.bench_runner import NUMBER, numbers, run_bench


@pytest.mark.slow(seconds=60)
def test_epoch_time(tmp_path):
    out = run_bench("epoch_time", tmp_path, "--root", str(tmp_path / "root"), "--override", "checkpoint.async_write=true")
    assert "data: 63 train + 12 test clips of random features" in out and "machine: " in out
    assert "overrides: checkpoint.async_write=true" in out
    wall, epoch, outside, model, ratio = numbers(
        rf"^resident\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$", out)
    assert wall > 0 and epoch > 0 and model > 0 and ratio > 0
    steps = {step: numbers(rf"^\s+{step}\s+{NUMBER}$", out)[0] for step in
             ("startup", "build", "epoch_train", "epoch_validation", "epoch_after_validation", "predict", "finish")}
    assert all(v >= 0 for v in steps.values()) and steps["epoch_train"] > 0
    assert sum(steps.values()) < wall  # each step of the job, within the process's wall time
    jobs = list((tmp_path / "root" / "multirun").rglob("best.ckpt"))
    assert len(jobs) == 1 and "state_dict" in torch.load(jobs[0], map_location="cpu")  # the background write is whole
    assert (tmp_path / "root" / "data" / "train.csv").is_file()
