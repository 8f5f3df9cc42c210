"""End to end: the seed's full recipe for fold 1 on a data set of FSDKaggle2018's size, timed per step.

    python bench/seed_recipe.py [--root /tmp/fstag_seed_recipe] [--n-train 9473 --n-test 1600]
                                [--epochs 40 --retrain-epochs 10] [--device cuda]

Steps (each the real entry point, as a user runs it): generate the demo data set at FSDKaggle2018's size
(9,473 train clips; durations drawn around a 5 s median, like the real clips), preprocess, then for
resnext101_32x4d (aug=none) and resnet50 (aug=specmask_concat): train fold 1 for --epochs epochs and
retrain_val for --retrain-epochs epochs, each with 5x TTA test predictions; finally blend=seed_solution.
Prints the wall time of every step, the total and the machine. Target on one H100: under 30 minutes.
Early stopping is switched off so the epoch counts are the recipe's, not the data's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/tmp/fstag_seed_recipe")
    ap.add_argument("--n-train", type=int, default=9473)
    ap.add_argument("--n-test", type=int, default=1600)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--retrain-epochs", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pretrained", action="store_true", help="arch.pretrained=true (needs cached weights)")
    a = ap.parse_args()
    root = Path(a.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "FSTAG_ROOT": str(root), "PYTHONPATH": str(REPO)}
    data = [
        "data=demo", f"data.root={root}/data/seed_recipe", f"data.demo.n_train={a.n_train}",
        f"data.demo.n_test={a.n_test}", "data.demo.median_duration=5.0", "exp=seed_recipe",
    ]
    steps: list[tuple[str, list[str]]] = [("preprocess.py", [*data, f"preprocess.device={a.device}"])]
    for arch, aug in (("resnext101_32x4d", "none"), ("resnet50", "specmask_concat")):
        common = [*data, f"arch={arch}", f"aug={aug}", "fold=1", f"arch.pretrained={str(a.pretrained).lower()}",
                  "trainer.enable_progress_bar=false", "callbacks.early_stopping.patience=1000"]
        steps.append(("train.py", [*common, f"trainer.max_epochs={a.epochs}", f"trainer.min_epochs={a.epochs}"]))
        steps.append(("train.py", [*common, "stage=retrain_val", f"retrain.max_epochs={a.retrain_epochs}",
                                   f"retrain.min_epochs={a.retrain_epochs}", "retrain.patience=1000"]))
    steps.append(("blend.py", [*data, "blend=seed_solution"]))

    from bench.train_throughput import machine  # noqa: E402
    import torch

    print(f"machine: {machine(torch.device(a.device if torch.cuda.is_available() else 'cpu'))}", flush=True)
    times = []
    t_all = time.perf_counter()
    for script, args in steps:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / script), *args], check=True, env=env, cwd=root)
        times.append((script + " " + " ".join(x for x in args if x.startswith(("arch=", "aug=", "stage=", "blend="))),
                      time.perf_counter() - t0))
        print(f"--- {times[-1][0]}: {times[-1][1]:.0f} s", flush=True)
    total = time.perf_counter() - t_all
    print("\nstep                                                   seconds")
    for name, sec in times:
        print(f"{name:<55} {sec:>7.0f}")
    print(f"{'total (data generation included)':<55} {total:>7.0f}  ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
