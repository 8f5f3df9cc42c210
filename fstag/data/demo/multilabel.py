"""Writing the multi-label demo in the FSDKaggle2019 layout: every clip mixed (in spawned processes when more
than one worker), the CSV files, the build folder beside ``root`` moved into place at the end
(:func:`generate_multilabel_demo`, :func:`ensure_multilabel_demo`).

Output (``root``)::

    train_curated/<8 hex>.wav  train_noisy/<8 hex>.wav  test/<8 hex>.wav   44.1 kHz, 16-bit PCM, mono
    train_curated.csv          fname,labels          (labels comma-joined, quoted by the CSV writer; all right)
    train_noisy.csv            fname,labels          (noisy_wrong_share of the rows: a label dropped, added or swapped)
    sample_submission.csv      fname,<label>,...     (the vocabulary, sorted; a row of zeros per test clip)
    test_post_competition.csv  fname,labels,usage    (Public / Private / Ignored; for local scoring)
    .demo_truth.csv            every clip's true labels, sources, arrangement, corruption and rendering
                               details (never read by the pipeline)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import soundfile as sf

from fstag.data.demo.mix import render_mixture
from fstag.data.demo.multilabel_plan import SOURCE_SEPARATOR, plan_multilabel
from fstag.data.demo.multilabel_settings import MultilabelDemoSettings
from fstag.data.demo.names import (
    _TMP_MARK,
    ML_CURATED,
    ML_CURATED_CSV,
    ML_NOISY,
    ML_NOISY_CSV,
    ML_OUTPUTS,
    ML_SAMPLE_SUBMISSION_CSV,
    ML_SPLIT_CODES,
    ML_SPLIT_DIRS,
    ML_TEST,
    ML_TEST_LABELS_CSV,
    TRUTH_CSV,
)
from fstag.data.demo.write import _map_clips, _move_into_place, _refuse_clashes, _remove_stale_builds


def _mix_job(job: tuple[dict, MultilabelDemoSettings, str]) -> dict:
    """Pool worker: mix one planned clip and write it as 16-bit PCM; returns its rendering details."""
    row, cfg, out_dir = job
    seed = (cfg.seed, ML_SPLIT_CODES[row["split"]], row["index"])
    audio, info = render_mixture(row["sources"].split(SOURCE_SEPARATOR), seed, cfg)
    sf.write(Path(out_dir) / ML_SPLIT_DIRS[row["split"]] / row["fname"], audio, cfg.sample_rate,
             subtype="PCM_16", format="WAV")
    return {"fname": row["fname"], **info}


def _write_tables(out_dir: Path, plan: pd.DataFrame, details: pd.DataFrame, labels: tuple[str, ...]) -> None:
    """train_curated.csv, train_noisy.csv, sample_submission.csv, test_post_competition.csv and the hidden
    truth, each sorted by fname (pandas quotes a ``labels`` cell that holds a comma)."""
    rows = {s: plan[plan.split == s].sort_values("fname") for s in (ML_CURATED, ML_NOISY, ML_TEST)}
    rows[ML_CURATED][["fname", "labels"]].to_csv(out_dir / ML_CURATED_CSV, index=False)
    if len(rows[ML_NOISY]):  # n_noisy=0: no noisy part at all (the layout's train_noisy.csv is optional)
        rows[ML_NOISY][["fname", "labels"]].to_csv(out_dir / ML_NOISY_CSV, index=False)
    test = rows[ML_TEST]
    vocabulary = sorted(labels)
    template = pd.DataFrame(0, index=range(len(test)), columns=vocabulary)
    template.insert(0, "fname", test["fname"].to_numpy())
    template.to_csv(out_dir / ML_SAMPLE_SUBMISSION_CSV, index=False)
    test[["fname", "labels", "usage"]].to_csv(out_dir / ML_TEST_LABELS_CSV, index=False)
    truth = plan.drop(columns="index").merge(details, on="fname").sort_values(["split", "fname"])
    truth.to_csv(out_dir / TRUTH_CSV, index=False)


def generate_multilabel_demo(root: str | os.PathLike, *, progress: bool = True, **settings) -> Path:
    """Generate the multi-label demo data set into ``root`` (see the module docstring); returns ``root``.

    ``settings`` are :class:`~fstag.data.demo.multilabel_settings.MultilabelDemoSettings` fields.
    Deterministic for a seed, whatever the number of workers. The files are built in a temporary folder
    beside ``root`` and moved in at the end (train_curated.csv last); on any error that folder is removed,
    and nothing in ``root`` is ever overwritten.
    """
    cfg = MultilabelDemoSettings.from_mapping(settings)
    root = Path(root).absolute()
    _refuse_clashes(root, ML_OUTPUTS)
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    build = Path(tempfile.mkdtemp(prefix=f".{root.name}{_TMP_MARK}{os.getpid()}-", dir=root.parent))
    build.chmod(0o755)  # mkdtemp makes it private; the data set is not
    try:
        plan = plan_multilabel(cfg)
        for split in plan["split"].unique():
            (build / ML_SPLIT_DIRS[split]).mkdir()
        if progress:
            print(f"Generating the multi-label demo data set ({cfg.n_curated} curated + {cfg.n_noisy} noisy + "
                  f"{cfg.n_test} test clips of 1-{cfg.max_sources} sources, {len(cfg.labels)} labels) into {root}",
                  file=sys.stderr)
        jobs = [(row, cfg, str(build)) for row in plan.to_dict("records")]
        details = pd.DataFrame(_map_clips(_mix_job, jobs, cfg.workers, progress))
        _write_tables(build, plan, details, cfg.labels)
        _move_into_place(build, root, ML_OUTPUTS)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return root


def ensure_multilabel_demo(root: str | os.PathLike, **settings) -> Path:
    """Generate the multi-label demo into ``root`` unless ``root/train_curated.csv`` exists; returns ``root``.

    ``settings``: the keys of the ``demo:`` block of conf/data/demo_multilabel.yaml (all optional).
    """
    root = Path(root)
    if not (root / ML_CURATED_CSV).is_file():
        generate_multilabel_demo(root, **settings)
    return root
