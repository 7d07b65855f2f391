"""``python -m miro.sample ...``: sample images or sweep reward sliders (see ``miro.sampling.cli``)."""

from miro.sampling.cli import main

if __name__ == "__main__":
    main()
