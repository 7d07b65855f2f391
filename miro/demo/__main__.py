"""``python -m miro.demo [key=value ...]``: the whole embedded-default pipeline and its report (miro/conf/demo.yaml)."""

from __future__ import annotations

from miro.demo.config import DemoConfig
from miro.demo.run import run_demo
from miro.demo.steps import DemoError
from miro.utils.config import entry_point

main = entry_point("demo", DemoConfig, run_demo, errors=(DemoError,))


if __name__ == "__main__":
    main()
