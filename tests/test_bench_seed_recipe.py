"""``python bench/seed_recipe.py --tiny`` runs end to end (the other benches: tests/test_benches.py; a file of
its own so that pytest-xdist can run it beside them). The report's key lines and numbers, never its timings."""

from __future__ import annotations

import re

import pytest

from tests.bench_runner import NUMBER, numbers, run_bench


@pytest.mark.slow(seconds=90)
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

