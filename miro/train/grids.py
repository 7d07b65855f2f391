"""Periodic sample grids from the EMA network with fixed noise.

Rows: every reward set to one target (e.g. 0, 0.5, 1; a single "no reward" row for the baseline);
columns: fixed prompts.  The same noise is used in every row and at every step, so differences along a
column are the reward conditioning and differences over time are training progress.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from miro.data.transforms import trim_text
from miro.flow import flow_sigmas, integrate
from miro.utils.config import require

PAD = 2  # pixels between tiles
DEFAULT_PROMPTS = [
    "a photo of a red circle",
    "a photo of two blue squares",
    "a photo of a green triangle left of a yellow star",
    "a photo of a purple square above an orange circle",
]


@dataclass
class SampleConfig:
    every: int = 500  # steps between grids; 0 disables
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    targets: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    steps: int = 20
    shift: float = 1.0
    seed: int = 0

    def __post_init__(self):
        require(self.every >= 0, "sample.every", self.every, "must be >= 0 (0 = no sample grids)")
        require(len(self.prompts) > 0, "sample.prompts", self.prompts, "must hold at least one prompt")
        require(all(0.0 <= t <= 1.0 for t in self.targets) and len(self.targets) > 0, "sample.targets",
                self.targets, "must be a non-empty list of reward targets in [0, 1]")
        require(self.steps >= 1, "sample.steps", self.steps, "must be >= 1")
        require(self.shift > 0, "sample.shift", self.shift, "must be > 0")


class SampleGrid:
    def __init__(self, cfg: SampleConfig, reward_names: list[str], text_encoder, latent_shape: tuple[int, int, int],
                 device: torch.device):
        self.cfg, self.reward_names, self.device = cfg, list(reward_names), device
        with torch.no_grad():
            emb, mask = text_encoder.encode(list(cfg.prompts))
        self.text, self.text_mask = trim_text(emb.to(device, torch.float32), mask.to(device).bool())
        gen = torch.Generator().manual_seed(cfg.seed)
        self.noise = torch.randn((len(cfg.prompts), *latent_shape), generator=gen).to(device)
        self.rows = [(f"all rewards = {t:g}", t) for t in cfg.targets] if reward_names else [("no reward", None)]

    def describe(self) -> dict:
        return {"rows": [r for r, _ in self.rows], "columns": list(self.cfg.prompts), "steps": self.cfg.steps,
                "shift": self.cfg.shift, "seed": self.cfg.seed, "rewards": self.reward_names}

    @torch.no_grad()
    def render(self, model: torch.nn.Module, autoencoder) -> np.ndarray:
        """The grid as one uint8 image [H, W, 3]."""
        n = len(self.cfg.prompts)
        sigmas = flow_sigmas(self.cfg.steps, self.cfg.shift)
        tiles = []
        for _, target in self.rows:
            kwargs = {}
            if target is not None:
                kwargs["rewards"] = torch.full((n, len(self.reward_names)), float(target), device=self.device)
                kwargs["reward_mask"] = torch.ones(n, len(self.reward_names), dtype=torch.bool, device=self.device)

            def velocity(x, t, kwargs=kwargs):
                return model(x, t.to(self.device), self.text, self.text_mask, **kwargs).float()

            latents = integrate(velocity, self.noise.clone(), sigmas)
            images = autoencoder.decode(latents).float().clamp(-1, 1)
            tiles.append((images.cpu() + 1) / 2)
        grid = make_grid(torch.cat(tiles), nrow=n, padding=PAD, pad_value=1.0)  # rows x prompts, white gaps
        return (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_grid(grid: np.ndarray, folder: Path, step: int, description: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = folder / "grid.json"
    if not meta.exists():
        meta.write_text(json.dumps(description, indent=1))
    path = folder / f"step-{step:07d}.png"
    Image.fromarray(grid).save(path)
    return path
