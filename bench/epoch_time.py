"""Whole training epochs at FSDKaggle2018's size through train.py, by input path, against the model-only time.

    python bench/epoch_time.py [--root /tmp/fstag_epoch_time] [--n-train 9473 --n-test 1600] [--epochs 3]
                               [--arch resnext101_32x4d] [--aug none] [--inputs loader,resident]
                               [--override KEY=VALUE ...] [--tiny]

Fabricates a feature cache of FSDKaggle2018's size in seconds, without audio: a train.csv of 41 labels and
a sample_submission.csv (the Kaggle layout), and random float16 log-mel features of FSDKaggle-like lengths
(0.3-30 s, ~5 s median) written by the cache's own writer under the key of conf/features/logmel64.yaml.
Then, per input path (``loader.resident=false|true``), one real ``train.py`` job of fold 1 for
``--epochs`` epochs (early stopping off; 5-crop TTA predictions of the test split at the end), each in its
own experiment folder. It prints the process's wall time, the whole-epoch time (train + validation +
checkpoints + logging: the spacing of the epochs' MLflow metrics), the time outside the epochs (start-up,
data loading, predictions, MLflow), and the model-only time for the epoch's training clips
(bench/train_throughput.py's limit at the same batch), with their ratio; then where each job's time went, step by
step (run.json's ``timings``: start-up, build, the median epoch's training, validation and what follows it
(checkpoint writes, logging), predictions, MLflow). ``--override KEY=VALUE`` adds a train.py override to every
run (``checkpoint.async_write=true``: checkpoints written in the background). ``--tiny``: 63 train and 12 test
clips, fstag's small CNN, 3 epochs, the resident path only, on CPU (a smoke test; its times mean nothing).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench import TINY_NOTE, compose_train, machine  # noqa: E402

N_LABELS = 41


def fabricate(data_root: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """The Kaggle layout's CSVs and a complete feature cache (train and test splits) for conf/'s features."""
    import pandas as pd

    from fstag.core.config import to_plain
    from fstag.data.feature_config import FeatureConfig, feature_key
    from fstag.data.feature_store import SplitWriter, feature_dir, is_complete, write_features_yaml

    fcfg = FeatureConfig.from_cfg(to_plain(compose_train([]).features))
    fdir = feature_dir(data_root / "features", fcfg)
    if is_complete(fdir, "train") and is_complete(fdir, "test") and (data_root / "train.csv").is_file():
        return
    rng = np.random.default_rng(seed)
    labels = [f"label_{i:02d}" for i in range(max(2, min(N_LABELS, n_train // 6)))]  # a 5-fold split needs 5 a label
    train = pd.DataFrame({"fname": [f"{i:08x}.wav" for i in range(n_train)],
                          "label": [labels[i % len(labels)] for i in range(n_train)],
                          "manually_verified": (rng.random(n_train) < 0.4).astype(int)})
    test = pd.DataFrame({"fname": [f"t{i:07x}.wav" for i in range(n_test)], "label": labels[0]})
    data_root.mkdir(parents=True, exist_ok=True)
    fdir.mkdir(parents=True, exist_ok=True)
    write_features_yaml(fdir, fcfg, feature_key(fcfg))
    n_mels = int(fcfg.n_mels)
    pool = rng.normal(-40, 15, 3 * n_mels * 4000).astype(np.float16)  # windows of one random pool: fast
    for split, table in (("train", train), ("test", test)):
        writer = SplitWriter(fdir, split)
        frames = np.clip(rng.lognormal(np.log(500), 0.8, len(table)), 30, 3000).astype(int)
        for fname, t in zip(table["fname"], frames):
            start = int(rng.integers(0, pool.size - 3 * n_mels * t))
            writer.add(fname, pool[start : start + 3 * n_mels * t].reshape(3, n_mels, t))
        writer.finish()
    train.to_csv(data_root / "train.csv", index=False)
    test.to_csv(data_root / "sample_submission.csv", index=False)


def epoch_seconds(uri: str, exp: str) -> list[float]:
    """The spacing, in seconds, of the job's per-epoch ``val_acc1`` (one MLflow run in experiment folder ``exp``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.data.tags.get("fstag.exp") == exp]
    if len(runs) != 1:
        raise SystemExit(f"expected one MLflow run of exp={exp}, found {len(runs)}")
    stamps = sorted(m.timestamp for m in client.get_metric_history(runs[0].info.run_id, "val_acc1"))
    return [(b - a) / 1000 for a, b in zip(stamps, stamps[1:])]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/fstag_epoch_time"))
    ap.add_argument("--n-train", type=int, default=9473)
    ap.add_argument("--n-test", type=int, default=1600)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--arch", default="resnext101_32x4d")
    ap.add_argument("--aug", default="none")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--inputs", default="loader,resident")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="one more train.py override for every run (repeatable), e.g. checkpoint.async_write=true")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: 63 + 12 clips, cnn_small, resident only, CPU")
    a = ap.parse_args(argv)
    extra = []
    if a.tiny:
        a.n_train, a.n_test, a.epochs, a.inputs, a.batch = 63, 12, 3, "resident", 16
        extra = ["arch.name=cnn_small", "trainer=cpu", "predict.tta=2"]
        print(TINY_NOTE)
    if a.epochs < 3:
        ap.error(f"--epochs={a.epochs}: at least 3 (the epoch time is the spacing of the epochs' ends)")
    inputs = a.inputs.split(",")
    if not inputs or any(i not in ("loader", "resident") for i in inputs):
        ap.error(f"--inputs={a.inputs}: loader, resident or both")
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not a.tiny else "cpu")
    t0 = time.perf_counter()
    fabricate(a.root / "data", a.n_train, a.n_test)
    print(f"machine: {machine(device)}")
    trained = "cnn_small (arch.name)" if a.tiny else a.arch
    print(f"data: {a.n_train} train + {a.n_test} test clips of random features, fabricated in "
          f"{time.perf_counter() - t0:.1f} s; {trained} aug={a.aug} fold=1, batch {a.batch}, {a.epochs} epochs")
    from bench.train_throughput import limit_samples_per_s

    rate = limit_samples_per_s("cnn_small" if a.tiny else a.arch, a.batch, 2 if a.tiny else 30, 1 if a.tiny else 5, device)
    uri = f"sqlite:///{a.root / 'mlflow.db'}"
    env = {**os.environ, "FSTAG_ROOT": str(a.root), "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    if a.override:
        print(f"overrides: {' '.join(a.override)}")
    print(f"{'input':>8} {'wall s':>8} {'epoch s':>8} {'outside s':>10} {'model-only s':>13} {'epoch/model':>12}")
    breakdowns = []
    for path in inputs:
        exp = f"epoch_time_{path}_{a.arch}_{a.aug}_{a.epochs}" + (f"_{_digest(a.override)}" if a.override else "")
        cmd = [sys.executable, str(REPO / "train.py"), "data=fsdkaggle2018", f"data.root={a.root / 'data'}", f"exp={exp}",
               f"arch={a.arch}", f"aug={a.aug}", "fold=1", f"trainer.max_epochs={a.epochs}", f"trainer.min_epochs={a.epochs}",
               "callbacks.early_stopping.patience=1000", f"loader.batch_size={a.batch}",
               f"loader.resident={'true' if path == 'resident' else 'false'}", "trainer.enable_progress_bar=false", *extra,
               *a.override]
        start = time.perf_counter()
        res = subprocess.run(cmd, cwd=a.root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-6000:]}")
        n_rows = int(re.search(r"fold_1: (\d+) train rows", res.stdout + res.stderr).group(1))
        epochs = epoch_seconds(uri, exp)
        epoch = float(np.median(epochs))
        model = n_rows / rate
        print(f"{path:>8} {wall:>8.1f} {epoch:>8.2f} {wall - epoch * a.epochs:>10.1f} {model:>13.2f} {epoch / model:>11.2f}x",
              flush=True)
        breakdowns.append((path, job_timings(a.root / "multirun" / exp)))
    print_breakdown(breakdowns)


# run.json's timings (fstag.train.timings), in the order a job spends them
STEPS = ("startup", "prepare", "build", "fit_setup", "epoch_train", "epoch_validation", "epoch_after_validation",
         "best_weights", "predict", "finish")


def _digest(items: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:8]


def job_timings(exp_dir: Path) -> dict:
    """The ``timings`` of the one job under ``exp_dir`` (its run.json, read as fstag.runs.run_dir reads it)."""
    from fstag.runs.run_dir import RUN_JSON, RunDir

    found = sorted(exp_dir.rglob(RUN_JSON))
    if len(found) != 1:
        raise SystemExit(f"expected one {RUN_JSON} under {exp_dir}, found {len(found)}")
    return RunDir.open(found[0].parent).info.get("timings") or {}


def print_breakdown(rows: list[tuple[str, dict]]) -> None:
    """Where each job's time went: seconds per step (epoch_*: the median epoch's spans)."""
    print("where the time went, s (run.json timings; epoch_*: the median epoch):")
    print(f"{'step':>24} " + " ".join(f"{path:>9}" for path, _ in rows))
    for step in STEPS:
        vals = [t.get(step) for _, t in rows]
        print(f"{step:>24} " + " ".join(f"{v:>9.2f}" if v is not None else f"{'-':>9}" for v in vals))


if __name__ == "__main__":
    main()
