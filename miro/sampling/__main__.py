"""``python -m miro.sampling`` (the same command as ``python -m miro.sample``)."""

from miro.sampling.cli import main

if __name__ == "__main__":
    main()
