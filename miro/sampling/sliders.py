"""Reward sliders for people: vary one reward's target over a grid of seeds (the images and what made them).

``reward_sweep`` renders the images (targets along rows, seeds along columns, the other rewards fixed) and
``save_sweep`` writes ``grid.png``, every image under ``images/`` and ``sweep.json`` (prompt, reward,
targets, seeds, fixed targets, the resolved settings of the pipeline call).  Measuring what the images
really score (reward scorers, Spearman's rank correlation, ``plot.png``) is evaluation:
``miro.eval.sliders`` reads such a folder (``python -m miro.eval sliders image_dir=...``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from miro.sampling.settings import SamplingSettings
from miro.utils.atomic import atomic_write_json

SWEEP_FILE = "sweep.json"
IMAGE_DIR = "images"


@dataclass
class SweepResult:
    prompt: str
    reward: str
    targets: list[float]
    seeds: list[int]
    fixed_targets: dict[str, float | None]
    images: list[list[Image.Image]]  # [target][seed]
    settings: dict[str, Any] = field(default_factory=dict)

    def image_names(self) -> list[list[str]]:
        """File names of the images under ``images/``, [target][seed]."""
        return [[f"{IMAGE_DIR}/t{i:02d}_s{seed}.png" for seed in self.seeds] for i in range(len(self.targets))]

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "reward": self.reward,
            "targets": self.targets,
            "seeds": self.seeds,
            "fixed_targets": self.fixed_targets,
            "settings": self.settings,
            "images": self.image_names(),
        }


def reward_sweep(
    pipe,
    prompt: str,
    reward: str,
    targets: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    seeds: Sequence[int] = (0, 1, 2, 3),
    fixed_targets: Mapping[str, float | None] | None = None,
    batch_size: int = 16,
    settings: SamplingSettings | None = None,
    **pipe_kwargs,
) -> SweepResult:
    """Render ``prompt`` for every (target, seed) with ``reward`` set to the target and the other rewards
    at ``fixed_targets`` (default 1.0).

    Each image has its own CPU generator seeded with its seed, so a column shares its initial noise and the
    images do not depend on ``batch_size``.  ``settings`` and ``pipe_kwargs`` go to the pipeline call
    (guidance scales, steps, sampler, ...); the settings it resolved are recorded in the result.
    """
    from miro.sampling.targets import canonical_keys, canonical_reward

    names = list(pipe.reward_names)
    reward = canonical_reward(reward, names, "reward")
    fixed = canonical_keys(fixed_targets, names, "fixed_targets")
    if reward in fixed:
        raise ValueError(f"fixed_targets sets {reward!r}, the reward being swept; leave it out")
    if not targets or not seeds:
        raise ValueError(f"targets={list(targets)} and seeds={list(seeds)}: both must be non-empty")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    jobs = [(float(t), int(s)) for t in targets for s in seeds]
    flat: list[Image.Image] = []
    resolved: dict[str, Any] = {}
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        out = pipe(
            [prompt] * len(chunk),
            reward_targets=[{**fixed, reward: t} for t, _ in chunk],
            generator=[torch.Generator().manual_seed(s) for _, s in chunk],
            output_type="pil",
            settings=settings,
            return_dict=True,
            **pipe_kwargs,
        )
        flat += out.images
        resolved = out.settings.to_dict()
        resolved.pop("reward_targets")  # the sweep's own: fixed_targets and the swept reward's targets
        resolved["nfe"] = out.nfe
    return SweepResult(
        prompt=prompt,
        reward=reward,
        targets=[float(t) for t in targets],
        seeds=[int(s) for s in seeds],
        fixed_targets={n: fixed.get(n, 1.0) for n in names if n != reward},
        images=[flat[i * len(seeds) : (i + 1) * len(seeds)] for i in range(len(targets))],
        settings=resolved,
    )


def grid_image(result: SweepResult, label_width: int = 64, label_height: int = 20) -> Image.Image:
    """Targets along rows (labelled on the left), seeds along columns (labelled on top)."""
    w, h = result.images[0][0].size
    grid = Image.new("RGB", (label_width + w * len(result.seeds), label_height + h * len(result.targets)), "white")
    draw = ImageDraw.Draw(grid)
    for j, seed in enumerate(result.seeds):
        draw.text((label_width + j * w + 4, 4), f"seed {seed}", fill="black")
    for i, target in enumerate(result.targets):
        draw.text((4, label_height + i * h + h // 2 - 6), f"{result.reward}\n{target:.3g}", fill="black")
        for j, img in enumerate(result.images[i]):
            grid.paste(img.convert("RGB"), (label_width + j * w, label_height + i * h))
    return grid


def save_sweep(result: SweepResult, out_dir: str | Path) -> dict[str, Path]:
    """Write grid.png, images/*.png and sweep.json into ``out_dir``; returns their paths ("grid", "images",
    "json")."""
    out = Path(out_dir)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    paths = {"grid": out / "grid.png", "images": out / IMAGE_DIR, "json": out / SWEEP_FILE}
    grid_image(result).save(paths["grid"])
    for row, names in zip(result.images, result.image_names()):
        for image, name in zip(row, names):
            image.save(out / name, format="PNG")
    atomic_write_json(paths["json"], result.to_json(), indent=2)
    return paths


def load_sweep(folder: str | Path) -> SweepResult:
    """A sweep written by ``save_sweep`` (its images read back: PNG, so the pixels are those rendered)."""
    folder = Path(folder)
    path = folder / SWEEP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sweep here (written by `python -m miro.sampling mode=sweep`)")
    data = json.loads(path.read_text())
    images = [[Image.open(folder / name).convert("RGB") for name in row] for row in data["images"]]
    return SweepResult(data["prompt"], data["reward"], data["targets"], data["seeds"], data["fixed_targets"], images,
                       data.get("settings", {}))  # fmt: skip
