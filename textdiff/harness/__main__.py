"""``python -m textdiff.harness SUITE [key=value ...]``: the same as ``textdiff eval``."""
import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
