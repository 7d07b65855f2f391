"""``python -m miro.app [key=value ...]``: the reward-slider web app (``miro.app.cli``, miro/conf/app.yaml, docs/app.md)."""

from miro.app.cli import main

if __name__ == "__main__":
    main()
