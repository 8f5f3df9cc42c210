"""Blend members: turn member specs into opened, mutually compatible training run directories.

A member spec is one of

- a name ``<arch>/<aug>/fold_<k>[_r]`` (the ``default`` variant) or ``<arch>/<aug>/<variant>/fold_<k>[_r]``
  (a job trained with other overrides, e.g. ``cnn_small/none/optimizer.lr=0.05/fold_0``; quote it on the
  command line: ``'runs=["cnn_small/none/optimizer.lr=0.05/fold_0"]'``), looked up below ``<runs_dir>/<exp>``;
- a path to a run directory (absolute, or relative to the working directory);
- a selector (:mod:`fstag.runs.selectors`): a job-name pattern (``cnn_small/*/optimizer.lr=3e-3*/fold_*``),
  a sweep (``sweep:<name or parent run id>``), ``all``, each optionally ranked (``|best_per_fold:val_map3``);
  it stands for the complete jobs it picks, found locally or, with no local copy, in the tracking store;
- an MLflow run id (32 hex characters, or ``runs:/<id>``) of a run made by train.py: its tag
  ``fstag.runs.run_dir`` names the run directory. Where that directory is not on this machine, the run's
  artifacts (run.json, config.yaml, oof.npz, test.npz and, for predict.py, checkpoints/best.ckpt) are
  fetched from the tracking server into ``<runs_root>/.mlflow_cache/<run id>/``, laid out as a run
  directory, written atomically and reused by the next call. A blend of such members saves them as
  ``runs:/<id>`` (:attr:`Member.saved_spec`), so anyone with the server rebuilds it.

Every member is resolved and checked before any blending starts; all problems are reported together.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fstag.core.task import task_of
from fstag.data.folds import describe_split, same_split
from fstag.runs.identity import DEFAULT_VARIANT, data_digest
from fstag.runs.run_dir import MLFLOW_RUN_DIR_TAG as RUN_DIR_TAG
from fstag.runs.run_dir import BEST_CKPT, CHECKPOINT_DIR, CONFIG_YAML, OOF_NPZ, RUN_JSON, TEST_NPZ, RunDir, RunDirError

log = logging.getLogger(__name__)
_MLFLOW_RUN_ID = re.compile(r"(?:runs:/)?([0-9a-fA-F]{32})/?")
MLFLOW_CACHE = ".mlflow_cache"  # below runs_root: run directories fetched from the tracking server
FETCHED = (CONFIG_YAML, OOF_NPZ, TEST_NPZ, RUN_JSON)  # run.json last: its presence marks a complete copy
CKPT_ARTIFACT = f"{CHECKPOINT_DIR}/{BEST_CKPT}"  # logged by train.py at the end of each job
_SHORT_NAME = re.compile(r"[^/]+/[^/]+/fold_\d+(_r|_st)?")  # <arch>/<aug>/fold_<k>[_r|_st]: the default variant


class MemberError(ValueError):
    """A blend member cannot be found or does not fit with the others; the message says which and why."""


@dataclass(frozen=True)
class Member:
    """One resolved blend member: the spec it came from, its run directory and a short unique key."""

    spec: str
    run: RunDir
    key: str
    selector: str | None = None  # the selector that picked it (None: named as such)

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def saved_spec(self) -> str:
        """How a saved config names this member: ``runs:/<id>`` when given as an MLflow run, else its path."""
        run_id = mlflow_run_id(self.spec)
        return f"runs:/{run_id}" if run_id else str(self.path.resolve())


def mlflow_run_id(spec: str) -> str | None:
    """The run id of a member spec ``<32 hex>`` or ``runs:/<32 hex>``; None for other specs."""
    m = _MLFLOW_RUN_ID.fullmatch(str(spec).strip())
    return m.group(1) if m else None


def _download(client, run_id: str, artifact: str, dest: Path, tracking_uri: str) -> None:
    """The run's file artifact ``artifact`` (``a/b.ext``) to ``dest/a/b.ext``."""
    try:
        got = Path(client.download_artifacts(run_id, artifact, str(dest)))  # a file lands as dest/<basename>
    except Exception as exc:  # noqa: BLE001  (each artifact repository raises its own errors)
        raise MemberError(f"MLflow run {run_id} (tracking store {tracking_uri}): cannot fetch artifact "
                          f"{artifact!r} ({type(exc).__name__}: {exc}); train.py logs it when a job finishes") from None
    if not got.is_file():
        raise MemberError(f"MLflow run {run_id} (tracking store {tracking_uri}) has no artifact {artifact!r}")
    (dest / artifact).parent.mkdir(parents=True, exist_ok=True)
    if got != dest / artifact:
        os.replace(got, dest / artifact)


def _fetch(client, run_id: str, tracking_uri: str, cache: Path, checkpoint: bool) -> Path:
    """The run's artifacts as a run directory ``cache/<run_id>`` (fetched once; each file appears whole)."""
    target = cache / run_id
    cache.mkdir(parents=True, exist_ok=True)
    if not (target / RUN_JSON).is_file():
        log.info("fetching MLflow run %s from %s into %s", run_id, tracking_uri, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}-", dir=cache))
        try:
            for name in FETCHED:
                _download(client, run_id, name, tmp, tracking_uri)
            try:
                os.rename(tmp, target)
            except OSError:  # another process put it there first
                if not (target / RUN_JSON).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    ckpt = target / CKPT_ARTIFACT
    if checkpoint and not ckpt.is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}-ckpt-", dir=cache))
        try:
            _download(client, run_id, CKPT_ARTIFACT, tmp, tracking_uri)
            ckpt.parent.mkdir(exist_ok=True)
            os.replace(tmp / CKPT_ARTIFACT, ckpt)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _from_mlflow(run_id: str, tracking_uri: str, cache: Path, checkpoint: bool = False) -> Path:
    """The run directory of an MLflow run: where its tag says when it is here, else fetched into ``cache``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise MemberError(f"MLflow run {run_id} not found in tracking store {tracking_uri}: {exc}") from None
    run_dir = run.data.tags.get(RUN_DIR_TAG)
    if not run_dir:
        raise MemberError(
            f"MLflow run {run_id} (tracking store {tracking_uri}) has no tag {RUN_DIR_TAG!r}; "
            "only runs made by train.py name their run directory"
        )
    local = Path(run_dir)
    if (local / RUN_JSON).is_file() and (not checkpoint or (local / CKPT_ARTIFACT).is_file()):
        return local
    return _fetch(client, run_id, tracking_uri, cache, checkpoint)


def _candidates(spec: str, runs_root: Path, data_root: str | None = None, data=None) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_absolute():
        return [path]
    if _SHORT_NAME.fullmatch(spec):
        arch, aug, job = spec.split("/")
        found = [runs_root / arch / aug / DEFAULT_VARIANT / job]
        # a job whose only override is its data.root (data@<train.csv digest>): this data's, else the only one
        digest = data_digest(data_root, data)
        if digest:
            found.append(runs_root / arch / aug / f"data@{digest[:8]}" / job)
        others = sorted((runs_root / arch / aug).glob(f"data@*/{job}"))
        if len(others) == 1:
            found.append(others[0])
        # then the layout before variants existed (<arch>/<aug>/fold_<k>)
        return [*found, runs_root / path, path.resolve()]
    return [runs_root / path, path.resolve()]


def resolve_member(spec: str, runs_root: str | Path, tracking_uri: str, data_root: str | None = None,
                   checkpoint: bool = False, data=None) -> RunDir:
    """Open the run directory a member spec names; raise :class:`MemberError` naming what was looked for.

    ``checkpoint``: a run fetched from the tracking server also needs its best checkpoint (predict.py).
    """
    spec = str(spec).strip()
    run_id = mlflow_run_id(spec)
    if run_id:
        path = _from_mlflow(run_id, tracking_uri, Path(runs_root) / MLFLOW_CACHE, checkpoint)
        try:
            return RunDir.open(path)
        except RunDirError as exc:
            raise MemberError(f"MLflow run {run_id} (tracking store {tracking_uri}) names {exc}") from None
    candidates = _candidates(spec, Path(runs_root), data_root, data)
    for path in candidates:
        if (path / "run.json").is_file():
            return RunDir.open(path)
    raise MemberError(f"member {spec!r}: no run directory (with run.json) at " + " or ".join(map(str, candidates))
                      + _siblings(spec, Path(runs_root)))


def _siblings(spec: str, runs_root: Path) -> str:
    """For a member named ``<arch>/<aug>/[<variant>/]fold_<k>[_r]``: the variants of that job that exist."""
    from fstag.runs.catalog import describe_siblings

    parts = spec.strip("/").split("/")
    if len(parts) not in (3, 4) or not re.fullmatch(r"fold_\d+(_r|_st)?", parts[-1]) or Path(spec).is_absolute():
        return ""
    wanted = [] if len(parts) == 3 or parts[2] == DEFAULT_VARIANT else parts[2].split(",")
    return describe_siblings(runs_root, parts[0], parts[1], parts[-1], wanted,
                             lambda items, variant: f"'{'/'.join(parts[:2])}/{variant}/{parts[-1]}'")


def _key(run: RunDir, runs_root: Path) -> str:
    """The member's path below ``runs_root`` (``default/`` left out, as in its short name)."""
    try:
        parts = run.path.resolve().relative_to(runs_root.resolve()).parts
    except ValueError:
        return run.path.resolve().as_posix().lstrip("/")
    if parts[:1] == (MLFLOW_CACHE,) and {"arch", "aug", "variant", "name"} <= set(run.info):  # fetched: as if local
        parts = (str(run.info["arch"]), str(run.info["aug"]), str(run.info["variant"]), run.name)
    if len(parts) == 4 and parts[2] == DEFAULT_VARIANT:
        parts = parts[:2] + parts[3:]
    return "/".join(parts)


def _problems(members: list[Member]) -> list[str]:
    problems = []
    for m in members:
        absent = [k for k in ("labels", "feature_key") if k not in m.run.info]
        if absent:
            problems.append(f"member {m.key}: run.json in {m.path} lacks {absent}")
    if problems:
        return problems
    first = members[0]
    for m in members:
        missing = [f for f in (TEST_NPZ, OOF_NPZ) if not (m.path / f).is_file()]
        if missing:
            problems.append(f"member {m.key}: {', '.join(missing)} not found in {m.path}")
        if not m.run.complete:
            problems.append(f"member {m.key}: run is not complete (run.json 'complete' is false) in {m.path}")
        if m is first:
            continue
        task, first_task = task_of(m.run.info).name, task_of(first.run.info).name
        if task != first_task:
            problems.append(f"member {m.key} is a {task} run but member {first.key} a {first_task} one: runs of "
                            "different tasks cannot be combined (softmax and sigmoid probabilities mean different things)")
        if m.run.labels != first.run.labels:
            diff = sorted(set(m.run.labels) ^ set(first.run.labels))
            problems.append(
                f"member {m.key} has a different label set from member {first.key} "
                f"({len(m.run.labels)} vs {len(first.run.labels)} labels; differing or reordered: {diff[:5]})"
            )
        if m.run.feature_key != first.run.feature_key:
            problems.append(
                f"member {m.key} has feature_key {m.run.feature_key!r} but member {first.key} "
                f"has {first.run.feature_key!r}"
            )
        split_ref = next((x for x in members if x.run.fold_split), first)  # runs before the record have none
        if m is not split_ref and not same_split(m.run.fold_split, split_ref.run.fold_split):
            problems.append(
                f"member {m.key} was trained on {describe_split(m.run.fold_split)} but member {split_ref.key} on "
                f"{describe_split(split_ref.run.fold_split)}: runs of different fold splits cannot be blended "
                "(one's validation rows are the other's training rows)"
            )
    return problems


def resolve_members(specs: list[str], runs_root: str | Path, tracking_uri: str, data_root: str | None = None,
                    checkpoints: bool = False, experiment: str | None = None, data=None) -> list[Member]:
    """Resolve every spec (selectors expanded first), then check they are complete and share their task,
    labels, feature_key and fold split.

    ``checkpoints``: members fetched from the tracking server come with their best checkpoint (predict.py).
    ``experiment``: the MLflow experiment a selector looks in when ``runs_root`` holds no job. ``data``: the
    ``data`` config, whose layout reads the label files of ``data_root`` (a job trained with ``data.root=`` lives
    in a ``data@<digest>`` variant).
    Raises one :class:`MemberError` listing every problem found.
    """
    from fstag.runs.catalog import load_catalog
    from fstag.runs.selectors import SelectorError, expand

    if not specs:
        raise MemberError("blend.members is empty: name at least one training run")
    runs_root = Path(runs_root)
    try:
        expanded = expand([str(s) for s in specs], lambda: load_catalog(runs_root, tracking_uri, experiment))
    except SelectorError as exc:
        raise MemberError(str(exc)) from None
    members, problems = [], []
    for spec, selector in expanded:
        try:
            run = resolve_member(spec, runs_root, tracking_uri, data_root, checkpoint=checkpoints, data=data)
        except (MemberError, RunDirError) as exc:
            problems.append(str(exc))
            continue
        members.append(Member(spec=spec, run=run, key=_key(run, runs_root), selector=selector))
    seen: dict[Path, str] = {}
    for m in members:
        where = m.path.resolve()
        if where in seen:
            problems.append(f"members {seen[where]!r} and {m.spec!r} are the same run directory {where}")
        seen[where] = m.spec
    if members:
        problems.extend(_problems(members))
    if problems:
        for selector in dict.fromkeys(m.selector for m in members if m.selector):
            picked = [m.key for m in members if m.selector == selector]
            problems.append(f"selector {selector!r} matched {len(picked)} job(s): {', '.join(picked)}")
        raise MemberError("invalid blend members:\n  - " + "\n  - ".join(problems))
    return members
