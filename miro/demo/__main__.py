"""``python -m miro.demo [key=value ...]``: the whole embedded-default pipeline and its report (miro/conf/demo.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from miro.demo.config import DemoConfig
from miro.demo.run import run_demo
from miro.demo.steps import DemoError
from miro.utils.config import CONFIG_PATH, register_schema, run_typed

register_schema("demo_schema", DemoConfig)


@hydra.main(config_path=CONFIG_PATH, config_name="demo", version_base="1.3")
def main(hcfg: DictConfig) -> None:
    run_typed(hcfg, DemoConfig, run_demo, errors=(DemoError,))


if __name__ == "__main__":
    main()
