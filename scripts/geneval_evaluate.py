"""GenEval evaluate: the same as `python -m miro.eval evaluate [key=value ...]` (docs/eval.md)."""

import sys

from miro.eval.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
