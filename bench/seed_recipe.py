"""End to end: the seed's full recipe for fold 1 on a data set of FSDKaggle2018's size, timed per step.

    python bench/seed_recipe.py [--root /tmp/fstag_seed_recipe] [--n-train 9473 --n-test 1600]
                                [--epochs 40 --retrain-epochs 10] [--device cuda] [--tiny]

Steps (each the real entry point, as a user runs it): generate the demo data set at FSDKaggle2018's size
(9,473 train clips; durations drawn around a 5 s median, like the real clips), preprocess, then for
resnext101_32x4d (aug=none) and resnet50 (aug=specmask_concat): train fold 1 for --epochs epochs and
retrain_val for --retrain-epochs epochs, each with 5x TTA test predictions; finally blend=seed_solution
with those four jobs as its members. Prints the wall time of every step, the total and the machine.
Target on one H100: under 30 minutes. Early stopping is switched off so the epoch counts are the
recipe's, not the data's.

The jobs live in the experiment folder ``seed_recipe`` (``exp=seed_recipe``) under ``--root``. Their
overrides name a variant (``fstag.runs.identity``), so each retrain_val step repeats its train step's
overrides (that is how it finds its parent) and the blend names its members with their variants.

``--tiny``: the same steps on CPU on a tiny demo set (63 train clips, 12 test clips of at most 4 s), for
the second arch x aug only (the first one's train and retrain_val overrides are composed against conf/,
not run): its train job (1 epoch) and retrain_val job (1 epoch), 1 TTA pass, batch 16, with fstag's
small CNN as the network of the arch's config (``arch.name=cnn_small``: the jobs are
cnn_small/specmask_concat/<variant>/fold_1[_r]), then blend=seed_solution of those two; in a temporary
root unless ``--root`` is given (a smoke test of a minute or two on CPU; its times mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


EXP = "seed_recipe"
RECIPE = (("resnext101_32x4d", "none"), ("resnet50", "specmask_concat"))
FOLD = 1
TINY_DATA = ["data.demo.n_shifted=0", "data.demo.max_duration=4.0"]
TINY_TRAIN = ["loader.batch_size=16", "predict.tta=1"]
TINY_NETWORK = "cnn_small"  # --tiny: each arch config's network (arch.name)


def member_names(steps: list[tuple[str, list[str]]], data_root: str) -> list[str]:
    """The blend's members: each train.py step's job as ``<arch>/<aug>/<variant>/fold_<k>[_r]`` (the
    variant as train.py names it from the same overrides; quoted for a Hydra list), after preprocessing
    (a ``data.root`` override's variant item is the digest of its train.csv)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from fstag.runs.identity import DEFAULT_VARIANT, job_variant

    names = []
    for script, args in steps:
        if script != "train.py":
            continue
        values = {o.key_or_group: o.get_value_element_as_str() for o in OverridesParser.create().parse_overrides(args)}
        stage = values.get("stage", "train")
        variant = job_variant(args, stage, data_root)[0]
        mid = "" if variant == DEFAULT_VARIANT else f"{variant}/"
        arch = values.get("arch.name", values["arch"])
        names.append(f"'{arch}/{values['aug']}/{mid}fold_{values['fold']}{'_r' if stage == 'retrain_val' else ''}'")
    return names


def train_steps(a: argparse.Namespace, data: list[str], arch: str, aug: str) -> list[list[str]]:
    """train.py's overrides for the train step and the retrain_val step of one arch x aug."""
    # every override that changes the result: the retrain_val step repeats them all, so its parent
    # (the train job of the same variant, less retrain.*) is the train step's job
    network = [f"arch.name={TINY_NETWORK}"] if a.tiny else []
    common = [*data, f"exp={EXP}", f"arch={arch}", *network, f"aug={aug}", f"fold={FOLD}",
              f"arch.pretrained={str(a.pretrained).lower()}", "trainer.enable_progress_bar=false",
              "callbacks.early_stopping.patience=1000", f"trainer.max_epochs={a.epochs}",
              f"trainer.min_epochs={a.epochs}", *(TINY_TRAIN if a.tiny else [])]
    return [common, [*common, "stage=retrain_val", f"retrain.max_epochs={a.retrain_epochs}",
                     f"retrain.min_epochs={a.retrain_epochs}", "retrain.patience=1000"]]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None, help="FSTAG_ROOT of the run (default /tmp/fstag_seed_recipe; --tiny: a temporary folder)")
    ap.add_argument("--n-train", type=int, default=9473)
    ap.add_argument("--n-test", type=int, default=1600)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--retrain-epochs", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pretrained", action="store_true", help="arch.pretrained=true (needs cached weights)")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: a tiny demo set, one arch x aug, 1 + 1 epochs, TTA 1, on CPU")
    a = ap.parse_args(argv)
    if a.tiny:
        a.n_train, a.n_test, a.epochs, a.retrain_epochs, a.device = 63, 12, 1, 1, "cpu"
    with contextlib.ExitStack() as stack:
        if a.root is None and a.tiny:
            a.root = stack.enter_context(tempfile.TemporaryDirectory(prefix="fstag-seed-recipe-tiny-"))
        run(a, Path(a.root or "/tmp/fstag_seed_recipe").resolve())


def run(a: argparse.Namespace, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # FSTAG_ROOT moves every path; PYTHONPATH is extended (the entry points import fstag from this checkout)
    env = {**os.environ, "FSTAG_ROOT": str(root),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    data_root = f"{root}/data/seed_recipe"
    data = [
        "data=demo", f"data.root={data_root}", f"data.demo.n_train={a.n_train}", f"data.demo.n_test={a.n_test}",
        f"data.demo.median_duration={1.5 if a.tiny else 5.0}", *(TINY_DATA if a.tiny else []),
    ]
    steps: list[tuple[str, list[str]]] = [
        ("preprocess.py", [*data, f"preprocess.device={a.device}", *(["preprocess.progress=false"] if a.tiny else [])])]
    # --tiny trains the second pair only (the loop's body is the same for both); the first pair's
    # commands are composed against conf/ instead
    for arch, aug in RECIPE[1:] if a.tiny else RECIPE:
        steps += [("train.py", args) for args in train_steps(a, data, arch, aug)]

    from bench import TINY_NOTE, compose_train, machine

    if a.tiny:
        print(TINY_NOTE)
        for arch, aug in RECIPE[:1]:
            for args in train_steps(a, data, arch, aug):
                compose_train(args)
            print(f"not trained (--tiny): {arch} aug={aug}; its train and retrain_val overrides compose against conf/")
    print(f"machine: {machine(a.device)}", flush=True)
    times = []
    t_all = time.perf_counter()
    for script, args in [*steps, ("blend.py", None)]:
        if args is None:  # the members' names need the data (their variant has the train.csv digest)
            args = [*data, f"exp={EXP}", "blend=seed_solution", f"blend.members=[{','.join(member_names(steps, data_root))}]"]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / script), *args], check=True, env=env, cwd=root)
        times.append((script + " " + " ".join(x for x in args if x.startswith(("arch=", "arch.name=", "aug=", "stage=", "blend="))),
                      time.perf_counter() - t0))
        print(f"--- {times[-1][0]}: {times[-1][1]:.0f} s", flush=True)
    total = time.perf_counter() - t_all
    print(("\nTINY RUN: " if a.tiny else "\n") + f"seed recipe, fold {FOLD}, {a.epochs} + {a.retrain_epochs} epochs, {a.n_train} train clips")
    print("step                                                   seconds")
    for name, sec in times:
        print(f"{name:<55} {sec:>7.0f}")
    print(f"{'total (data generation included)':<55} {total:>7.0f}  ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
