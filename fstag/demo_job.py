"""The README's main job on the demo data: preprocess -> a small sweep -> retrain_val -> predict -> blend.

    python -m fstag.demo_job [--task single_label|multi_label] [--folds 0] [--augs ...] [--experiment demo|demo_seed]
                             [--jobs N] [--set key=value ...]

The sweep trains the small CNN on every fold x aug (2 jobs by default: fold 0 x aug none, specmask_concat)
with ``hydra/launcher=joblib``: as many jobs at once as ``--jobs`` (default: the launcher's, one per CPU core or GPU), each on one thread;
then retrains each on its validation fold, predicts the test split with the fold-0 models, and blends
all jobs with OOF-fitted weights. It ends by printing its wall time, the submission's test MAP@3 and the
MLflow UI command.

``--task multi_label`` runs the same steps on the multi-label demo (``data=demo_multilabel``: clips of 1-3
mixed sources in the FSDKaggle2019 layout, curated + noisy) with ``experiment=demo_multilabel`` and
``blend=demo_multilabel``, writes an FSDKaggle2019 submission (a probability column per label) and prints its
test lwlrap and mAP. The default, ``single_label``, is what `make demo` runs.

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
DEFAULT_EXPERIMENT = "demo"
DEFAULT_AUGS = "none,specmask_concat"
DEFAULT_FOLDS = "0"
DEFAULT_TASK = "single_label"
# per task: the data config, the training preset, the blend preset
TASK_PRESETS = {"single_label": ("demo", DEFAULT_EXPERIMENT, "demo"),
                "multi_label": ("demo_multilabel", "demo_multilabel", "demo_multilabel")}


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
    ap.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASK_PRESETS),
                    help=f"single_label (the demo data, what `make demo` runs; the default) or multi_label (the "
                         "multi-label demo in the FSDKaggle2019 layout, scored by lwlrap and mAP)")
    ap.add_argument("--folds", default=DEFAULT_FOLDS, help=f"validation folds of the sweep (default {DEFAULT_FOLDS})")
    ap.add_argument("--augs", default=DEFAULT_AUGS, help=f"aug options of the sweep (default {DEFAULT_AUGS})")
    ap.add_argument("--experiment", default=None,
                    help=f"the training preset (default {DEFAULT_EXPERIMENT}; --task multi_label: demo_multilabel): "
                         "demo_seed (the seed's recipe) or demo (experiment=scratch's recipe)")
    ap.add_argument("--jobs", default="auto",
                    help="training jobs at once: auto (hydra/launcher=joblib's default: one per CPU core, or per GPU), "
                         "a number, or 1 (Hydra's basic launcher, one job after the other)")
    ap.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--train-set", dest="train", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    folds = [f.strip() for f in a.folds.split(",") if f.strip()]
    augs = [x.strip() for x in a.augs.split(",") if x.strip()]
    data, experiment, blend = TASK_PRESETS[a.task]
    common = [f"data={data}", *a.common]
    jobs = [f"experiment={a.experiment or experiment}", f"fold={','.join(folds)}", f"aug={','.join(augs)}", *common, *a.train]
    launcher = _launcher(a.jobs)  # a bad --jobs is refused before anything runs
    t0 = time.perf_counter()
    _run("preprocess.py", common)
    _run("train.py", ["-m", *launcher, *jobs])
    _run("train.py", ["-m", *launcher, *jobs, "stage=retrain_val"])
    _run("predict.py", [*common, f"runs=[{','.join(_members(jobs, augs, folds[:1], ('',)))}]"])
    blend_out = _run("blend.py", [*common, f"blend={blend}", f"blend.members=[{','.join(_members(jobs, augs, folds))}]"])
    _summary(time.perf_counter() - t0, blend_out, data, a.task)


def _launcher(jobs: str) -> list[str]:
    """Hydra overrides that run a sweep's jobs ``jobs`` at a time (joblib's worker processes share the
    cores: with one job per core, each computes on one thread)."""
    if jobs == "auto":
        return ["hydra/launcher=joblib"]
    if not jobs.isdigit() or int(jobs) < 1:
        raise SystemExit(f"--jobs {jobs}: auto or a positive number")
    return [] if int(jobs) == 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={int(jobs)}"]


def _summary(seconds: float, blend_out: list[str], data: str = "demo", task: str = DEFAULT_TASK) -> None:
    root = Path(os.environ.get("FSTAG_ROOT", ".")).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    print(f"\nDemo job finished in {seconds:.0f} s (wall time).")
    for line in blend_out:
        if line.startswith(("submission:", "test MAP@3", "test lwlrap")):
            print(line)
    from fstag.core.task import get_task
    from fstag.runs.tracking import ui_command, ui_url

    metric = get_task(task).val_metric  # val_map3 | val_lwlrap
    print("Compare the runs in the MLflow UI:")
    serve = ui_command(uri)
    if serve:
        print(f"  {serve}")
    try:
        from mlflow.tracking import MlflowClient

        exp = MlflowClient(uri).get_experiment_by_name(f"fstag-{data}")
    except Exception:  # noqa: BLE001  (the summary must not fail the demo)
        exp = None
    if exp is not None:
        print(f"  then open {ui_url(uri, exp.experiment_id, order_by=f'best_{metric}')}")
    data_arg = "" if data == "demo" else f" data={data}"
    print(f"List the jobs and their scores:  python -m fstag.runs{data_arg} --sort {metric}")


if __name__ == "__main__":
    main()
