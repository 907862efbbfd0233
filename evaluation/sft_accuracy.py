"""``python -m evaluation.sft_accuracy``: kept for old commands; the evaluation lives in the package
(:mod:`textdiff.eval.sft_accuracy`), run it as ``textdiff eval sft MODEL ...``."""
import sys

from textdiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "sft", *sys.argv[1:]]))
