"""``python -m miro.demo [key=value ...]``: the whole embedded-default pipeline and its report (conf/demo.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from miro.demo.config import DemoConfig
from miro.demo.run import run_demo
from miro.demo.steps import DemoError
from miro.utils.config import register_schema, run_typed

register_schema("demo_schema", DemoConfig)
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="demo", version_base="1.3")
def main(hcfg: DictConfig) -> None:
    run_typed(hcfg, DemoConfig, run_demo, errors=(DemoError,))


if __name__ == "__main__":
    main()
