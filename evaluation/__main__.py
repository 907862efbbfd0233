"""``python -m evaluation SUITE [key=value ...]``: kept for old commands; the harness now lives in
the package (:mod:`textdiff.harness`), run it as ``textdiff eval SUITE``."""
import sys

from textdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
