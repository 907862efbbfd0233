"""``python -m evaluation SUITE.yaml [key=value ...]``: one-line errors, exit status 2."""
import os
import sys

from textdiff.errors import TextDiffError

from .run import main

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        main(sys.argv[1:])
    except TextDiffError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
