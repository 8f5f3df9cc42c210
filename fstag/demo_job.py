"""The README's main job on the demo data: preprocess -> a small sweep -> retrain_val -> predict -> blend.

    python -m fstag.demo_job [--folds 0,1] [--augs specmask_concat,robust] [--experiment demo|demo_seed] [--set key=value ...]

The sweep trains the small CNN with experiment=scratch's recipe (``--experiment demo_seed``: the seed's) on
every fold x aug (4 jobs by default), retrains each on its validation
fold, predicts the test split with the fold-0 models, and blends all jobs with OOF-fitted weights.

Each step is the real entry point run as users run it; ``--set`` overrides go to every step (for example
``--set data.demo.n_train=120``), ``--train-set`` only to the training steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _members(train_overrides: list[str], augs: list[str], folds: list[str], stages=("", "_r")) -> list[str]:
    """Member names of the swept jobs: ``cnn_small/<aug>/fold_<k>[_r]``, with the variant of the training
    overrides when there is one (``cnn_small/<aug>/<variant>/fold_<k>``), quoted for a Hydra list."""
    from fstag.runs.identity import DEFAULT_VARIANT, job_variant

    root = next((o.split("=", 1)[1] for o in train_overrides if o.startswith("data.root=")), None)
    names = []
    for x in augs:
        for k in folds:
            for s in stages:
                variant = job_variant(train_overrides, "retrain_val" if s else "train", root)[0]
                mid = "" if variant == DEFAULT_VARIANT else f"{variant}/"
                names.append(f"'cnn_small/{x}/{mid}fold_{k}{s}'" if mid else f"cnn_small/{x}/fold_{k}{s}")
    return names


def _run(step: str, args: list[str]) -> list[str]:
    """Run one entry point, streaming its standard output; return the output's lines."""
    cmd = [sys.executable, str(REPO / step), *args]
    print(f"\n=== {step} {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen(cmd, cwd=os.getcwd(), stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed with exit code {proc.returncode}")
    print(f"=== {step} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", default="0,1", help="validation folds of the sweep (default 0,1)")
    ap.add_argument("--augs", default="specmask_concat,robust",
                    help="aug options of the sweep (default specmask_concat,robust: without and with the recording simulation)")
    ap.add_argument("--experiment", default="demo",
                    help="the training preset: demo (experiment=scratch's recipe, the default) or demo_seed (the seed's)")
    ap.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--train-set", dest="train", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    folds = [f.strip() for f in a.folds.split(",") if f.strip()]
    augs = [x.strip() for x in a.augs.split(",") if x.strip()]
    common = ["data=demo", *a.common]
    train = ["-m", f"experiment={a.experiment}", f"fold={','.join(folds)}", f"aug={','.join(augs)}", *common, *a.train]
    t0 = time.perf_counter()
    _run("preprocess.py", common)
    _run("train.py", train)
    _run("train.py", [*train, "stage=retrain_val"])
    jobs = [o for o in train if o != "-m"]
    _run("predict.py", [*common, f"runs=[{','.join(_members(jobs, augs, folds[:1], ('',)))}]"])
    members = ",".join(_members(jobs, augs, folds))
    blend_out = _run("blend.py", [*common, "blend=demo", f"blend.members=[{members}]"])
    root = Path(os.environ.get("FSTAG_ROOT", ".")).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    print(f"\nDemo job finished in {time.perf_counter() - t0:.0f} s.")
    for line in blend_out:
        if line.startswith(("submission:", "test MAP@3")):
            print(line)
    print(f"Browse the runs:  mlflow ui --backend-store-uri {uri} --port 5000")


if __name__ == "__main__":
    main()
