"""The command line: ``python -m fstag.data.demo [--multi-label] --root DIR [...]`` (see :func:`main`)."""

from __future__ import annotations

import argparse

from fstag.data.demo.multilabel import generate_multilabel_demo
from fstag.data.demo.multilabel_settings import MultilabelDemoSettings
from fstag.data.demo.settings import DemoSettings
from fstag.data.demo.write import generate_demo_dataset


def main(argv: list[str] | None = None) -> None:
    """``python -m fstag.data.demo --root DIR [--n-train N --n-test N --n-shifted N --seed S --workers W]``;
    with ``--multi-label``: the multi-label demo in the FSDKaggle2019 layout
    (``--n-curated N --n-noisy N --n-test N --max-sources K --noisy-wrong-share X``)."""
    defaults, ml = DemoSettings(), MultilabelDemoSettings()
    parser = argparse.ArgumentParser(description="Generate the built-in demo data set (Kaggle layout; with "
                                                 "--multi-label the multi-label demo in the FSDKaggle2019 layout).")
    parser.add_argument("--root", required=True, help="folder to create (must not hold a data set yet)")
    parser.add_argument("--multi-label", action="store_true",
                        help="the multi-label demo (train_curated/, train_noisy/, test/) instead")
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-test", type=int, default=None,
                        help=f"test clips (default {defaults.n_test}; multi-label {ml.n_test})")
    parser.add_argument("--n-shifted", type=int, default=defaults.n_shifted, help="shifted test clips (0: none)")
    parser.add_argument("--n-curated", type=int, default=ml.n_curated, help="multi-label: curated train clips")
    parser.add_argument("--n-noisy", type=int, default=ml.n_noisy, help="multi-label: noisy train clips")
    parser.add_argument("--max-sources", type=int, default=ml.max_sources, help="multi-label: sources per clip, at most")
    parser.add_argument("--noisy-wrong-share", type=float, default=ml.noisy_wrong_share,
                        help="multi-label: noisy rows with a wrong label set")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    args = parser.parse_args(argv)
    if args.multi_label:
        root = generate_multilabel_demo(args.root, n_curated=args.n_curated, n_noisy=args.n_noisy,
                                        n_test=ml.n_test if args.n_test is None else args.n_test,
                                        max_sources=args.max_sources, noisy_wrong_share=args.noisy_wrong_share,
                                        seed=args.seed, workers=args.workers)
    else:
        root = generate_demo_dataset(args.root, n_train=args.n_train,
                                     n_test=defaults.n_test if args.n_test is None else args.n_test,
                                     n_shifted=args.n_shifted, seed=args.seed, workers=args.workers)
    print(root)
