"""``python -m medseg`` (and ``torchrun -m medseg train ...``): the medseg command line."""

import sys

from medseg.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
