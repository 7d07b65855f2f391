"""``python -m miro.data.shapes out=DIR num_samples=N resolution=64 shard_size=1000 seed=0 ...``

Writes a shapes world (docs/shapes_world.md); every key of ``miro/conf/shapes.yaml`` can be overridden.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from miro.data.shapes.config import ShapesConfig
from miro.data.shapes.generate import generate
from miro.utils.config import CONFIG_PATH, register_schema, run_typed

register_schema("shapes_schema", ShapesConfig)


@hydra.main(config_path=CONFIG_PATH, config_name="shapes", version_base="1.3")
def main(hcfg: DictConfig) -> None:
    summary = run_typed(hcfg, ShapesConfig, generate)
    print(f"shapes world in {summary['out']}: {summary['samples_written']} samples written in "
          f"{summary['shards_written']} shards, {summary['shards_kept']} complete shards kept")


if __name__ == "__main__":
    main()
