"""GenEval summary: the same as `python -m miro.eval summary [key=value ...]` (docs/eval.md)."""

import sys

from miro.eval.cli import main

if __name__ == "__main__":
    main(["summary", *sys.argv[1:]])
