"""Accuracy of training recipes on the demo data: one fold's model against the fold blend, on the test split
and on the shifted test split, over several seeds.

    python bench/accuracy.py --recipe NAME:OVERRIDES [--recipe ...] [--seeds 3] [--folds 5] [--epochs E]
                             [--retrain-epochs E] [--self-train] [--jobs N] [--threads N] [--set KEY=VALUE ...]
                             [--root DIR] [--out DIR] [--recipes PRESET,...] [--arch resnet18] [--list] [--tiny]

A recipe is a name and train.py overrides, comma-separated (commas inside ``[]`` or quotes stay):
``--recipe cnn6:experiment=demo,arch=cnn6``. ``--recipes seed,plain,scratch`` adds presets (``--list`` shows
them), which train ``--arch`` (default resnet18) as ``arch=resnet50 arch.name=<arch>``. The first recipe is
the baseline the others are compared with.

Per recipe, through the real entry points, in ``--root`` (its own FSTAG_ROOT, default bench_runs/accuracy;
the demo data and features are made there on first use):

1. ``train.py -m exp=acc-<recipe> <overrides> stage=train,retrain_val seed=0,..,N-1 fold=0,..,F-1``, one
   launch named ``sweep_name=<recipe>-<digest of its settings>`` (``--jobs N``: one launch per stage, N jobs
   at once through hydra/launcher=joblib). ``--self-train`` adds a ``stage=self_train`` launch per seed on the
   shifted folder (``self_train.input``), each job taught by the train job of its own seed and fold
   (``self_train.teachers``). train.py skips a complete job, so a re-run resumes where it stopped;
2. one ``blend.py -m`` launch, a blend per seed with ``blend.weights=oof``: the F fold jobs and their
   retrain_val jobs (self-trained rows: the F ``fold_<k>_st`` jobs). The weights are fitted per family
   (docs/blending.md); one recipe's jobs are one family, so its members weigh equally;
3. one ``predict.py -m`` launch on ``data/demo/audio_test_shifted``: per seed, the first fold's job (the
   single-fold model) and the blend's members (a geometric mean, as the blend).

Scores are MAP@3 on the scored rows of the test split (the single job's own ``test.npz``, the blend's
``probs.npz``) and on the shifted split (other instruments of each label's family, rooms, microphones and
noise than any train clip; its labels ``test_shifted.csv`` only score: self-training reads its audio alone).
Each cell is the mean over the seeds with their min-max range. A difference (blend - single, a recipe - the
baseline, with self-training - without) is a gain or a loss only when it is larger than the seed spread (the
wider min-max range of its two sides); otherwise its verdict is "none".

Output in ``--out`` (default ``<root>/report``), each file written atomically: ``report.md`` (the machine, the
command, the tables), ``scores.csv`` (one row per recipe, self-training and seed), ``summary.csv`` (one row per
recipe and self-training) and ``results.json`` (everything, with the job and blend folders). A re-run skips a
recipe whose seeds were all scored with the same settings.

``--tiny``: a smoke test of the same steps on CPU: a tiny demo set (63 train clips, 12 test and 21 shifted
clips of at most 4 s), 1 epoch (retrain_val 1), 1 fold (its job and its retrain_val job blended: the
entry points' start-ups, not the jobs, are most of its cost), 2 seeds, 1 TTA pass, the recipe
``tiny:experiment=demo`` unless recipes are given, after checking that the presets' and self-training's
overrides compose against conf/; in a temporary root unless ``--root`` is given. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import TINY_NOTE, compose_train, machine  # noqa: E402
from fstag.core.io import write_json_atomic, write_text_atomic  # noqa: E402
from fstag.data.demo import SHIFTED_DIR, SHIFTED_LABELS_CSV, TEST_LABELS_CSV  # noqa: E402
from fstag.evaluate.metrics import map_at_3  # noqa: E402

# --tiny: the demo set's size (every step), the jobs' own TTA passes and predict.py's, folds, seeds, epochs
TINY_DATA = ["data.demo.n_train=63", "data.demo.n_test=12", "data.demo.n_shifted=21", "data.demo.max_duration=4.0",
             "data.demo.seed=7"]
TINY_TRAIN = ["predict.tta=1"]
TINY_PREDICT = ["tta=1"]
TINY_RECIPE = "tiny:experiment=demo"
TINY_SETTINGS = {"folds": 1, "seeds": 2, "epochs": 1, "retrain_epochs": 1}

SEED_LIKE = ["loader.batch_size=32", "callbacks.gradient_accumulation=null"]
# name -> (overrides, what it is); trained as arch=resnet50 arch.name=<--arch>. "scratch-*" rows remove or
# add one ingredient of experiment=scratch.
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
SWEPT = ("seed", "fold", "stage", "exp", "sweep_name")  # keys the bench sets itself
SCORES = ("single_test", "blend_test", "single_shifted", "blend_shifted")
# the columns of scores.csv, one row per recipe, self-training and seed
ROW_FIELDS = ["recipe", "self_train", "seed", "what", *SCORES, "members", "single_job", "blend_dir", "train_s", "key"]
RESULTS_JSON, SCORES_CSV, SUMMARY_CSV, REPORT_MD = "results.json", "scores.csv", "summary.csv", "report.md"


@dataclass(frozen=True)
class Recipe:
    name: str
    overrides: list[str]
    what: str


# recipes ------------------------------------------------------------------------------------------------
def split_overrides(text: str) -> list[str]:
    """``a=1,b=[1,2],c='x,y'`` -> ``['a=1', 'b=[1,2]', "c='x,y'"]``: commas inside brackets or quotes stay."""
    parts, depth, quote, cur = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_recipe(spec: str) -> Recipe:
    """``NAME:OVERRIDES`` -> a Recipe; the bench's own keys (seed, fold, stage, exp, sweep_name) are refused."""
    name, sep, rest = spec.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise SystemExit(f"--recipe {spec!r}: expected NAME:OVERRIDES, e.g. cnn6:experiment=demo,arch=cnn6 "
                         "(NAME of letters, digits and _.+-); presets by name: --recipes (--list shows them)")
    overrides = split_overrides(rest)
    taken = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] in SWEPT]
    if taken:
        raise SystemExit(f"--recipe {name}: {taken} set keys the bench sweeps itself ({', '.join(SWEPT)}); "
                         "use --seeds and --folds")
    return Recipe(name, overrides, " ".join(overrides))


def preset(name: str, arch: str) -> Recipe:
    if name not in RECIPES:
        raise SystemExit(f"unknown preset recipe {name!r}; the presets: {', '.join(RECIPES)} (--list)")
    overrides, what = RECIPES[name]
    return Recipe(name, ["arch=resnet50", f"arch.name={arch}", *overrides], what)


def recipes_of(args) -> list[Recipe]:
    """The --recipe and --recipes recipes in order (--tiny without any: TINY_RECIPE); names must differ."""
    out = [parse_recipe(s) for s in args.recipe]
    out += [preset(n.strip(), args.arch) for n in (args.recipes or "").split(",") if n.strip()]
    if not out:
        if not args.tiny:
            raise SystemExit("no recipe: give --recipe NAME:OVERRIDES (e.g. --recipe scratch:experiment=demo) "
                             "or --recipes PRESET,... (--list shows the presets)")
        out = [parse_recipe(TINY_RECIPE)]
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"recipe names repeat: {names}")
    return out


def check_compose(args) -> None:
    """Every preset's train.py overrides, and the self-training stage's, compose against conf/."""
    checks = {f"preset {n}": preset(n, args.arch).overrides for n in RECIPES}
    checks["stage=self_train"] = ["experiment=demo", "stage=self_train",
                                  *self_train_overrides(Path("/data/recordings"), Path("/runs/variant"))]
    for what, overrides in checks.items():
        try:
            compose_train(overrides)
        except Exception as e:  # Hydra's composition errors
            raise SystemExit(f"{what}: its overrides do not compose against conf/: {e}") from e
    print(f"all {len(checks)} override sets compose against conf/", flush=True)


# commands -------------------------------------------------------------------------------------------------
def self_train_overrides(folder: Path, teachers: Path) -> list[str]:
    """Pseudo-labels on ``folder`` from the train job of each self_train job's fold below ``teachers``."""
    return [f"self_train.input={folder}", f"self_train.teachers=['{teachers}/fold_${{fold}}']"]


def settings_of(recipe: Recipe, args) -> list[str]:
    """The train.py overrides every job of a recipe shares (the sweep values and names apart)."""
    out = [*args.common, *args.train_extra, "trainer.enable_progress_bar=false"]
    if args.epochs is not None:
        out.append(f"trainer.max_epochs={args.epochs}")
    if args.retrain_epochs is not None:
        out += [f"retrain.max_epochs={args.retrain_epochs}", f"retrain.min_epochs={min(2, args.retrain_epochs)}"]
    return [*out, *recipe.overrides]


def cell_key(recipe: Recipe, args) -> str:
    """What a recipe's scores depend on (a re-run with the same key reuses them); names its sweep too."""
    text = json.dumps({"settings": settings_of(recipe, args), "folds": args.folds, "self_train": args.self_train,
                       "predict": args.predict_extra})
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def launcher(jobs: int) -> list[str]:
    return [] if jobs == 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]


def stage_launches(args) -> list[list[str]]:
    """The stages of each train.py launch: both in one (the basic launcher runs them in order: the train jobs
    first), or one launch each when jobs run at once (a retrain_val job needs its finished parent)."""
    stages = ["train", "retrain_val"]
    return [stages] if args.jobs == 1 else [[s] for s in stages]


def _train_command(recipe: Recipe, args, stages: list[str], seeds: list[int]) -> list[str]:
    return ["train.py", "-m", f"stage={','.join(stages)}", f"seed={','.join(map(str, seeds))}",
            f"fold={','.join(map(str, range(args.folds)))}", f"exp=acc-{recipe.name}",
            f"sweep_name={recipe.name}-{cell_key(recipe, args)}", *launcher(args.jobs), *settings_of(recipe, args)]


def train_commands(recipe: Recipe, args, seeds: list[int]) -> list[list[str]]:
    """The train and retrain_val launches of every seed and fold."""
    return [_train_command(recipe, args, stages, seeds) for stages in stage_launches(args)]


def self_train_command(recipe: Recipe, args, seed: int, teachers: Path, shifted: Path) -> list[str]:
    """One seed's self_train launch (its teachers' folder, the train jobs of that seed, differs per seed)."""
    return [*_train_command(recipe, args, ["self_train"], [seed]), *self_train_overrides(shifted, teachers)]


def _hydra_list(paths: list[Path]) -> str:
    return "[" + ",".join(f"'{p}'" for p in paths) + "]"


def blend_command(recipe: Recipe, args, member_sets: list[list[Path]], out: Path) -> list[str]:
    """One blend.py launch: blend ``k`` (Hydra's job number) of ``member_sets[k]``, into ``out/<k>``."""
    return ["blend.py", "-m", f"exp=acc-{recipe.name}", "blend.name=acc-" + recipe.name + "-${hydra:job.num}",
            "blend.members=" + ",".join(_hydra_list(m) for m in member_sets), "blend.weights=oof",
            "blend.method=gmean", "blend.calibration=none", f"hydra.sweep.dir={out}", "hydra.sweep.subdir=${hydra.job.num}",
            *args.common]


def predict_command(recipe: Recipe, args, run_sets: list[list[Path]], folder: Path, out: Path) -> list[str]:
    """One predict.py launch: the geometric mean of ``run_sets[k]`` on ``folder``, into ``out/<k>``."""
    return ["predict.py", "-m", f"exp=acc-{recipe.name}", "runs=" + ",".join(_hydra_list(r) for r in run_sets),
            f"input={folder}", f"hydra.sweep.dir={out}", "hydra.sweep.subdir=${hydra.job.num}", *args.common,
            *args.predict_extra]


def run_entry(cmd: list[str], env: dict, root: Path, log: Path) -> None:
    """``python <entry point> ...`` in ``root``, its output appended to ``log``; a failure names the log."""
    with open(log, "a") as fh:
        fh.write(f"\n$ python {shlex.join(cmd)}\n")
        fh.flush()
        res = subprocess.run([sys.executable, str(REPO / cmd[0]), *cmd[1:]], cwd=root, env=env, stdout=fh,
                             stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SystemExit(f"python {shlex.join(cmd)} failed ({res.returncode}); see {log}")


# jobs and scores ------------------------------------------------------------------------------------------
def sweep_jobs(exp_dir: Path, sweep: str) -> dict[tuple[int, str, int], Path]:
    """The complete jobs of the launches named ``sweep``: (seed, stage, fold) -> job directory."""
    from fstag.runs.catalog import load_catalog

    catalog = load_catalog(exp_dir, None, None, source="local")
    ids = set(catalog.sweep_ids(sweep))
    out = {}
    for rec in catalog.jobs:
        if rec.complete and ids & set(rec.sweeps):
            seed = json.loads((rec.path / "run.json").read_text())["identity"]["seed"]
            out[(int(seed), rec.stage, rec.fold)] = rec.path
    return out


def pick(jobs: dict, seed: int, stage: str, folds: int, exp_dir: Path) -> list[Path]:
    """The jobs of one seed and stage, fold 0..folds-1; a missing one is an error listing what exists."""
    missing = [k for k in range(folds) if (seed, stage, k) not in jobs]
    if missing:
        have = sorted(f"seed {s} {st} fold {f}" for s, st, f in jobs)
        raise SystemExit(f"{exp_dir}: no complete {stage} job of seed {seed}, fold(s) {missing}; "
                         f"the launch has {have or 'none'}")
    return [jobs[(seed, stage, k)] for k in range(folds)]


def score(probs: np.ndarray, fnames: list[str], labels: list[str], truth: pd.DataFrame) -> float:
    """MAP@3 of the rows of ``truth`` (fname, label) whose label the model knows."""
    pos = {f: i for i, f in enumerate(fnames)}
    lab = {l: i for i, l in enumerate(labels)}
    truth = truth[truth["label"].isin(lab)]
    missing = sorted(set(truth["fname"]) - set(pos))
    if missing:
        raise SystemExit(f"predictions lack {len(missing)} scored clips, e.g. {missing[:3]}")
    rows = np.array([pos[f] for f in truth["fname"]])
    return map_at_3(probs[rows], np.array([lab[l] for l in truth["label"]]))


def npz_score(path: Path, labels: list[str], truth: pd.DataFrame) -> float:
    with np.load(path) as z:
        return score(z["probs"], [str(f) for f in z["fnames"]], labels, truth)


def equal_weights(blend_dir: Path) -> bool:
    """Whether the blend saved in ``blend_dir`` weighed its members equally (as predict.py's mean does)."""
    from omegaconf import OmegaConf

    weights = [float(w) for w in OmegaConf.load(blend_dir / "config.yaml").blend.weights]
    return max(weights) - min(weights) < 1e-9


def truths(data: Path) -> dict[str, pd.DataFrame]:
    test = pd.read_csv(data / TEST_LABELS_CSV)
    return {"test": test[test["usage"] != "Ignored"], "shifted": pd.read_csv(data / SHIFTED_LABELS_CSV)}


# one recipe -----------------------------------------------------------------------------------------------
def cells(args, seeds: list[int]) -> list[tuple[bool, int]]:
    """(self-trained, seed) of every scored cell of a recipe, in the order of the blend and predict launches."""
    return [(st, s) for st in ([False, True] if args.self_train else [False]) for s in seeds]


def members_of(jobs: dict, st: bool, seed: int, args, exp_dir: Path) -> tuple[Path, list[Path]]:
    """A cell's single-fold job (the first fold) and its blend's members."""
    if st:
        blend = pick(jobs, seed, "self_train", args.folds, exp_dir)
        return blend[0], blend
    train = pick(jobs, seed, "train", args.folds, exp_dir)
    return train[0], train + pick(jobs, seed, "retrain_val", args.folds, exp_dir)


def train_jobs(recipe: Recipe, args, seeds: list[int], root: Path, env: dict, log: Path) -> dict:
    """Run (or resume) a recipe's train.py launches; its complete jobs by (seed, stage, fold)."""
    exp_dir = root / "multirun" / f"acc-{recipe.name}"
    sweep = f"{recipe.name}-{cell_key(recipe, args)}"
    for cmd in train_commands(recipe, args, seeds):
        run_entry(cmd, env, root, log)
    jobs = sweep_jobs(exp_dir, sweep)
    if args.self_train:
        for seed in seeds:
            teachers = pick(jobs, seed, "train", args.folds, exp_dir)[0].parent
            run_entry(self_train_command(recipe, args, seed, teachers, root / "data" / "demo" / SHIFTED_DIR),
                      env, root, log)
        jobs = sweep_jobs(exp_dir, sweep)
    return jobs


def score_cell(single: Path, blend_dir: Path, shifted_single: Path, shifted_blend: Path, truth: dict) -> dict:
    """The four MAP@3 of one cell from its single job, its blend's folder and the two shifted predictions."""
    if not equal_weights(blend_dir):
        raise SystemExit(f"{blend_dir}: the blend weighed its members unequally; the shifted split's blend "
                         "(predict.py's geometric mean) would differ from it")
    labels = json.loads((single / "run.json").read_text())["labels"]
    return {"single_test": npz_score(single / "test.npz", labels, truth["test"]),
            "blend_test": npz_score(blend_dir / "probs.npz", labels, truth["test"]),
            "single_shifted": npz_score(shifted_single / "probs.npz", labels, truth["shifted"]),
            "blend_shifted": npz_score(shifted_blend / "probs.npz", labels, truth["shifted"])}


def evaluate(recipe: Recipe, args, seeds: list[int], root: Path, env: dict) -> list[dict]:
    """Train (or find) a recipe's jobs, blend them (blend.py) and predict the shifted folder with them
    (predict.py), one launch each for all cells; one row per cell."""
    data, log, t0 = root / "data" / "demo", root / f"acc-{recipe.name}.log", time.perf_counter()
    jobs = train_jobs(recipe, args, seeds, root, env, log)
    train_s = round(time.perf_counter() - t0, 1)
    todo = cells(args, seeds)
    picked = [members_of(jobs, st, s, args, root / "multirun" / f"acc-{recipe.name}") for st, s in todo]
    out = root / "bench_accuracy" / recipe.name / time.strftime("%Y%m%d-%H%M%S")
    run_entry(blend_command(recipe, args, [m for _, m in picked], out / "blend"), env, root, log)
    run_sets = [r for single, members in picked for r in ([single], members)]
    run_entry(predict_command(recipe, args, run_sets, data / SHIFTED_DIR, out / "shifted"), env, root, log)
    truth = truths(data)
    rows = []
    for k, ((st, seed), (single, members)) in enumerate(zip(todo, picked)):
        blend_dir = out / "blend" / str(k)
        scores = score_cell(single, blend_dir, out / "shifted" / str(2 * k), out / "shifted" / str(2 * k + 1), truth)
        rows.append({"recipe": recipe.name, "self_train": st, "seed": seed, "what": recipe.what, **scores,
                     "members": len(members), "single_job": str(single), "blend_dir": str(blend_dir),
                     "train_s": train_s, "key": cell_key(recipe, args)})
    return rows


# summaries ------------------------------------------------------------------------------------------------
def spread(values: list[float]) -> float:
    """The min-max range of the seeds' values (0 for one seed)."""
    return max(values) - min(values)


def verdict(before: list[float], after: list[float]) -> tuple[float, float, str]:
    """``(mean(after) - mean(before), the seed spread, "gain" | "loss" | "none")``: a difference counts only
    when it is larger than the wider min-max range of the two sides; with one seed each it is "1 seed"."""
    diff = statistics.fmean(after) - statistics.fmean(before)
    width = max(spread(before), spread(after))
    if len(before) < 2 or len(after) < 2:
        return diff, width, "1 seed"
    return diff, width, "none" if abs(diff) <= width else ("gain" if diff > 0 else "loss")


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (recipe, self-trained): each score's mean, min and max over the seeds, and the verdicts
    of blend - single on both splits."""
    groups: dict[tuple[str, bool], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["recipe"], r["self_train"]), []).append(r)
    out = []
    for (name, st), rs in groups.items():
        s = {"recipe": name, "self_train": st, "seeds": len(rs), "what": rs[0]["what"]}
        for col in SCORES:
            vals = [r[col] for r in rs]
            s.update({col: statistics.fmean(vals), f"{col}_min": min(vals), f"{col}_max": max(vals)})
        for split in ("test", "shifted"):
            d, w, v = verdict([r[f"single_{split}"] for r in rs], [r[f"blend_{split}"] for r in rs])
            s.update({f"blend_gain_{split}": d, f"blend_gain_{split}_spread": w, f"blend_gain_{split}_verdict": v})
        out.append(s)
    return out


def comparisons(rows: list[dict]) -> list[dict]:
    """Each recipe against the first (the baseline), and each self-trained row against its recipe without,
    on the single and the blend score of both splits."""
    by = {}
    for r in rows:
        by.setdefault((r["recipe"], r["self_train"]), []).append(r)
    base = rows[0]["recipe"]
    pairs = [((base, st), (name, st)) for name, st in by if name != base and (base, st) in by]
    pairs += [((name, False), (name, True)) for name, st in by if st and (name, False) in by]
    out = []
    for a, b in pairs:
        c = {"what": f"{b[0]}{' +st' if b[1] else ''} vs {a[0]}{' +st' if a[1] else ''}"}
        for col in SCORES:
            c[col] = verdict([r[col] for r in by[a]], [r[col] for r in by[b]])
        out.append(c)
    return out


def cell(s: dict, col: str) -> str:
    return f"{s[col]:.4f} ({s[col + '_min']:.4f}-{s[col + '_max']:.4f})"


def gain(d: float, w: float, v: str) -> str:
    return f"{d:+.4f} (spread {w:.4f}): {v}"


def render(rows: list[dict], header: str) -> str:
    """The markdown report: the header, the score table, the comparisons."""
    lines = [header, "", "MAP@3, mean over seeds (min-max); a difference counts only beyond the seed spread.", "",
             "| recipe | self-training | seeds | single test | blend test | blend - single (test) | single shifted "
             "| blend shifted | blend - single (shifted) |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summarise(rows):
        lines.append(f"| {s['recipe']} | {'yes' if s['self_train'] else 'no'} | {s['seeds']} | "
                     f"{cell(s, 'single_test')} | {cell(s, 'blend_test')} | "
                     f"{gain(s['blend_gain_test'], s['blend_gain_test_spread'], s['blend_gain_test_verdict'])} | "
                     f"{cell(s, 'single_shifted')} | {cell(s, 'blend_shifted')} | "
                     f"{gain(s['blend_gain_shifted'], s['blend_gain_shifted_spread'], s['blend_gain_shifted_verdict'])} |")
    comps = comparisons(rows)
    if comps:
        lines += ["", "| comparison | single test | blend test | single shifted | blend shifted |", "|---|---|---|---|---|"]
        lines += [f"| {c['what']} | " + " | ".join(gain(*c[col]) for col in SCORES) + " |" for c in comps]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_report(out: Path, rows: list[dict], header: str, meta: dict) -> str:
    """report.md, scores.csv, summary.csv, results.json, each atomically; returns the markdown."""
    text = render(rows, header)
    summary = summarise(rows)
    write_text_atomic(out / SCORES_CSV, csv_text(rows, ROW_FIELDS))
    write_text_atomic(out / SUMMARY_CSV, csv_text(summary, list(summary[0])))
    write_json_atomic(out / RESULTS_JSON, {**meta, "rows": rows})
    write_text_atomic(out / REPORT_MD, text)
    return text


# main -----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME:OVERRIDES",
                    help="a recipe: a name and comma-separated train.py overrides (repeatable; the first is the baseline)")
    ap.add_argument("--recipes", default=None, help="comma-separated preset names (--list)")
    ap.add_argument("--arch", default="resnet18", help="the presets' timm model (arch=resnet50 arch.name=<arch>)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per recipe: seed=0..N-1 (default 3)")
    ap.add_argument("--folds", type=int, default=5, help="folds trained and blended: fold=0..F-1 of the 5-fold split")
    ap.add_argument("--epochs", type=int, default=None, help="trainer.max_epochs (default: the recipe's)")
    ap.add_argument("--retrain-epochs", type=int, default=None, help="retrain.max_epochs (default: the recipe's)")
    ap.add_argument("--self-train", action="store_true", help="also stage=self_train on the shifted folder")
    ap.add_argument("--jobs", type=int, default=1, help="training jobs at once (hydra/launcher=joblib when > 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    ap.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for every step, e.g. --set data.demo.n_train=300 (a smaller demo)")
    ap.add_argument("--root", default=None, help="the FSTAG_ROOT (default bench_runs/accuracy; --tiny: a temporary folder)")
    ap.add_argument("--out", default=None, help="the report folder (default <root>/report)")
    ap.add_argument("--list", action="store_true", help="list the preset recipes and exit")
    ap.add_argument("--tiny", action="store_true", help="a smoke test: tiny data, 1 epoch, 1 fold, 2 seeds")
    args = ap.parse_args(argv)
    args.train_extra, args.predict_extra = [], []
    if args.tiny:
        args.common = [*TINY_DATA, *args.common]
        args.train_extra, args.predict_extra = TINY_TRAIN, TINY_PREDICT
        for k, v in TINY_SETTINGS.items():
            setattr(args, k, v)
    if args.seeds < 1 or not 1 <= args.folds <= 5 or args.jobs < 1:
        raise SystemExit(f"--seeds {args.seeds}, --folds {args.folds}, --jobs {args.jobs}: need seeds >= 1, "
                         "1 <= folds <= 5 (the split's folds.n_splits) and jobs >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        for name, (ov, what) in RECIPES.items():
            print(f"{name:22s} {what}\n{'':22s} {' '.join(ov)}")
        return
    if args.tiny:
        print(TINY_NOTE, flush=True)
    recipes = recipes_of(args)
    with contextlib.ExitStack() as stack:
        if args.root is None:
            args.root = (stack.enter_context(tempfile.TemporaryDirectory(prefix="fstag-accuracy-tiny-")) if args.tiny
                         else str(REPO / "bench_runs" / "accuracy"))
        if args.tiny:
            check_compose(args)
        root = Path(args.root).resolve()
        run(args, recipes, root, Path(args.out).resolve() if args.out else root / "report", argv)


def project_env(root: Path, threads: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FSTAG_"))}
    env.update(FSTAG_ROOT=str(root), PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def scored_before(recipe: Recipe, args, seeds: list[int], out: Path) -> list[dict]:
    """The rows of ``recipe`` in the report folder's results.json when every cell was scored with the same
    settings (else none)."""
    path = out / RESULTS_JSON
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    kept = [r for r in rows if r["recipe"] == recipe.name and r["key"] == cell_key(recipe, args) and r["seed"] in seeds]
    return kept if len(kept) == len(cells(args, seeds)) else []


def prepare_data(args, root: Path, env: dict) -> None:
    """The demo data and features in ``root`` (preprocess.py makes what is missing)."""
    run_entry(["preprocess.py", "data=demo", *args.common], env, root, root / "preprocess.log")
    if not (root / "data" / "demo" / SHIFTED_DIR).is_dir():
        raise SystemExit(f"{root / 'data' / 'demo'} has no {SHIFTED_DIR}/ (made by an older generator); "
                         "delete the folder and run again")


def run(args, recipes: list[Recipe], root: Path, out: Path, argv) -> None:
    root.mkdir(parents=True, exist_ok=True)
    env = project_env(root, args.threads)
    seeds = list(range(args.seeds))
    done = {r.name: scored_before(r, args, seeds, out) for r in recipes}
    if not all(done.values()):
        prepare_data(args, root, env)
    rows: list[dict] = []
    for recipe in recipes:
        if done[recipe.name]:
            print(f"{recipe.name}: scored before with the same settings ({out / RESULTS_JSON})", flush=True)
        rows += done[recipe.name] or evaluate(recipe, args, seeds, root, env)
        print(render([r for r in rows if r["recipe"] == recipe.name], f"{recipe.name}:"), flush=True)
    import torch

    where = machine(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    command = "python bench/accuracy.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    header = (f"{'TINY RUN: ' if args.tiny else ''}{where}; {args.seeds} seed(s), {args.folds} fold(s), "
              f"epochs {args.epochs or 'the recipe’s'}, retrain_val epochs {args.retrain_epochs or 'the recipe’s'}"
              f"{', self-training on the shifted folder' if args.self_train else ''}\n\n`{command}`")
    meta = {"machine": where, "command": command, "seeds": seeds, "folds": args.folds, "epochs": args.epochs,
            "retrain_epochs": args.retrain_epochs, "self_train": args.self_train, "common": args.common,
            "recipes": [vars(r) for r in recipes]}
    print(write_report(out, rows, header, meta))
    print(f"report: {out / REPORT_MD}")


if __name__ == "__main__":
    main()
