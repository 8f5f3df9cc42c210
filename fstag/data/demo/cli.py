"""The command line: ``python -m fstag.data.demo --root DIR [...]`` (see :func:`main`)."""

from __future__ import annotations

import argparse

from fstag.data.demo.settings import DemoSettings
from fstag.data.demo.write import generate_demo_dataset


def main(argv: list[str] | None = None) -> None:
    """``python -m fstag.data.demo --root DIR [--n-train N --n-test N --n-shifted N --seed S --workers W]``."""
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(description="Generate the built-in demo data set (Kaggle layout).")
    parser.add_argument("--root", required=True, help="folder to create (must not hold a data set yet)")
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-test", type=int, default=defaults.n_test)
    parser.add_argument("--n-shifted", type=int, default=defaults.n_shifted, help="shifted test clips (0: none)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    args = parser.parse_args(argv)
    root = generate_demo_dataset(args.root, n_train=args.n_train, n_test=args.n_test, n_shifted=args.n_shifted,
                                 seed=args.seed, workers=args.workers)
    print(root)
