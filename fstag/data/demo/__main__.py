"""``python -m fstag.data.demo --root DIR [...]``: generate the demo data set (see :mod:`fstag.data.demo.cli`)."""

from fstag.data.demo.cli import main

if __name__ == "__main__":
    main()
