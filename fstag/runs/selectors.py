"""Member selectors: many jobs by one word, for blend.py (``blend.members``), predict.py (``runs``) and
``python -m fstag.runs``.

A selector is ``<base>`` or ``<base>|<ranking>``:

- ``<base>``
    - a job-name pattern, ``*`` and ``?`` matching within one ``/``-part:
      ``cnn_small/*/optimizer.lr=3e-3*/fold_*`` (``<arch>/<aug>/<variant>/<job>``); a 3-part pattern
      ``cnn_small/*/fold_*`` matches the default variant only, as the short names do;
    - ``sweep:<sweep>``: every finished job of one launch of ``train.py -m``, named by its ``sweep_name``,
      its MLflow parent run's name (``sweep/<exp>/<sweep_name>``) or id (or the id's first 8+ characters);
      ``sweep:<sweep>:<pattern>`` keeps those whose name matches a pattern, e.g. ``sweep:lr:*_r`` for the
      retrain_val jobs (a pattern with no ``/`` matches the job part ``fold_<k>[_r|_st]``);
    - ``all``: every finished job of the experiment.
- ``<ranking>``, by a metric of the runs listing (``val_map3``, ``val_acc1``, ``oof_map3``; multi-label runs:
  ``val_lwlrap``, ``val_map``, ``oof_lwlrap``, ``oof_map``; higher is better; a retrain_val job is ranked by
  its train parent's ``val_*`` score, since it trained on its own validation fold):
    - ``best:<metric>`` / ``top<k>:<metric>``: the best / k best jobs of each family (arch/aug/variant);
    - ``best_per_fold:<metric>``: for each arch/aug and job (``fold_<k>``, ``fold_<k>_r``), the best variant;
    - ``best_variant:<metric>``: for each arch/aug, every job of the variant with the best mean score.

Only complete jobs are selected. A selector that matches nothing is an error naming what it did match (or
which sweeps and jobs exist); the members it gives are checked like any others (labels, features, fold split).
On the command line, quote a selector with ``=``, ``,`` or ``|``: ``'blend.members=sweep:lr|best_per_fold:val_map3'``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Callable

from fstag.runs.catalog import Catalog, JobRecord
from fstag.runs.identity import DEFAULT_VARIANT

_RANKING = re.compile(r"(best|top(\d+)|best_per_fold|best_variant):(\w+)")


class SelectorError(ValueError):
    """A selector is malformed or matches nothing; the message says what exists."""


def is_selector(spec: str) -> bool:
    """Whether a member spec is a selector rather than a name, a path or an MLflow run id."""
    s = str(spec).strip()
    return s == "all" or s.startswith(("sweep:", "all|")) or "*" in s or "?" in s or "|" in s


def _part_regex(part: str) -> str:
    return "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)


def matches(pattern: str, rec: JobRecord) -> bool:
    """Whether a job-name pattern matches a job (see the module docstring for 1-, 3- and 4-part patterns)."""
    parts = pattern.strip("/").split("/")
    if len(parts) == 1:
        target = rec.job
    elif len(parts) == 3:
        if rec.variant != DEFAULT_VARIANT:
            return False
        target = f"{rec.arch}/{rec.aug}/{rec.job}"
    elif len(parts) == 4:
        target = rec.name
    else:
        raise SelectorError(f"pattern {pattern!r}: expected <arch>/<aug>/<variant>/<job>, <arch>/<aug>/<job> or <job>")
    return re.fullmatch("/".join(_part_regex(p) for p in parts), target) is not None


def _listing(recs: list[JobRecord], limit: int = 8) -> str:
    names = [f"{r.key}{'' if r.complete else ' (not complete)'}" for r in recs[:limit]]
    more = f" and {len(recs) - limit} more" if len(recs) > limit else ""
    return ", ".join(names) + more if names else "no job"


def _base(text: str, catalog: Catalog) -> list[JobRecord]:
    jobs = catalog.jobs
    if text == "all":
        found = jobs
    elif text.startswith("sweep:"):
        name, _, pattern = text[len("sweep:"):].partition(":")
        ids = set(catalog.sweep_ids(name))
        if not ids:
            raise SelectorError(f"selector {text!r}: no sweep called {name!r} in {catalog.where}; "
                                f"its sweeps: {catalog.describe_sweeps()}")
        found = [r for r in jobs if ids & set(r.sweeps)]
        if pattern:
            found = [r for r in found if matches(pattern, r)]
    else:
        found = [r for r in jobs if matches(text, r)]
    complete = [r for r in found if r.complete]
    if not complete:
        what = f"only jobs that are not complete: {_listing(found)}" if found else "no job"
        raise SelectorError(f"selector {text!r} matches {what} in {catalog.where} "
                            f"(it has {len(jobs)} job(s): {_listing(jobs)}); list them with python -m fstag.runs")
    return complete


def _score(rec: JobRecord, metric: str, by_name: dict[str, JobRecord]) -> float:
    v, _ = rec.heldout(metric, by_name)
    return v if math.isfinite(v) else -math.inf


def _rank(recs: list[JobRecord], ranking: str, catalog: Catalog, text: str) -> list[JobRecord]:
    m = _RANKING.fullmatch(ranking)
    if not m:
        raise SelectorError(f"selector {text!r}: ranking {ranking!r} is not best:<metric>, top<k>:<metric>, "
                            "best_per_fold:<metric> or best_variant:<metric>")
    kind, k, metric = m.group(1), m.group(2), m.group(3)
    by_name = {r.name: r for r in catalog.jobs}
    if not any(math.isfinite(_score(r, metric, by_name)) for r in recs):
        have = sorted({k for r in recs for k in r.metrics if k.startswith(("val_", "oof_"))})
        raise SelectorError(f"selector {text!r}: no selected job has a score {metric!r} "
                            f"(the selected jobs' scores: {', '.join(have) or 'none'})")
    score: Callable[[JobRecord], float] = lambda r: _score(r, metric, by_name)  # noqa: E731
    groups: dict[tuple, list[JobRecord]] = defaultdict(list)
    if kind == "best_per_fold":
        for r in recs:
            groups[(r.arch, r.aug, r.job)].append(r)
        keep = [max(g, key=lambda r: (score(r), r.name)) for g in groups.values()]
    elif kind == "best_variant":
        for r in recs:
            groups[(r.arch, r.aug)].append(r)
        keep = []
        for g in groups.values():
            fams: dict[str, list[JobRecord]] = defaultdict(list)
            for r in g:
                fams[r.variant].append(r)

            def mean(v: str) -> float:
                vals = [score(r) for r in fams[v] if r.stage == "train" and math.isfinite(score(r))] \
                    or [score(r) for r in fams[v] if math.isfinite(score(r))]
                return sum(vals) / len(vals) if vals else -math.inf

            keep.extend(fams[max(sorted(fams), key=mean)])
    else:
        top = 1 if kind == "best" else int(k)
        if top < 1:
            raise SelectorError(f"selector {text!r}: top<k> needs k >= 1")
        for r in recs:
            groups[r.family].append(r)
        keep = [r for g in groups.values() for r in sorted(g, key=lambda r: (-score(r), r.name))[:top]]
    return sorted(keep, key=lambda r: r.name)


def select(text: str, catalog: Catalog) -> list[JobRecord]:
    """The complete jobs a selector picks, sorted by name; :class:`SelectorError` if none."""
    text = str(text).strip()
    base, _, ranking = text.partition("|")
    recs = _base(base.strip(), catalog)
    return _rank(recs, ranking.strip(), catalog, text) if ranking.strip() else recs


def expand(specs: list[str], catalog_of: Callable[[], Catalog]) -> list[tuple[str, str | None]]:
    """Member specs with each selector replaced by the specs of the jobs it picks: ``(spec, selector)``
    pairs, the selector None for a spec given as such. A job picked by two selectors is listed once; the
    catalog is read once, and only if a selector is there."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    catalog = None
    for spec in specs:
        if not is_selector(spec):
            out.append((str(spec), None))
            continue
        catalog = catalog or catalog_of()
        for rec in select(str(spec), catalog):
            if rec.spec not in seen:
                seen.add(rec.spec)
                out.append((rec.spec, str(spec)))
    return out
