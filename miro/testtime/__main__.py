"""``python -m miro.testtime [key=value ...]``: test-time scaling of a saved pipeline (``miro.testtime.cli``,
miro/conf/testtime.yaml)."""

from miro.testtime.cli import main

if __name__ == "__main__":
    main()
