"""bench/epoch_time.py --tiny: a fabricated feature cache, one real train.py job on the resident input path,
its whole-epoch time against the model-only time (tests/bench_runner.py runs it as a user does)."""

from __future__ import annotations

import pytest

from tests.bench_runner import NUMBER, numbers, run_bench


@pytest.mark.slow(seconds=60)
def test_epoch_time(tmp_path):
    out = run_bench("epoch_time", tmp_path, "--root", str(tmp_path / "root"))
    assert "data: 63 train + 12 test clips of random features" in out and "machine: " in out
    wall, epoch, outside, model, ratio = numbers(
        rf"^resident\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$", out)
    assert wall > 0 and epoch > 0 and model > 0 and ratio > 0
    assert (tmp_path / "root" / "data" / "train.csv").is_file()
