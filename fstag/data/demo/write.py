"""Writing the data set: every clip rendered (in spawned processes when more than one worker), the CSV
files, the build folder beside ``root`` moved into place at the end, and dead builds cleaned up."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import soundfile as sf
from tqdm import tqdm

from fstag.data.demo.names import (
    _OUTPUTS,
    _SPLIT_CODES,
    _SPLIT_DIRS,
    _TMP_MARK,
    SHIFTED_LABELS_CSV,
    SHIFTED_SPLIT,
    TEST_LABELS_CSV,
    TRUTH_CSV,
)
from fstag.data.demo.plan import plan_dataset
from fstag.data.demo.render import render_clip
from fstag.data.demo.settings import DemoSettings
from fstag.data.layouts.kaggle2018 import SAMPLE_SUBMISSION_CSV, TRAIN_CSV


def _render_job(job: tuple[dict, DemoSettings, str]) -> dict:
    """Pool worker: render one planned clip and write it as 16-bit PCM; returns its rendering details."""
    row, settings, out_dir = job
    seed = (settings.seed, _SPLIT_CODES[row["split"]], row["index"])
    audio, info = render_clip(row["true_label"], seed, settings, shifted=row["split"] == SHIFTED_SPLIT)
    path = Path(out_dir) / _SPLIT_DIRS[row["split"]] / row["fname"]
    sf.write(path, audio, settings.sample_rate, subtype="PCM_16", format="WAV")
    return {"fname": row["fname"], **info}


def _map_clips(render: Callable[[tuple], dict], jobs: list[tuple], workers: int | None, progress: bool) -> list[dict]:
    """``render`` (a module-level function) applied to every job, in order, in a pool of spawned processes
    when more than one worker (None: one per available core); a progress bar on stderr."""
    workers = workers or len(os.sched_getaffinity(0))
    bar = dict(total=len(jobs), desc="demo clips", unit="clip", disable=None if progress else True, file=sys.stderr)
    if workers <= 1 or len(jobs) <= 1:
        return [render(job) for job in tqdm(jobs, **bar)]
    # spawn: safe when the caller has started threads (torch); each clip is seeded on its own.
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        return list(tqdm(pool.imap(render, jobs, chunksize=4), **bar))


def _render_all(plan: pd.DataFrame, settings: DemoSettings, out_dir: Path, progress: bool) -> pd.DataFrame:
    """Render every planned clip into ``out_dir``, in a process pool when more than one worker."""
    jobs = [(row, settings, str(out_dir)) for row in plan.to_dict("records")]
    details = pd.DataFrame(_map_clips(_render_job, jobs, settings.workers, progress))
    for column in ("velocity", "mic_highpass_hz", "mic_lowpass_hz"):  # shifted clips only: no "121.0"
        if column in details:
            details[column] = details[column].astype("Int64")
    return details


def _write_tables(out_dir: Path, plan: pd.DataFrame, details: pd.DataFrame, labels: tuple[str, ...]) -> None:
    """The CSV files: train.csv, sample_submission.csv, test_post_competition.csv, test_shifted.csv
    (when there is a shifted split) and the hidden truth."""
    train = plan[plan.split == "train"].sort_values("fname")
    test = plan[plan.split == "test"].sort_values("fname")
    train[["fname", "label", "manually_verified"]].to_csv(out_dir / TRAIN_CSV, index=False)
    placeholder = " ".join(sorted(labels)[:3])
    test.assign(label=placeholder)[["fname", "label"]].to_csv(out_dir / SAMPLE_SUBMISSION_CSV, index=False)
    test[["fname", "label", "usage"]].to_csv(out_dir / TEST_LABELS_CSV, index=False)
    shifted = plan[plan.split == SHIFTED_SPLIT].sort_values("fname")
    if len(shifted):
        shifted[["fname", "label"]].to_csv(out_dir / SHIFTED_LABELS_CSV, index=False)
    truth = plan.drop(columns="index").merge(details, on="fname").sort_values(["split", "fname"])
    truth.to_csv(out_dir / TRUTH_CSV, index=False)


def _tmp_dir_owner(path: Path) -> int | None:
    """The process id encoded in a build folder's name (``.<root>.tmp-<pid>-<random>``)."""
    try:
        return int(path.name.split(_TMP_MARK, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def _remove_stale_builds(root: Path) -> None:
    """Delete build folders beside ``root`` left by generator processes that no longer run."""
    for path in root.parent.glob(f".{root.name}{_TMP_MARK}*"):
        pid = _tmp_dir_owner(path)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, owned by someone else


def _refuse_clashes(root: Path, outputs: Sequence[str] = _OUTPUTS) -> None:
    """Raise if ``root`` already holds any of the generator's ``outputs`` (nothing is ever overwritten)."""
    clashes = [name for name in outputs if (root / name).exists()]
    if clashes:
        raise FileExistsError(f"{root}: already holds {clashes}; remove them to regenerate the demo data")


def _move_into_place(build: Path, root: Path, outputs: Sequence[str] = _OUTPUTS) -> None:
    """Move the finished build to ``root``: a single rename when ``root`` is missing or empty, else
    entry by entry in the order of ``outputs``, whose last name (train.csv) marks a complete data set, so the
    data set only looks complete once it is."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        os.replace(build, root)
        return
    _refuse_clashes(root, outputs)
    for name in outputs:  # train.csv is the last name
        if (build / name).exists():  # the shifted split's files only when it has clips
            os.replace(build / name, root / name)
    build.rmdir()


def generate_demo_dataset(root: str | os.PathLike, *, progress: bool = True, **settings) -> Path:
    """Generate the demo data set into ``root`` (see the module docstring); returns ``root``.

    ``settings`` are :class:`DemoSettings` fields. Deterministic for a seed. The files are built in a
    temporary folder beside ``root`` and moved in at the end; on any error that folder is removed.
    """
    cfg = DemoSettings.from_mapping(settings)
    root = Path(root).absolute()
    _refuse_clashes(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root)
    build = Path(tempfile.mkdtemp(prefix=f".{root.name}{_TMP_MARK}{os.getpid()}-", dir=root.parent))
    build.chmod(0o755)  # mkdtemp makes it private; the data set is not
    try:
        plan = plan_dataset(cfg)
        for split in plan["split"].unique():
            (build / _SPLIT_DIRS[split]).mkdir()
        if progress:
            print(f"Generating the demo data set ({cfg.n_train} train + {cfg.n_test} test + {cfg.n_shifted} "
                  f"shifted test clips, {len(cfg.labels)} labels) into {root}", file=sys.stderr)
        details = _render_all(plan, cfg, build, progress)
        _write_tables(build, plan, details, cfg.labels)
        _move_into_place(build, root)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return root


def ensure_demo_dataset(root: str | os.PathLike, **settings) -> Path:
    """Generate the demo data set into ``root`` unless ``root/train.csv`` exists; returns ``root``.

    ``settings``: the keys of the ``demo:`` block of conf/data/demo.yaml (all optional).
    """
    root = Path(root)
    if not (root / TRAIN_CSV).is_file():
        generate_demo_dataset(root, **settings)
    return root
