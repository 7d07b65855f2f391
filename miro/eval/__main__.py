"""``python -m miro.eval <command> [key=value ...]`` (see ``miro.eval.cli``)."""

from miro.eval.cli import main

if __name__ == "__main__":
    main()
