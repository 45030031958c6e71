"""``python -m medseg`` (and ``torchrun -m medseg train ...``): the medseg command line."""

from medseg.cli.main import entry

if __name__ == "__main__":
    entry()
