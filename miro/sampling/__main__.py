"""``python -m miro.sampling [key=value ...]``: sample images or sweep reward sliders (``miro.sampling.cli``,
miro/conf/sample.yaml, docs/sampling.md)."""

from miro.sampling.cli import main

if __name__ == "__main__":
    main()
