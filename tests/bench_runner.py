"""Running a bench as a user runs it, for the tests of every bench/*.py (tests/test_benches.py, one file per
bench that trains: tests/test_bench_<name>.py, so that pytest-xdist's --dist loadfile spreads them over the
workers): ``python bench/<name>.py --tiny``, a real subprocess from the project root, and the numbers of its
report."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, make_env

NUMBER = r"(-?\d+(?:\.\d+)?|nan|inf)"


def run_bench(name: str, tmp_path: Path, *args: str, timeout: float = 600) -> str:
    """``python bench/<name>.py --tiny <args>`` from the project root; its standard output (stderr on failure)."""
    cmd = [sys.executable, str(REPO / "bench" / f"{name}.py"), "--tiny", *args]
    res = subprocess.run(cmd, cwd=REPO, env=make_env(tmp_path), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
    assert "TINY RUN" in res.stdout, "a tiny run's report says so"
    return res.stdout


def numbers(pattern: str, text: str) -> list[float]:
    """The numbers of the first line matching ``pattern`` (its groups), each finite."""
    m = re.search(pattern, text, re.MULTILINE)
    assert m, f"no line matching {pattern!r} in:\n{text[-3000:]}"
    values = [float(g) for g in m.groups()]
    assert all(math.isfinite(v) for v in values), m.group(0)
    return values
