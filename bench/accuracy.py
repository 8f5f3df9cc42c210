"""Accuracy of training recipes on the demo data: the test split and the shifted test split.

    python bench/accuracy.py [--root DIR] [--recipes seed,plain,scratch,...] [--epochs 30] [--fold 0]
                             [--arch resnet18] [--threads N] [--set KEY=VALUE ...] [--list] [--tiny]

Each recipe is a list of train.py overrides on top of ``arch=resnet50 arch.name=<arch> fold=<fold>``
(the hidden benchmark's command). For each one the script trains one job through the real entry point
(a finished job is reused: train.py skips it), then scores MAP@3 on

- (a) the demo test split (the job's own 5-crop TTA ``test.npz``, scored rows of test_post_competition.csv);
- (b) the **shifted** test split (``audio_test_shifted/``: other General-MIDI programs of each instrument's
  family, other drum kits, velocities, articulations, rooms, microphones and noise types than any train
  clip), predicted by ``predict.py input=<folder>`` as a user would on new recordings.

Tune on (a) and (b) together, never on (b) alone. Results are printed as a markdown table with the
machine, and saved to ``<root>/accuracy.json``. The demo data and features are made in ``<root>`` (a
separate FSTAG_ROOT, default ``bench_runs/accuracy``) on first use.

``--tiny``: a smoke test of the same steps on CPU: a tiny demo set (63 train clips, 12 test clips and 21
shifted clips of at most 4 s), 1 epoch, 1 TTA pass in the job's own test predictions, the ``scratch``
recipe only (``--recipes`` picks others) after checking that every recipe's overrides compose against
conf/; in a temporary root unless ``--root`` is given. Its figures mean nothing.
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

from bench import TINY_NOTE, compose_train, machine  # noqa: E402
from fstag.data.demo import SHIFTED_DIR, SHIFTED_LABELS_CSV, TEST_LABELS_CSV  # noqa: E402
from fstag.evaluate.metrics import map_at_3  # noqa: E402

# --tiny: the demo set's size (for every step), the training steps' own TTA passes, the recipes trained
TINY_DATA = ["data.demo.n_train=63", "data.demo.n_test=12", "data.demo.n_shifted=21", "data.demo.max_duration=4.0",
             "data.demo.seed=7"]
TINY_TRAIN = ["predict.tta=1"]
TINY_RECIPES = "scratch"
DEFAULT_RECIPES = "seed,plain,scratch"

SEED_LIKE = ["loader.batch_size=32", "callbacks.gradient_accumulation=null"]
# name -> (overrides, what it is). "scratch-*" rows remove or add one ingredient of experiment=scratch.
RECIPES: dict[str, tuple[list[str], str]] = {
    "seed": (SEED_LIKE, "the seed's recipe (SGD 0.009, mixup p=0.7 Beta(3,3), cosine x step), batch 32"),
    "plain": (["experiment=scratch", "aug=none", "noise=none", "specaug.enabled=false", "mixup.enabled=false",
               "arch.input_norm=bn", "optimizer.lr=1e-3", "optimizer.weight_decay=0.01",
               "scheduler.final_lr_ratio=1.0", "loader.pad_value=0.0"],
              "the 40-line script's recipe: AdamW 1e-3 constant, label smoothing 0.1, per-channel input norm, no aug"),
    "scratch": (["experiment=scratch"], "experiment=scratch (aug=specmask_concat, noise=prune)"),
    "scratch-no_prune": (["experiment=scratch", "noise=none"], "experiment=scratch with noise=none"),
    # experiment=scratch + aug=robust + noise=none, and one change each
    "robust": (["experiment=scratch", "aug=robust", "noise=none"], "noise=none + the recording simulation (aug=robust)"),
    "robust+prune": (["experiment=scratch", "aug=robust"], "aug=robust with noise=prune"),
    "robust+uw0.5": (["experiment=scratch", "aug=robust", "noise=none", "data.unverified_weight=0.5"],
                     "aug=robust, noise=none, data.unverified_weight=0.5"),
    "robust+mixstyle": (["experiment=scratch", "aug=robust", "noise=none", "mixstyle.enabled=true"],
                        "aug=robust, noise=none, plus Freq-MixStyle"),
    "robust+mel_shift": (["experiment=scratch", "aug=robust", "noise=none", "aug.recording.mel_shift=2"],
                         "aug=robust, noise=none, plus a +-2 band mel shift"),
    "scratch-no_mixup": (["experiment=scratch", "mixup.enabled=false"], "experiment=scratch without mixup"),
    "scratch-no_specaug": (["experiment=scratch", "specaug.enabled=false"], "experiment=scratch without SpecAugment"),
    "scratch-bn": (["experiment=scratch", "arch.input_norm=bn"], "experiment=scratch, input BatchNorm instead of band stats"),
}


def _run(args: list[str], env: dict, cwd: Path, log: Path) -> None:
    with open(log, "a") as fh:
        res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({res.returncode}); see {log}")


def _job_dir(exp_dir: Path) -> Path:
    runs = sorted(p.parent for p in exp_dir.rglob("run.json"))
    if len(runs) != 1:
        raise SystemExit(f"{exp_dir}: expected one finished job, found {len(runs)}")
    return runs[0]


def _score(probs: np.ndarray, fnames: list[str], labels: list[str], truth: pd.DataFrame) -> float:
    pos = {f: i for i, f in enumerate(fnames)}
    lab = {l: i for i, l in enumerate(labels)}
    truth = truth[truth["label"].isin(lab)]
    rows = np.array([pos[f] for f in truth["fname"]])
    return map_at_3(probs[rows], np.array([lab[l] for l in truth["label"]]))


def train_overrides(name: str, overrides: list[str], args) -> list[str]:
    """train.py's overrides for one recipe."""
    return ["arch=resnet50", f"arch.name={args.arch}", f"fold={args.fold}", f"exp=bench-{name}",
            f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=false", *args.common,
            *args.train_extra, *overrides]


def check_recipes(args) -> None:
    """Every recipe's train.py overrides compose against conf/ (a renamed key or group option fails here)."""
    for name, (overrides, _) in RECIPES.items():
        try:
            compose_train(train_overrides(name, overrides, args))
        except Exception as e:  # Hydra's composition errors
            raise SystemExit(f"recipe {name}: its overrides do not compose against conf/: {e}") from e
    print(f"all {len(RECIPES)} recipes compose against conf/", flush=True)


def evaluate(name: str, overrides: list[str], args, root: Path, env: dict) -> dict:
    data = root / "data" / "demo"
    exp = f"bench-{name}"
    log = root / f"{exp}.log"
    t0 = time.perf_counter()
    _run([str(REPO / "train.py"), *train_overrides(name, overrides, args)], env, root, log)
    train_s = time.perf_counter() - t0
    job = _job_dir(root / "multirun" / exp)
    info = json.loads((job / "run.json").read_text())
    labels = info["labels"]
    with np.load(job / "test.npz") as z:
        test_fnames, test_probs = [str(f) for f in z["fnames"]], z["probs"]
    scored = pd.read_csv(data / TEST_LABELS_CSV)
    scored = scored[scored["usage"] != "Ignored"]
    test_map3 = _score(test_probs, test_fnames, labels, scored)
    out = root / "predictions" / exp
    _run([str(REPO / "predict.py"), f"runs=['{job}']", f"input={data / SHIFTED_DIR}", f"hydra.run.dir={out}",
          *args.common], env, root, log)
    with np.load(out / "probs.npz") as z:
        sh_fnames, sh_probs = [str(f) for f in z["fnames"]], z["probs"]
    shifted_map3 = _score(sh_probs, sh_fnames, labels, pd.read_csv(data / SHIFTED_LABELS_CSV))
    return {"recipe": name, "what": RECIPES[name][1], "overrides": overrides, "test_map3": test_map3,
            "shifted_map3": shifted_map3, "val_acc1": info.get("best_val_acc1"), "oof_map3": info.get("oof_map3"),
            "epochs": info.get("epochs_trained"), "train_s": round(train_s, 1), "job_dir": str(job)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="the FSTAG_ROOT (default bench_runs/accuracy; --tiny: a temporary folder)")
    ap.add_argument("--recipes", default=None, help=f"comma-separated (default {DEFAULT_RECIPES}; --tiny: {TINY_RECIPES})")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job (default: torch's)")
    ap.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for every step, e.g. --set data.demo.n_train=120 (a smaller demo)")
    ap.add_argument("--list", action="store_true", help="list the recipes and exit")
    ap.add_argument("--tiny", action="store_true",
                    help="a smoke test: a tiny demo set, 1 epoch, the scratch recipe, in a temporary root")
    args = ap.parse_args(argv)
    args.train_extra = []
    if args.list:
        for name, (ov, what) in RECIPES.items():
            print(f"{name:22s} {what}\n{'':22s} {' '.join(ov)}")
        return
    if args.tiny:
        print(TINY_NOTE, flush=True)
        args.epochs, args.common, args.train_extra = 1, [*TINY_DATA, *args.common], TINY_TRAIN
    args.recipes = args.recipes or (TINY_RECIPES if args.tiny else DEFAULT_RECIPES)
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; --list shows them")
    with contextlib.ExitStack() as stack:
        if args.root is None:
            args.root = (stack.enter_context(tempfile.TemporaryDirectory(prefix="fstag-accuracy-tiny-")) if args.tiny
                         else str(REPO / "bench_runs" / "accuracy"))
        if args.tiny:
            check_recipes(args)
        run(args, names, Path(args.root).resolve())


def run(args, names: list[str], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FSTAG_"))}
    env.update(FSTAG_ROOT=str(root), PYTHONUNBUFFERED="1")
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    _run([str(REPO / "preprocess.py"), "data=demo", *args.common], env, root, root / "preprocess.log")
    if not (root / "data" / "demo" / SHIFTED_DIR).is_dir():
        raise SystemExit(f"{root / 'data' / 'demo'} has no {SHIFTED_DIR}/ (made by an older generator); "
                         "delete the folder and run again")
    results_path = root / "accuracy.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in names:
        results[name] = evaluate(name, RECIPES[name][0], args, root, env)
        results_path.write_text(json.dumps(results, indent=1))
        r = results[name]
        print(f"{name}: test MAP@3 {r['test_map3']:.4f}, shifted MAP@3 {r['shifted_map3']:.4f} ({r['train_s']:.0f} s)", flush=True)
    print(f"\n{'TINY RUN: ' if args.tiny else ''}{machine(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))}; "
          f"arch {args.arch}, fold {args.fold}, {args.epochs} epochs\n")
    print("| recipe | what | test MAP@3 | shifted MAP@3 | val_acc1 | train s |")
    print("|---|---|---|---|---|---|")
    for name in names:
        r = results[name]
        print(f"| {name} | {r['what']} | {r['test_map3']:.4f} | {r['shifted_map3']:.4f} | {r['val_acc1']:.4f} | {r['train_s']:.0f} |")


if __name__ == "__main__":
    main()
