"""The fold split is part of a run's identity: recorded in run.json, and runs of different splits are not
combined by retrain_val or blend.py (real train.py jobs on the tiny demo data)."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest

from fstag.data.folds import fold_split
from tests.conftest import TINY_TRAIN

pytestmark = pytest.mark.slow


def test_run_json_records_the_fold_split(swept_project):
    p = swept_project
    info = json.loads((p.runs_dir / "cnn_small/none/default/fold_0/run.json").read_text())
    split = info["fold_split"]
    train_csv = p.root / "data" / "demo" / "train.csv"
    assert split["n_splits"] == 5 and split["seed"] == 2018
    assert split["train_csv_sha256"] == hashlib.sha256(train_csv.read_bytes()).hexdigest()
    (cached,) = (p.root / "data" / "demo" / "features").glob("folds_n5_seed2018_*.csv")
    assert split == fold_split(pd.read_csv(cached), 5, 2018, split["train_csv_sha256"])  # the digest of the assignment
    assert re.fullmatch(r"[0-9a-f]{16}", split["digest"])
    other = json.loads((p.runs_dir / "cnn_small/none/default/fold_1/run.json").read_text())
    assert other["fold_split"] == split


def test_runs_of_another_fold_seed_are_refused_by_blend_and_retrain_val(swept_project):
    p = swept_project
    ours = p.runs_dir / "cnn_small/none/default/fold_0"
    p.run("train.py", "fold=0", "folds.seed=1", "exp=splits", *TINY_TRAIN)
    theirs = p.root / "multirun/splits/cnn_small/none/folds.seed=1/fold_0"
    split = json.loads((theirs / "run.json").read_text())["fold_split"]
    assert split["seed"] == 1
    mine = json.loads((ours / "run.json").read_text())["fold_split"]
    assert split["digest"] != mine["digest"]

    res = p.run("blend.py", f"blend.members=['{ours}','{theirs}']", "blend.name=mixed", check=False)
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert re.search(rf"member {re.escape(str(theirs).lstrip('/'))} was trained on split {split['digest']} "
                     rf"\(n_splits=5, seed=1, .*\) but member cnn_small/none/fold_0 on split {mine['digest']} "
                     r"\(n_splits=5, seed=2018", err), err[-3000:]
    assert not (p.root / "submissions" / "mixed.csv").exists()

    # retrain_val on seed 1's split, pointed at the seed-2018 parent: its fold 0 holds other rows
    res = p.run("train.py", "fold=0", "stage=retrain_val", "folds.seed=1", "exp=splits", f"stage.parent='{ours}'",
                *TINY_TRAIN, check=False)
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert (f"uses split {split['digest']} (n_splits=5, seed=1" in err
            and f"its parent run {ours} was trained on split {mine['digest']} (n_splits=5, seed=2018" in err), err[-3000:]
    assert not (p.root / "multirun/splits/cnn_small/none/folds.seed=1/fold_0_r/run.json").exists()
