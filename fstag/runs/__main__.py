"""``python -m fstag.runs``: list an experiment's training jobs (:mod:`fstag.runs.listing`)."""

import sys

from fstag.runs.listing import main

if __name__ == "__main__":
    sys.exit(main())
