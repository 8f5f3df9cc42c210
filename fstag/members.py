"""Blend members: turn member specs into opened, mutually compatible training run directories.

A member spec is one of

- a name ``<arch>/<aug>/fold_<k>[_r]`` (the ``default`` variant) or ``<arch>/<aug>/<variant>/fold_<k>[_r]``
  (a job trained with other overrides, e.g. ``cnn_small/none/optimizer.lr=0.05/fold_0``; quote it on the
  command line: ``'runs=["cnn_small/none/optimizer.lr=0.05/fold_0"]'``), looked up below ``<runs_dir>/<exp>``;
- a path to a run directory (absolute, or relative to the working directory);
- an MLflow run id (32 hex characters) of a run made by train.py: its tag ``fstag.run_dir`` names the
  run directory.

Every member is resolved and checked before any blending starts; all problems are reported together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fstag.job_identity import DEFAULT_VARIANT, data_digest
from fstag.run_dir import MLFLOW_RUN_DIR_TAG as RUN_DIR_TAG
from fstag.run_dir import OOF_NPZ, TEST_NPZ, RunDir, RunDirError

_MLFLOW_RUN_ID = re.compile(r"[0-9a-fA-F]{32}")
_SHORT_NAME = re.compile(r"[^/]+/[^/]+/fold_\d+(_r)?")  # <arch>/<aug>/fold_<k>[_r]: the default variant


class MemberError(ValueError):
    """A blend member cannot be found or does not fit with the others; the message says which and why."""


@dataclass(frozen=True)
class Member:
    """One resolved blend member: the spec it came from, its run directory and a short unique key."""

    spec: str
    run: RunDir
    key: str

    @property
    def path(self) -> Path:
        return self.run.path


def _from_mlflow(run_id: str, tracking_uri: str) -> Path:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except MlflowException as exc:
        raise MemberError(f"MLflow run {run_id} not found in tracking store {tracking_uri}: {exc}") from None
    run_dir = run.data.tags.get(RUN_DIR_TAG)
    if not run_dir:
        raise MemberError(
            f"MLflow run {run_id} (tracking store {tracking_uri}) has no tag {RUN_DIR_TAG!r}; "
            "only runs made by train.py name their run directory"
        )
    return Path(run_dir)


def _candidates(spec: str, runs_root: Path, data_root: str | None = None) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_absolute():
        return [path]
    if _SHORT_NAME.fullmatch(spec):
        arch, aug, job = spec.split("/")
        found = [runs_root / arch / aug / DEFAULT_VARIANT / job]
        # a job whose only override is its data.root (data@<train.csv digest>): this data's, else the only one
        digest = data_digest(data_root)
        if digest:
            found.append(runs_root / arch / aug / f"data@{digest[:8]}" / job)
        others = sorted((runs_root / arch / aug).glob(f"data@*/{job}"))
        if len(others) == 1:
            found.append(others[0])
        # then the layout before variants existed (<arch>/<aug>/fold_<k>)
        return [*found, runs_root / path, path.resolve()]
    return [runs_root / path, path.resolve()]


def resolve_member(spec: str, runs_root: str | Path, tracking_uri: str, data_root: str | None = None) -> RunDir:
    """Open the run directory a member spec names; raise :class:`MemberError` naming what was looked for."""
    spec = str(spec).strip()
    if _MLFLOW_RUN_ID.fullmatch(spec):
        path = _from_mlflow(spec, tracking_uri)
        try:
            return RunDir.open(path)
        except RunDirError as exc:
            raise MemberError(f"MLflow run {spec} (tracking store {tracking_uri}) names {exc}") from None
    candidates = _candidates(spec, Path(runs_root), data_root)
    for path in candidates:
        if (path / "run.json").is_file():
            return RunDir.open(path)
    raise MemberError(f"member {spec!r}: no run directory (with run.json) at " + " or ".join(map(str, candidates)))


def _key(run: RunDir, runs_root: Path) -> str:
    """The member's path below ``runs_root`` (``default/`` left out, as in its short name)."""
    try:
        parts = run.path.resolve().relative_to(runs_root.resolve()).parts
    except ValueError:
        return run.path.resolve().as_posix().lstrip("/")
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
    return problems


def resolve_members(specs: list[str], runs_root: str | Path, tracking_uri: str, data_root: str | None = None) -> list[Member]:
    """Resolve every spec, then check they are complete and share labels and feature_key.

    Raises one :class:`MemberError` listing every problem found.
    """
    if not specs:
        raise MemberError("blend.members is empty: name at least one training run")
    runs_root = Path(runs_root)
    members, problems = [], []
    for spec in specs:
        try:
            run = resolve_member(spec, runs_root, tracking_uri, data_root)
        except (MemberError, RunDirError) as exc:
            problems.append(str(exc))
            continue
        members.append(Member(spec=str(spec), run=run, key=_key(run, runs_root)))
    seen: dict[Path, str] = {}
    for m in members:
        where = m.path.resolve()
        if where in seen:
            problems.append(f"members {seen[where]!r} and {m.spec!r} are the same run directory {where}")
        seen[where] = m.spec
    if members:
        problems.extend(_problems(members))
    if problems:
        raise MemberError("invalid blend members:\n  - " + "\n  - ".join(problems))
    return members
