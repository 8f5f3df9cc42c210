"""Inference modes on the demo test split: MAP@3 and clips/s of TTA crops against every window.

    python bench/inference_modes.py [--root DIR] [--run-dir DIR] [--epochs 20] [--fold 0] [--aug specmask_concat]
                                    [--repeats 3] [--set KEY=VALUE ...] [--tiny]

Without ``--run-dir`` the script makes the demo data and features in ``<root>`` (a separate FSTAG_ROOT,
default ``bench_runs/inference_modes``) and trains one ``experiment=demo`` job (cnn_small) through the real
entry points (a finished job is reused). Then, on the job's cached test features, each setting below
predicts the test split (``fstag.infer.predictor.predict_probs``, the function train.py and predict.py call) and
is scored by MAP@3 on the scored rows of test_post_competition.csv and on the job's validation fold
(its oof.npz rows; the checkpoint was chosen on them, equally for every setting); clips/s is the best of ``--repeats``
timed passes (cached features, model forward and combination; feature extraction left out). Last, predict.py
runs once per mode (``mode=crops|windows``, tta 5, hop 75) on the test split, to check that the entry point
gives the same probabilities, and on the shifted test split's audio files (a second, harder set of clips).

``--tiny``: a smoke test of the same steps on CPU: a tiny demo set (63 train clips, 12 test clips of at
most 4 s, no shifted split), 1 epoch, 1 TTA pass in the job's own test predictions, 1 timed repeat; in a
temporary root unless ``--root`` is given. Its figures mean nothing. With ``--run-dir`` (a finished tiny job,
as tests/test_benches.py passes one) nothing is trained: the training step's overrides are composed against
conf/ instead, so a renamed key or option still fails the smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import TINY_NOTE, machine  # noqa: E402
from fstag.models.augment import pad_value_of  # noqa: E402
from fstag.core.config import to_plain  # noqa: E402
from fstag.data.demo import SHIFTED_DIR, SHIFTED_LABELS_CSV, TEST_LABELS_CSV  # noqa: E402
from fstag.data.feature_store import FeatureStore, feature_dir  # noqa: E402
from fstag.data.feature_config import FeatureConfig  # noqa: E402
from fstag.infer.predictor import predict_probs  # noqa: E402
from fstag.evaluate.metrics import map_at_3  # noqa: E402
from fstag.infer.job import load_module, run_config  # noqa: E402
from fstag.runs.run_dir import RunDir  # noqa: E402

# --tiny: the demo set's size (preprocess.py and train.py), train.py's own settings
TINY_DATA = ["data.demo.n_train=63", "data.demo.n_test=12", "data.demo.n_shifted=0", "data.demo.max_duration=4.0",
             "data.demo.seed=7"]
TINY_TRAIN = ["predict.tta=1"]
# test clips by length in frames: shorter than one crop, up to 5 crops (what 5 crops can see), longer
LENGTH_BINS = [(0, 150), (150, 750), (750, 10**9)]
# (name, mode, tta, hop_frames)
SETTINGS = [
    ("crops, 5 (the seed's)", "crops", 5, None),
    ("crops, 1 (first window)", "crops", 1, None),
    ("windows, hop 150", "windows", 1, 150),
    ("windows, hop 75", "windows", 1, 75),
    ("windows, hop 37", "windows", 1, 37),
]


def _run(args: list[str], env: dict, cwd: Path, log: Path) -> None:
    with open(log, "a") as fh:
        res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({res.returncode}); see {log}")


EXP = "bench-inference"


def train_overrides(args) -> list[str]:
    """train.py's overrides for the job the settings are compared on."""
    return ["experiment=demo", f"fold={args.fold}", f"aug={args.aug}", f"exp={EXP}", f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false", *args.common, *args.train_extra]


def check_train_overrides(args) -> None:
    """The training step's overrides compose against conf/ (``--tiny --run-dir``: the step is not run)."""
    from bench import compose_train

    try:
        compose_train(train_overrides(args))
    except Exception as e:  # Hydra's composition errors
        raise SystemExit(f"train.py's overrides do not compose against conf/: {e}") from e
    print("not trained (--run-dir): train.py's overrides compose against conf/", flush=True)


def _train(args, root: Path, env: dict) -> Path:
    _run([str(REPO / "preprocess.py"), "data=demo", *args.common], env, root, root / "preprocess.log")
    _run([str(REPO / "train.py"), *train_overrides(args)], env, root, root / f"{EXP}.log")
    runs = sorted(p.parent for p in (root / "multirun" / EXP).rglob("run.json"))
    if len(runs) != 1:
        raise SystemExit(f"{root / 'multirun' / EXP}: expected one finished job, found {len(runs)}")
    return runs[0]


def _truth(data_root: Path, labels: list[str]) -> tuple[list[str], np.ndarray]:
    truth = pd.read_csv(data_root / TEST_LABELS_CSV)
    truth = truth[(truth["usage"] != "Ignored") & truth["label"].isin(labels)]
    index = {l: i for i, l in enumerate(labels)}
    return truth["fname"].tolist(), truth["label"].map(index).to_numpy()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="the FSTAG_ROOT (default bench_runs/inference_modes; --tiny: a temporary folder)")
    ap.add_argument("--run-dir", default=None, help="a finished train.py job on demo data (default: train one)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--aug", default="specmask_concat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for preprocess.py and train.py, e.g. --set data.demo.n_train=120")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: a tiny demo set, 1 epoch, 1 repeat, in a temporary root")
    args = ap.parse_args(argv)
    args.train_extra = []
    if args.tiny:
        print(TINY_NOTE, flush=True)
        args.epochs, args.repeats, args.common, args.train_extra = 1, 1, [*TINY_DATA, *args.common], TINY_TRAIN
    with contextlib.ExitStack() as stack:
        if args.root is None:
            args.root = (stack.enter_context(tempfile.TemporaryDirectory(prefix="fstag-inference-tiny-")) if args.tiny
                         else str(REPO / "bench_runs" / "inference_modes"))
        if args.tiny and args.run_dir:
            check_train_overrides(args)
        run(args, Path(args.root).resolve())


def run(args, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FSTAG_"))}
    env.update(FSTAG_ROOT=str(root), PYTHONUNBUFFERED="1")
    job = Path(args.run_dir).resolve() if args.run_dir else _train(args, root, env)

    run = RunDir.open(job)
    rc = run_config(run)
    store = FeatureStore.open(feature_dir(rc.data.features_dir, FeatureConfig.from_cfg(run.info["features"])), "test")
    fnames, targets = _truth(Path(str(rc.data.root)), run.labels)
    clips = [store[store.index_of(f)] for f in fnames]
    frames = np.array([c.shape[-1] for c in clips])
    model = load_module(run).model
    # the job's validation fold (its oof.npz rows): a second set of clips the model did not train on
    oof = run.oof()
    train_store = FeatureStore.open(feature_dir(rc.data.features_dir, FeatureConfig.from_cfg(run.info["features"])), "train")
    val_fnames, val_targets = oof.fnames, oof.targets
    val_clips = [train_store[train_store.index_of(f)] for f in val_fnames]
    results = []
    for name, mode, tta, hop in SETTINGS:
        best = float("inf")
        for _ in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            probs, _ = predict_probs(model, clips, fnames, crop_frames=int(rc.loader.crop_frames), aug=to_plain(rc.aug),
                                     mode=mode, pad_value=pad_value_of(rc.loader), n_passes=tta, hop_frames=hop,
                                     seed=1234, batch_size=256, num_classes=len(run.labels))
            best = min(best, time.perf_counter() - t0)
        val_probs, _ = predict_probs(model, val_clips, val_fnames, crop_frames=int(rc.loader.crop_frames),
                                     aug=to_plain(rc.aug), mode=mode, pad_value=pad_value_of(rc.loader), n_passes=tta,
                                     hop_frames=hop, seed=1234, batch_size=256, num_classes=len(run.labels))
        by_length = {f"{lo}-{hi}": map_at_3(probs[(frames >= lo) & (frames < hi)], targets[(frames >= lo) & (frames < hi)])
                     for lo, hi in LENGTH_BINS}
        results.append({"setting": name, "mode": mode, "tta": tta, "hop_frames": hop, "map3": map_at_3(probs, targets),
                        "val_map3": map_at_3(val_probs, val_targets), "clips_per_s": len(fnames) / best,
                        "test_map3_by_frames": by_length})
        print(f"{name}: MAP@3 {results[-1]['map3']:.4f} (val fold {results[-1]['val_map3']:.4f}), "
              f"{results[-1]['clips_per_s']:.1f} clips/s", flush=True)

    # the entry point: the same predictions on the test split; and the shifted split, from its audio files
    shifted = {}
    data_root = Path(str(rc.data.root))
    truth = pd.read_csv(data_root / SHIFTED_LABELS_CSV) if (data_root / SHIFTED_DIR).is_dir() else None
    for mode in ("crops", "windows"):
        ref = next(r for r in results if r["mode"] == mode and (r["tta"] == 5 or r["hop_frames"] == 75))
        for split, inp in (("test", "test"), ("shifted", str(data_root / SHIFTED_DIR))):
            if split == "shifted" and truth is None:
                continue
            out = root / "predict" / f"{split}_{mode}"
            t0 = time.perf_counter()
            _run([str(REPO / "predict.py"), f"runs=['{job}']", f"input={inp}", f"mode={mode}", "tta=5",
                  "hop_frames=75", f"hydra.run.dir={out}"], env, root, root / "predict.log")
            wall = time.perf_counter() - t0
            with np.load(out / "probs.npz") as z:
                pos = {str(f): i for i, f in enumerate(z["fnames"])}
                probs = z["probs"]
            if split == "test":
                score = map_at_3(probs[[pos[f] for f in fnames]], targets)
                print(f"predict.py mode={mode}: test MAP@3 {score:.4f} (in-process {ref['map3']:.4f})")
            else:
                index = {l: i for i, l in enumerate(run.labels)}
                t = truth[truth["label"].isin(index)]
                score = map_at_3(probs[[pos[f] for f in t["fname"]]], t["label"].map(index).to_numpy())
                shifted[mode] = {"map3": score, "n": len(t), "wall_s": wall}
                print(f"predict.py mode={mode}: shifted MAP@3 {score:.4f} ({len(t)} clips from audio, {wall:.0f} s "
                      "with start-up and feature extraction)")

    info = {"job": str(job), "epochs": run.info.get("epochs_trained"), "best_val_acc1": run.info.get("best_val_acc1"),
            "n_scored": len(fnames), "median_frames": float(np.median(frames)), "max_frames": int(frames.max()),
            "machine": machine(torch.device("cpu")), "torch_threads": torch.get_num_threads(), "results": results,
            "shifted": shifted}
    (root / "inference_modes.json").write_text(json.dumps(info, indent=1))
    print(f"\n{'TINY RUN: ' if args.tiny else ''}{info['machine']}; {info['torch_threads']} torch threads; job {job} "
          f"({info['epochs']} epochs, val_acc1 {info['best_val_acc1']:.4f}); {len(fnames)} scored test clips, "
          f"median {info['median_frames']:.0f} frames, longest {info['max_frames']}\n")
    print(f"| setting | test MAP@3 | val-fold MAP@3 ({len(val_fnames)} clips) | test clips/s |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['setting']} | {r['map3']:.4f} | {r['val_map3']:.4f} | {r['clips_per_s']:.1f} |")
    counts = {f"{lo}-{hi}": int(((frames >= lo) & (frames < hi)).sum()) for lo, hi in LENGTH_BINS}
    print("\ntest MAP@3 by clip length (frames: clips): " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    for r in results:
        print(f"| {r['setting']} | " + " | ".join(f"{v:.4f}" for v in r["test_map3_by_frames"].values()) + " |")
    for mode, r in shifted.items():
        print(f"shifted split, predict.py mode={mode}: MAP@3 {r['map3']:.4f} ({r['n']} clips)")


if __name__ == "__main__":
    main()
