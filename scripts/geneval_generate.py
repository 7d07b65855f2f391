"""GenEval generate: the same as `python -m miro.eval generate [key=value ...]` (docs/eval.md)."""

import sys

from miro.eval.cli import main

if __name__ == "__main__":
    main(["generate", *sys.argv[1:]])
