"""A pipeline's flow-matching loss on its own training images against a freshly generated world's.

Why: a gap says the model memorises its world (more or fresh data would help); none says it does not
(docs/text_conditioning.md, section 31).  Pixel-space pipelines and feature-cached worlds only.

    python scripts/experiments/fresh_world_loss.py --data runs/demo/data --fresh runs/s34/fresh1 \
        --pipelines models/shapes_reference --out fresh_loss.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from text_conditioning import Cached  # noqa: E402

from miro.flow import LinearPath, velocity_loss  # noqa: E402
from miro.sampling.pipeline import MiroPipeline  # noqa: E402

TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


@torch.no_grad()
def mean_loss(model, batch: dict, t_value: float, seed: int = 1, chunk: int = 256) -> float:
    """The velocity loss at one noise level, the same noise for every pipeline (seeded)."""
    noise = torch.randn(batch["x"].shape, generator=torch.Generator().manual_seed(seed))
    t = torch.full((batch["x"].shape[0],), t_value)
    s = LinearPath().sample(batch["x"], t, noise)
    total = 0.0
    for i in range(0, len(t), chunk):
        sl = slice(i, i + chunk)
        v = model(s.x_t[sl], t[sl], batch["text"][sl], batch["text_mask"][sl], rewards=batch["rewards"][sl],
                  reward_mask=batch["reward_mask"][sl])
        total += velocity_loss(v, s.target[sl]).sum().item()
    return total / len(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the training world (its train/ holds the cache)")
    ap.add_argument("--fresh", type=Path, required=True, help="a world from the same generator with another seed")
    ap.add_argument("--pipelines", nargs="+", type=Path, required=True)
    ap.add_argument("--images", type=int, default=1024, help="the training world's last N, the fresh world's first N")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, fresh = Cached(args.data), Cached(args.fresh)
    n = min(args.images, len(train), len(fresh))
    batches = {"train": train.batch(torch.arange(len(train) - n, len(train))), "fresh": fresh.batch(torch.arange(n))}
    out = {}
    for folder in args.pipelines:
        model = MiroPipeline.from_pretrained(folder).transformer.float().eval()
        row = {tag: {f"{tv:g}": mean_loss(model, b, tv) for tv in TIMES} for tag, b in batches.items()}
        row["gap_pct"] = {k: round(100 * (row["fresh"][k] - row["train"][k]) / row["train"][k], 2) for k in row["train"]}
        out[str(folder)] = row
        print(folder, json.dumps(row["gap_pct"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
