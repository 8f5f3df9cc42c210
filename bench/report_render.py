"""Cost of the per-class report (fstag.evaluate.reports) that every train job and blend writes.

    python bench/report_render.py [--classes 41] [--rows 1900] [--repeats 5] [--tiny]

Times, on random predictions, (a) the per-class table, (b) the confusion-matrix PNG (build + save),
(c) the per-class bar chart PNG and (d) the whole report (both CSVs and both PNGs); the first call of
each, which imports matplotlib and scikit-learn, is left out. Prints the median wall and CPU time of the
repeats and the load average (the machine may be shared). ``--tiny``: 5 classes, 60 rows, 1 repeat (a
smoke test of the same calls, seconds).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fstag.evaluate import reports  # noqa: E402


def _cpu() -> str:
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def _median_s(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` (CPU time: this process only, so a busy machine inflates it less)."""
    fn()  # warm-up: imports, font cache
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=41)
    ap.add_argument("--rows", type=int, default=1900)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="a smoke test: 5 classes, 60 rows, 1 repeat")
    args = ap.parse_args(argv)
    if args.tiny:
        args.classes, args.rows, args.repeats = 5, 60, 1
        print("TINY RUN (--tiny: a smoke test on tiny inputs; do not quote these numbers)")
    rng = np.random.default_rng(0)
    targets = rng.integers(0, args.classes, args.rows)
    logits = rng.normal(size=(args.rows, args.classes))
    logits[np.arange(args.rows), targets] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = [f"Label_{i:02d}_of_a_class" for i in range(args.classes)]
    counts = reports.confusion_counts(probs, targets, labels)
    table = reports.class_table(probs, targets, labels)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        steps = {
            "per-class table": lambda: reports.class_table(probs, targets, labels),
            "confusion PNG": lambda: reports.save_png(reports.confusion_figure(counts, labels), out / "c.png"),
            "bar chart PNG": lambda: reports.save_png(reports.class_chart_figure(table, 0.5), out / "b.png"),
            "whole report": lambda: reports.write_class_report(probs, targets, labels, out / "r"),
        }
        print(f"{_cpu()} x{os.cpu_count()} cores; {args.classes} classes, {args.rows} rows; "
              f"median of {args.repeats}")
        print(f"load average {os.getloadavg()[0]:.1f}")
        for name, fn in steps.items():
            wall, cpu = _median_s(fn, args.repeats)
            print(f"{name:>16}: {wall:.3f} s wall, {cpu:.3f} s CPU")


if __name__ == "__main__":
    main()
