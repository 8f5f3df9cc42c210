"""``python -m fstag.runs``: list an experiment's training jobs (:mod:`fstag.runs.listing`);
``python -m fstag.runs sync``: send the MLflow journals left behind while the tracking store was away
(:mod:`fstag.runs.sync`)."""

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sync"]:
        from fstag.runs.sync import main as sync_main

        return sync_main(argv[1:])
    from fstag.runs.listing import main as listing_main

    if "-h" in argv or "--help" in argv:  # the listing's help, then the subcommand's
        try:
            listing_main(argv)
        except SystemExit:
            pass
        from fstag.runs.sync import parser

        print("\nsubcommand:\n")
        parser().print_help()
        return 0
    return listing_main(argv)


if __name__ == "__main__":
    sys.exit(main())
