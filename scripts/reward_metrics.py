"""Reward metrics of a generated folder, or a comparison of two scored folders (docs/eval.md).

    python scripts/reward_metrics.py image_dir=runs/geneval rewards=[pickscore,sharpness]
    python scripts/reward_metrics.py compare 'compare.runs=[runs/base,runs/miro]'
"""

import sys

from miro.eval.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    main(args if args[:1] == ["compare"] else ["rewards", *args])
