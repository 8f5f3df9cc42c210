"""``python -m fstag.runs sync``: send the MLflow journals that jobs and blends left behind while their tracking
store was away (:mod:`fstag.runs.journal`), into the runs they name.

    python -m fstag.runs sync                      # every journal of this project (<root>/.mlflow_pending/)
    python -m fstag.runs sync multirun/demo        # the journals below a folder (a job, a blend, a sweep)
    python -m fstag.runs sync --list               # what is left to send, without sending

Each journal goes to the store it was written for (its header's tracking URI), into its run (created now when the
job only had a placeholder id, which is then replaced in ``mlflow_run_id``, ``run.json`` and ``blend.json``);
only entries the store has not acknowledged are sent, so a second sync sends nothing. A journal a running job
still writes is skipped. Exit status 0 when nothing is left to send, 1 otherwise (the store still away: rerun
later). The config is composed from conf/runs.yaml (``paths.root_dir=...`` or ``FSTAG_ROOT`` pick the project).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fstag.runs.journal import JOURNAL_GLOB, pending_dir, pending_journals, read_journal, sync_journal


def find_journals(paths: list[str]) -> list[Path]:
    """The journals named by ``paths``: journal files, or folders searched for them."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob(JOURNAL_GLOB)))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder (give a job or blend folder, or a journal file)")
    return list(dict.fromkeys(x.resolve() for x in found))


def describe(path: Path) -> str:
    c = read_journal(path)
    left = len([e for e in c.entries if e["seq"] not in c.acked])
    run = c.run_id or f"{c.header.get('local_id', '?')} (not created yet)"
    return f"{path.parent}: {left} entries to send to run {run} in {c.header.get('tracking_uri', '?')}"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m fstag.runs sync", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("args", nargs="*", help="job or blend folders / journal files to sync (default: every journal of "
                    "the project), and Hydra overrides of conf/runs.yaml (key=value)")
    ap.add_argument("--list", action="store_true", help="list the journals left to send, without sending")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    # a path (which may hold '=': a job's variant folder) or an override
    targets = [x for x in a.args if Path(x).exists() or "=" not in x]
    overrides = [x for x in a.args if x not in targets]
    if targets:
        try:
            journals = find_journals(targets)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        root = None
        where = ", ".join(targets)
    else:
        from fstag.runs.listing import compose

        cfg = compose(overrides)
        root = pending_dir(str(cfg.paths.root_dir))
        journals = [p for p, _ in pending_journals(root)]
        where = str(cfg.paths.root_dir)
    if not journals:
        print(f"nothing to sync: no MLflow journal left in {where}")
        return 0
    if a.list:
        for p in journals:
            print(describe(p))
        return 0
    left = 0
    for p in journals:
        if root is None:  # given by path: its pointer lives in the project root it names, if any
            root_guess = _root_of(p)
        else:
            root_guess = root
        res = sync_journal(p, root_guess)
        if res.status == "synced":
            print(f"synced {p.parent}: {res.sent} entries sent to MLflow run {res.run_id}")
        elif res.status == "empty":
            print(f"skipped {p}: {res.message}")
        else:
            left += 1
            what = {"busy": "in use", "unreachable": "store away", "partial": "not finished"}[res.status]
            print(f"not synced ({what}) {p.parent}: {res.message}; {res.sent} entries sent, {res.left} left "
                  f"(rerun python -m fstag.runs sync)", file=sys.stderr)
    return 1 if left else 0


def _root_of(journal: Path) -> Path | None:
    """The pending index of the project a journal lives in (the nearest folder above it that has one)."""
    from fstag.runs.journal import PENDING_DIR

    for parent in journal.resolve().parents:
        if (parent / PENDING_DIR).is_dir():
            return parent / PENDING_DIR
    return None
