"""Oracle images for the shapes-world GenEval: every prompt rendered as a clean scene that satisfies it.

Scoring these measures the benchmark itself (detector + rules on images that are right by construction):
its ceiling, and a check that a held-out prompt set is well-posed before a model is blamed.  Each image is
a fresh layout (``miro.data.shapes.scene.layout``, which places a position clause's object so that GenEval's
position rule holds) painted with the world's renderer, without extra objects or degradations.  Objects
whose clause names no colour get a random one.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from miro.data.shapes.alignment import parse_caption
from miro.data.shapes.config import ShapesConfig
from miro.data.shapes.render import background, paint
from miro.data.shapes.scene import layout
from miro.data.shapes.vocab import PALETTE


def scene_specs(meta: dict, rng: np.random.Generator, colors: tuple[str, ...]) -> tuple[list[tuple[str, str]], str | None]:
    """``(class, colour)`` of every object a metadata item asks for, and the relation of a position clause
    (whose object ``layout`` places relative to the first one)."""
    specs, relation = [], None
    for clause in meta["include"]:
        for _ in range(clause["count"]):
            specs.append((clause["class"], clause.get("color") or colors[int(rng.integers(len(colors)))]))
        if "position" in clause:
            relation = clause["position"][0]
    return specs, relation


def oracle_generate_fn(cfg: ShapesConfig | None = None, resolution: int = 64):
    """A ``generate(prompt, n, generator)`` callable for ``generate_layout`` that renders oracle scenes."""
    cfg = cfg or ShapesConfig(out="unused")
    colors = tuple(cfg.scene.colors)

    def generate(prompt: str, n: int, generator: torch.Generator) -> list[Image.Image]:
        meta = parse_caption(prompt)
        if meta is None:
            raise ValueError(f"not a shapes-world GenEval prompt (classes {list(cfg.scene.classes)}): {prompt!r}")
        images = []
        for _ in range(n):
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
            specs, relation = scene_specs(meta, rng, colors)
            img = background(rng, resolution, cfg.scene.background, cfg.scene.texture)
            for obj in layout(rng, specs, resolution, cfg, relation):
                paint(img, obj.polygon(), PALETTE[obj.color], cfg.scene.supersample)
            images.append(Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)))
        return images

    return generate
