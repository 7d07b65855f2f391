"""One shapes-world sample from (config, index): scene, caption, rendering, degradations, encoded members.

Each sample draws from its own ``numpy`` generator seeded with ``[seed, index]``, so any sample can be
regenerated alone and shards made in parallel are identical to shards made in one process.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from miro.data.shapes import degrade
from miro.data.shapes.captions import free_prompt, geneval_prompt
from miro.data.shapes.config import DEGRADATIONS, TASKS, ShapesConfig
from miro.data.shapes.render import background, paint
from miro.data.shapes.scene import SceneDraw, Vocabulary, sample_scene, wrong_caption
from miro.data.shapes.vocab import PALETTE, palette_array

WORLD_VERSION = 1


@dataclass
class Sample:
    key: str
    image: bytes
    ext: str  # "png", or "jpg" when the JPEG degradation applied
    caption: str
    record: dict  # the KEY.json content

    def members(self) -> dict[str, bytes | str]:
        return {self.ext: self.image, "txt": self.caption, "json": json.dumps(self.record, sort_keys=False)}


@dataclass
class Draft:
    index: int
    rng: np.random.Generator  # the sample's generator, positioned where rendering continues
    scene: SceneDraw
    kind: str  # caption_kind
    meta: dict  # the caption's GenEval metadata, with "prompt" = the caption
    phrasing: str  # "geneval" or "free"


def sample_key(index: int) -> str:
    return f"{index:09d}"


class ShapesWorld:
    """Generates the samples of one configuration."""

    def __init__(self, cfg: ShapesConfig):
        self.cfg = cfg
        self.vocab = Vocabulary.from_config(cfg)
        tasks = [t for t in TASKS if cfg.scene.tasks.get(t, 0.0) > 0]
        weights = np.array([cfg.scene.tasks[t] for t in tasks], dtype=np.float64)
        self.tasks, self.task_p = tasks, weights / weights.sum()

    @cached_property
    def _mark_colors(self) -> np.ndarray:
        return palette_array(self.vocab.colors)

    def draft(self, index: int) -> Draft:
        """Sample ``index`` up to its caption (no pixels yet): cheap, for caption studies and tests."""
        cfg, res = self.cfg, self.cfg.resolution
        rng = np.random.default_rng([cfg.seed, index])
        task = self.tasks[int(rng.choice(len(self.tasks), p=self.task_p))]
        geneval_style = rng.random() < cfg.captions.geneval_phrasing
        mention = (not geneval_style) and rng.random() < cfg.captions.color_mention
        scene = sample_scene(rng, task, self.vocab, cfg, res, mention)
        kind, meta = "correct", scene.meta
        if rng.random() < cfg.captions.wrong:
            wrong = wrong_caption(rng, scene.meta, scene.objects, self.vocab, dict(cfg.captions.wrong_kinds))
            if wrong is not None:
                kind, meta = wrong
        caption = geneval_prompt(meta) if geneval_style else free_prompt(meta, rng, cfg.captions.synonyms)
        return Draft(index, rng, scene, kind, {**meta, "prompt": caption}, "geneval" if geneval_style else "free")

    def sample(self, index: int) -> Sample:
        """The complete sample ``index``: rendered, degraded and encoded, with its json record."""
        cfg, res = self.cfg, self.cfg.resolution
        draft = self.draft(index)
        rng, scene, meta, caption = draft.rng, draft.scene, draft.meta, draft.meta["prompt"]
        ss = cfg.scene.supersample
        img = background(rng, res, cfg.scene.background, cfg.scene.texture)
        for obj in scene.objects:
            paint(img, obj.polygon(), PALETTE[obj.color], ss)
        boxes = [o.box() for o in scene.objects]
        applied: dict[str, dict] = {}
        for name in DEGRADATIONS:
            spec = getattr(cfg.degradations, name)
            u, s = rng.random(), float(rng.uniform(spec.min_strength, spec.max_strength))
            if u >= spec.prob:
                continue
            if name == "clutter":
                params = degrade.apply_clutter(img, s, rng, boxes, self._mark_colors, cfg.scene.background, ss)
            elif name == "blur":
                params = degrade.apply_blur(img, s)
            elif name == "low_contrast":
                params = degrade.apply_low_contrast(img, s)
            elif name == "color_cast":
                params = degrade.apply_color_cast(img, s, rng)
            elif name == "noise":
                params = degrade.apply_noise(img, s, rng)
            else:
                params = {"quality": degrade.jpeg_quality(s)}
            applied[name] = {"strength": round(s, 4), **params}
        pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        if "jpeg" in applied:
            Image.fromarray(pixels).save(buf, format="JPEG", quality=applied["jpeg"]["quality"])
            ext = "jpg"
        else:
            Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
            ext = "png"

        key = sample_key(index)
        record = {
            "key": key,
            "index": index,
            "seed": cfg.seed,
            "task": meta["tag"],
            "caption": caption,
            "caption_kind": draft.kind,
            "phrasing": draft.phrasing,
            "caption_metadata": meta,
            "true_metadata": scene.meta,
            "scene": {
                "width": res,
                "height": res,
                "background": list(cfg.scene.background),
                "objects": [
                    {"class": o.cls, "color": o.color, "box": [round(v, 3) for v in b], "size": round(o.size, 3),
                     "rotation": round(o.rotation, 3)}
                    for o, b in zip(scene.objects, boxes)
                ],
            },
            "degradations": applied,
            "format": ext,
            "generator": {"name": "miro.data.shapes", "version": WORLD_VERSION},
        }
        return Sample(key, buf.getvalue(), ext, caption, record)
