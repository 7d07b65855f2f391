"""``python -m miro.data.shapes out=DIR num_samples=N resolution=64 shard_size=1000 seed=0 ...``

Writes a shapes world (docs/shapes_world.md); every key of ``miro/conf/shapes.yaml`` can be overridden.
"""

from __future__ import annotations

from miro.data.shapes.config import ShapesConfig
from miro.data.shapes.generate import generate
from miro.utils.config import entry_point


def generate_and_report(cfg: ShapesConfig) -> dict:
    summary = generate(cfg)
    print(f"shapes world in {summary['out']}: {summary['samples_written']} samples written in "
          f"{summary['shards_written']} shards, {summary['shards_kept']} complete shards kept")
    return summary


main = entry_point("shapes", ShapesConfig, generate_and_report)

if __name__ == "__main__":
    main()
