"""Accuracy of the multi-label demo job over seeds: cnn_small per aug (validation and test lwlrap and mAP) and
the OOF-weighted blend of the demo job's members against its best member.

    python bench/multilabel_accuracy.py [--seeds 3] [--augs none,specmask_concat] [--fold 0] [--epochs E]
                                        [--retrain-epochs E] [--jobs N] [--threads N] [--set KEY=VALUE ...]
                                        [--train-set KEY=VALUE ...] [--root DIR] [--out DIR] [--tiny]

What ``python -m fstag.demo_job --task multi_label`` runs, once per seed, through the real entry points in
``--root`` (its own FSTAG_ROOT, default bench_runs/multilabel_accuracy; the multi-label demo data and its
features are made there on first use):

1. ``preprocess.py data=demo_multilabel``;
2. ``train.py -m experiment=demo_multilabel aug=<augs> fold=<fold> seed=0,..,N-1 stage=train,retrain_val``
   into ``exp=mlacc-<digest of the settings>`` (``--jobs N``: one launch per stage, N jobs at once through
   hydra/launcher=joblib). train.py skips a complete job, so a re-run resumes where it stopped;
3. one ``blend.py -m blend=demo_multilabel`` launch, a blend per seed: each aug's train job and its
   retrain_val job, ``blend.weights=oof`` (one weight per aug, fitted on the OOF lwlrap; docs/blending.md).

Scores, each the mean over the seeds with its min-max range:

- per aug: ``val`` lwlrap and mAP (the train job's validation fold at its best epoch, as logged to MLflow;
  curated clips only, the noisy ones never validate), ``OOF`` lwlrap (the same clips, with the job's TTA
  crops), ``test`` lwlrap and mAP of the train job and of its retrain_val job, on the scored test clips;
- the blend's test lwlrap and mAP against its best member's, the member chosen per seed by its validation
  lwlrap (never by a test score). A difference counts only when it is larger than the seed spread (the wider
  min-max range of its two sides; bench/accuracy.py's rule), else its verdict is "none".

Output in ``--out`` (default ``<root>/report``), each file written atomically: ``report.md`` (the machine, the
command, the tables), ``scores.csv`` (one row per job or blend and seed) and ``results.json``.

``--tiny``: a smoke test of the same steps on CPU: a tiny multi-label demo (30 curated, 10 noisy and 8 test
clips of sources of at most 2 s), 1 epoch (retrain_val 1), 2 seeds, 1 TTA pass. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import TINY_NOTE, machine  # noqa: E402
from bench.accuracy import csv_text, launcher, project_env, run_entry, verdict  # noqa: E402
from fstag.core.io import write_json_atomic, write_text_atomic  # noqa: E402

DATA = "data=demo_multilabel"
EXPERIMENT = "experiment=demo_multilabel"
TINY_DATA = ["data.demo.n_curated=30", "data.demo.n_noisy=10", "data.demo.n_test=8", "data.demo.max_duration=2.0",
             "data.demo.seed=7"]
TINY_TRAIN = ["predict.tta=1"]
TINY_SETTINGS = {"seeds": 2, "epochs": 1, "retrain_epochs": 1}
METRICS = ("lwlrap", "map")
ROW_FIELDS = ["seed", "what", "aug", "stage", "val_lwlrap", "val_map", "oof_lwlrap", "test_lwlrap", "test_map", "path"]
REPORT_MD, SCORES_CSV, RESULTS_JSON = "report.md", "scores.csv", "results.json"


# commands -------------------------------------------------------------------------------------------------
def settings_of(args) -> list[str]:
    """The train.py overrides every job shares (the sweep values apart)."""
    out = [DATA, EXPERIMENT, *args.common, *args.train_extra, "trainer.enable_progress_bar=false"]
    if args.epochs is not None:
        out.append(f"trainer.max_epochs={args.epochs}")
    if args.retrain_epochs is not None:
        out += [f"retrain.max_epochs={args.retrain_epochs}", f"retrain.min_epochs={min(2, args.retrain_epochs)}"]
    return out


def exp_name(args) -> str:
    """``mlacc-<digest>``: the experiment folder of one set of settings (another set never reuses its jobs)."""
    text = json.dumps({"settings": settings_of(args), "augs": args.augs, "fold": args.fold})
    return "mlacc-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def train_commands(args, seeds: list[int]) -> list[list[str]]:
    """The train and retrain_val launches: one (the basic launcher runs the train jobs first) or, with jobs at
    once, one per stage (a retrain_val job needs its finished parent)."""
    stages = [["train", "retrain_val"]] if args.jobs == 1 else [["train"], ["retrain_val"]]
    return [["train.py", "-m", f"stage={','.join(s)}", f"seed={','.join(map(str, seeds))}", f"fold={args.fold}",
             f"aug={','.join(args.augs)}", f"exp={exp_name(args)}", *launcher(args.jobs), *settings_of(args)]
            for s in stages]


def blend_command(args, member_sets: list[list[Path]], out: Path) -> list[str]:
    """One blend.py launch: blend ``k`` (Hydra's job number) of ``member_sets[k]`` into ``out/<k>``."""
    members = ",".join("[" + ",".join(f"'{p}'" for p in m) + "]" for m in member_sets)
    return ["blend.py", "-m", DATA, "blend=demo_multilabel", f"exp={exp_name(args)}",
            "blend.name=mlacc-${hydra:job.num}", f"blend.members={members}", "blend.weights=oof",
            f"hydra.sweep.dir={out}", "hydra.sweep.subdir=${hydra.job.num}", *args.common]


# jobs and scores ------------------------------------------------------------------------------------------
def find_jobs(exp_dir: Path, seeds: list[int], augs: list[str], fold: int) -> dict[tuple[int, str, str], Path]:
    """The complete jobs below ``exp_dir`` by (seed, aug, stage); a missing one is an error naming it."""
    found = {}
    for info_path in exp_dir.glob(f"cnn_small/*/*/fold_{fold}*/run.json"):
        info = json.loads(info_path.read_text())
        if info.get("complete"):
            found[(int(info["identity"]["seed"]), info["aug"], info["stage"])] = info_path.parent
    want = [(s, a, st) for s in seeds for a in augs for st in ("train", "retrain_val")]
    missing = [k for k in want if k not in found]
    if missing:
        raise SystemExit(f"{exp_dir}: no complete job for (seed, aug, stage) {missing[:4]}; found {sorted(found)[:8]}")
    return {k: found[k] for k in want}


def test_scores(npz: Path, labels: list[str], truth) -> dict[str, float]:
    """lwlrap and mAP of a ``test.npz`` / ``probs.npz`` on the scored test clips."""
    from fstag.core.task import get_task
    from fstag.ensemble.submission import score_probabilities

    with np.load(npz) as z:
        scores = score_probabilities(get_task("multi_label"), [str(f) for f in z["fnames"]], z["probs"], labels, truth)
    return {f"test_{m}": scores[m] for m in METRICS}


def job_row(seed: int, aug: str, stage: str, path: Path, truth) -> dict:
    info = json.loads((path / "run.json").read_text())
    best = info.get("best_metrics") or {}
    row = {"seed": seed, "what": "job", "aug": aug, "stage": stage, "path": str(path),
           "val_lwlrap": best.get("val_lwlrap", float("nan")) if stage == "train" else float("nan"),
           "val_map": best.get("val_map", float("nan")) if stage == "train" else float("nan"),
           "oof_lwlrap": info.get("oof_lwlrap", float("nan")) if stage == "train" else float("nan")}
    return {**row, **test_scores(path / "test.npz", info["labels"], truth)}


def evaluate(args, seeds: list[int], root: Path, env: dict) -> tuple[list[dict], float]:
    """Train (or find) the jobs, blend them per seed; one row per job and per blend, and the training time."""
    log, t0 = root / "mlacc.log", time.perf_counter()
    run_entry(["preprocess.py", DATA, *args.common], env, root, root / "preprocess.log")
    for cmd in train_commands(args, seeds):
        run_entry(cmd, env, root, log)
    train_s = time.perf_counter() - t0
    exp_dir = root / "multirun" / exp_name(args)
    jobs = find_jobs(exp_dir, seeds, args.augs, args.fold)
    member_sets = [[jobs[(s, a, st)] for a in args.augs for st in ("train", "retrain_val")] for s in seeds]
    out = root / "bench_multilabel" / time.strftime("%Y%m%d-%H%M%S")
    run_entry(blend_command(args, member_sets, out), env, root, log)

    from fstag.data.layouts import open_layout

    layout = open_layout({"layout": "fsdkaggle2019", "root": str(root / "data" / "demo_multilabel")})
    truth = layout.test_labels()
    labels = layout.labels()
    rows = [job_row(s, a, st, jobs[(s, a, st)], truth) for s in seeds for a in args.augs for st in ("train", "retrain_val")]
    for k, s in enumerate(seeds):
        blend_dir = out / str(k)
        oof = json.loads((blend_dir / "blend.json").read_text())["metrics"].get("oof_lwlrap", float("nan"))
        rows.append({"seed": s, "what": "blend", "aug": "+".join(args.augs), "stage": "", "path": str(blend_dir),
                     "val_lwlrap": float("nan"), "val_map": float("nan"), "oof_lwlrap": oof,
                     **test_scores(blend_dir / "probs.npz", labels, truth)})
    return rows, train_s


# summaries ------------------------------------------------------------------------------------------------
def cell(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{statistics.fmean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def gain(d: float, w: float, v: str) -> str:
    return f"{d:+.4f} (spread {w:.4f}): {v}"


def best_members(rows: list[dict]) -> dict[int, dict]:
    """Per seed, the train job with the highest validation lwlrap (ties: the first aug)."""
    out: dict[int, dict] = {}
    for r in rows:
        if r["what"] == "job" and r["stage"] == "train" and (r["seed"] not in out or r["val_lwlrap"] > out[r["seed"]]["val_lwlrap"]):
            out[r["seed"]] = r
    return out


def summarise(rows: list[dict]) -> dict:
    """The blend against its best member on the test split, per metric: (diff, spread, verdict)."""
    best = best_members(rows)
    blends = {r["seed"]: r for r in rows if r["what"] == "blend"}
    seeds = sorted(blends)
    return {m: verdict([best[s][f"test_{m}"] for s in seeds], [blends[s][f"test_{m}"] for s in seeds]) for m in METRICS}


def render(rows: list[dict], augs: list[str], header: str) -> str:
    lines = [header, "", "Mean over seeds (min-max). val: the validation fold at the best epoch (curated clips); OOF: "
             "the same clips with TTA; test: the scored test clips.", "",
             "| aug | seeds | val lwlrap | val mAP | OOF lwlrap | test lwlrap | test mAP | retrain_val test lwlrap "
             "| retrain_val test mAP |", "|---|---|---|---|---|---|---|---|---|"]
    for aug in augs:
        tr = [r for r in rows if r["what"] == "job" and r["aug"] == aug and r["stage"] == "train"]
        rv = [r for r in rows if r["what"] == "job" and r["aug"] == aug and r["stage"] == "retrain_val"]
        col = lambda rs, c: cell([r[c] for r in rs])  # noqa: E731
        lines.append(f"| {aug} | {len(tr)} | {col(tr, 'val_lwlrap')} | {col(tr, 'val_map')} | {col(tr, 'oof_lwlrap')} | "
                     f"{col(tr, 'test_lwlrap')} | {col(tr, 'test_map')} | {col(rv, 'test_lwlrap')} | {col(rv, 'test_map')} |")
    best = best_members(rows)
    blends = [r for r in rows if r["what"] == "blend"]
    picks = [best[r["seed"]] for r in blends]
    s = summarise(rows)
    lines += ["", "The OOF-weighted blend (each aug's train and retrain_val jobs) against its best member (the train job "
              "with the best val lwlrap of its seed):", "",
              "| seeds | best member test lwlrap | blend test lwlrap | blend - best (lwlrap) | best member test mAP "
              "| blend test mAP | blend - best (mAP) | blend OOF lwlrap |", "|---|---|---|---|---|---|---|---|",
              f"| {len(blends)} | {cell([p['test_lwlrap'] for p in picks])} | {cell([b['test_lwlrap'] for b in blends])} | "
              f"{gain(*s['lwlrap'])} | {cell([p['test_map'] for p in picks])} | {cell([b['test_map'] for b in blends])} | "
              f"{gain(*s['map'])} | {cell([b['oof_lwlrap'] for b in blends])} |",
              "", "best member per seed: " + ", ".join(f"seed {p['seed']}: {p['aug']}" for p in picks)]
    return "\n".join(lines) + "\n"


# main -----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds: seed=0..N-1 (default 3)")
    ap.add_argument("--augs", default="none,specmask_concat", help="the augs swept (default none,specmask_concat)")
    ap.add_argument("--fold", type=int, default=0, help="the validation fold (default 0)")
    ap.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: experiment=demo_multilabel's)")
    ap.add_argument("--retrain-epochs", type=int, default=None, help="retrain.max_epochs (default: the preset's)")
    ap.add_argument("--jobs", type=int, default=1, help="training jobs at once (hydra/launcher=joblib when > 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    ap.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for every step, e.g. --set data.demo.n_curated=200")
    ap.add_argument("--train-set", dest="train", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for the training jobs only, e.g. --train-set loader.crop_frames=300")
    ap.add_argument("--root", default=None, help="the FSTAG_ROOT (default bench_runs/multilabel_accuracy; --tiny: a "
                                                 "temporary folder)")
    ap.add_argument("--out", default=None, help="the report folder (default <root>/report)")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: tiny data, 1 epoch, 2 seeds")
    args = ap.parse_args(argv)
    args.augs = [a.strip() for a in args.augs.split(",") if a.strip()]
    args.train_extra = list(args.train)
    if args.tiny:
        args.common = [*TINY_DATA, *args.common]
        args.train_extra = [*TINY_TRAIN, *args.train_extra]
        for k, v in TINY_SETTINGS.items():
            setattr(args, k, v)
    if args.seeds < 1 or args.jobs < 1 or not args.augs or not 0 <= args.fold <= 4:
        raise SystemExit(f"--seeds {args.seeds}, --jobs {args.jobs}, --augs {args.augs}, --fold {args.fold}: need "
                         "seeds >= 1, jobs >= 1, at least one aug and a fold of the 5-fold split (0-4)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.tiny:
        print(TINY_NOTE, flush=True)
    with contextlib.ExitStack() as stack:
        if args.root is None:
            args.root = (stack.enter_context(tempfile.TemporaryDirectory(prefix="fstag-mlacc-tiny-")) if args.tiny
                         else str(REPO / "bench_runs" / "multilabel_accuracy"))
        root = Path(args.root).resolve()
        out = Path(args.out).resolve() if args.out else root / "report"
        root.mkdir(parents=True, exist_ok=True)
        seeds = list(range(args.seeds))
        rows, train_s = evaluate(args, seeds, root, project_env(root, args.threads))
        import torch

        where = machine(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        command = "python bench/multilabel_accuracy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        header = (f"{'TINY RUN: ' if args.tiny else ''}{where}; cnn_small, experiment=demo_multilabel, fold {args.fold}, "
                  f"{args.seeds} seed(s), epochs {args.epochs or 'the preset’s'}, retrain_val epochs "
                  f"{args.retrain_epochs or 'the preset’s'}; preprocess + training {train_s:.0f} s wall\n\n`{command}`")
        text = render(rows, args.augs, header)
        write_text_atomic(out / SCORES_CSV, csv_text(rows, ROW_FIELDS))
        write_json_atomic(out / RESULTS_JSON, {"machine": where, "command": command, "seeds": seeds, "augs": args.augs,
                                               "fold": args.fold, "settings": settings_of(args), "train_s": train_s,
                                               "summary": summarise(rows), "rows": rows})
        write_text_atomic(out / REPORT_MD, text)
        print(text)
        print(f"report: {out / REPORT_MD}")


if __name__ == "__main__":
    main()
