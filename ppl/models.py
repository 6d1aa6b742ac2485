"""``python -m ppl.models``: the model zoo's command line (same as ``python -m ppl.zoo``)."""

import sys

from ppl.zoo import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m ppl.models"))
