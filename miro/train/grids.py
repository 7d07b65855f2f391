"""Periodic sample grids from the EMA network with fixed noise.

Rows: every reward set to one target (e.g. 0, 0.5, 1; a single "no reward" row for the baseline);
columns: fixed prompts.  The same noise is used in every row and at every step, so differences along a
column are the reward conditioning and differences over time are training progress.  Sampling goes
through ``miro.sampling.sample`` (the guidance formula of the sampling stage; scale 0 = plain
conditional velocity, one network evaluation per step; the negative branch uses reward targets 0).
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
from miro.flow import flow_sigmas
from miro.sampling.guidance import Guidance
from miro.sampling.sampler import Conditions, sample
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
    guidance_scale: float = 0.0  # the sampling stage's joint scale (0 = no guidance)
    seed: int = 0

    def __post_init__(self):
        require(self.every >= 0, "sample.every", self.every, "must be >= 0 (0 = no sample grids)")
        require(len(self.prompts) > 0, "sample.prompts", self.prompts, "must hold at least one prompt")
        require(all(0.0 <= t <= 1.0 for t in self.targets) and len(self.targets) > 0, "sample.targets",
                self.targets, "must be a non-empty list of reward targets in [0, 1]")
        require(self.steps >= 1, "sample.steps", self.steps, "must be >= 1")
        require(self.shift > 0, "sample.shift", self.shift, "must be > 0")
        require(self.guidance_scale >= 0, "sample.guidance_scale", self.guidance_scale, "must be >= 0 (0 = no guidance)")


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
                "shift": self.cfg.shift, "guidance_scale": self.cfg.guidance_scale, "negative_targets": 0.0,
                "seed": self.cfg.seed, "rewards": self.reward_names}

    @torch.no_grad()
    def render(self, model: torch.nn.Module, autoencoder) -> np.ndarray:
        """The grid as one uint8 image [H, W, 3]."""
        n, r = len(self.cfg.prompts), len(self.reward_names)
        sigmas = flow_sigmas(self.cfg.steps, self.cfg.shift)
        guidance = Guidance.joint(self.cfg.guidance_scale, r)
        known = torch.ones(n, r, dtype=torch.bool, device=self.device)
        negative = torch.zeros(n, r, device=self.device)
        tiles = []
        for _, target in self.rows:
            positive = torch.full((n, r), float(target or 0.0), device=self.device)
            conds = Conditions(self.text, self.text_mask, positive, known, negative, known)
            latents = sample(model, self.noise, conds, guidance, sigmas)
            tiles.append((autoencoder.decode(latents).float().clamp(-1, 1).cpu() + 1) / 2)
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
