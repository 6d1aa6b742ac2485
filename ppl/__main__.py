"""``python -m ppl``: the ``ppl`` command (see :mod:`ppl.cli`)."""

import sys

from ppl.cli import main

if __name__ == "__main__":
    sys.exit(main())
