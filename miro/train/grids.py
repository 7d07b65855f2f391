"""Periodic sample grids from the EMA network with fixed noise.

Rows: every reward set to one target (e.g. 0, 0.5, 1; a single "no reward" row for the baseline);
columns: fixed prompts.  The same noise is used in every row and at every step, so differences along a
column are the reward conditioning and differences over time are training progress.  Sampling goes
through ``miro.sampling.sample`` with the sampling stage's settings schema (``sample.settings``: guidance
scales, negative targets, steps, sampler; by default scale 0 = plain conditional velocity, one network
evaluation per step, 20 steps; the negative branch uses reward targets 0 unless set).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from miro.data.transforms import trim_text
from miro.flow import flow_sigmas
from miro.sampling.sampler import Conditions, sample
from miro.sampling.settings import SamplingSettings
from miro.sampling.targets import reward_tensors, target_dicts
from miro.utils.config import require

PAD = 2  # pixels between tiles
DEFAULT_PROMPTS = [
    "a photo of a red circle",
    "a photo of two blue squares",
    "a photo of a green triangle left of a yellow star",
    "a photo of a purple square above an orange circle",
]


def _grid_settings() -> SamplingSettings:
    return SamplingSettings(steps=20, guidance_scale=0.0)  # 0 = no guidance: one network evaluation per step


@dataclass
class GridConfig:
    """``sample.*`` of the training config: when and what to render; ``settings`` is the sampling stage's
    schema (``miro.sampling.settings``) minus what the grid fixes itself (the rows set every reward's target,
    the size is the training one)."""

    every: int = 500  # steps between grids; 0 disables
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    targets: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    shift: float = 1.0
    seed: int = 0
    settings: SamplingSettings = field(default_factory=_grid_settings)

    def __post_init__(self):
        require(self.every >= 0, "sample.every", self.every, "must be >= 0 (0 = no sample grids)")
        require(len(self.prompts) > 0, "sample.prompts", self.prompts, "must hold at least one prompt")
        require(all(0.0 <= t <= 1.0 for t in self.targets) and len(self.targets) > 0, "sample.targets",
                self.targets, "must be a non-empty list of reward targets in [0, 1]")
        require(self.shift > 0, "sample.shift", self.shift, "must be > 0")
        s = self.settings
        require(s.guidance_scale >= 0, "sample.settings.guidance_scale", s.guidance_scale, "must be >= 0 (0 = no guidance)")
        require(not s.reward_targets, "sample.settings.reward_targets", s.reward_targets,
                "must be empty: the grid's rows set every reward's target (sample.targets)")  # fmt: skip
        require(s.height is None and s.width is None, "sample.settings.height/width", (s.height, s.width),
                "must be null: grids render at the training resolution")  # fmt: skip


class SampleGrid:
    def __init__(self, cfg: GridConfig, reward_names: list[str], text_encoder, latent_shape: tuple[int, int, int],
                 device: torch.device):
        self.cfg, self.reward_names, self.device = cfg, list(reward_names), device
        with torch.no_grad():
            emb, mask = text_encoder.encode(list(cfg.prompts))
        self.text, self.text_mask = trim_text(emb.to(device, torch.float32), mask.to(device).bool())
        gen = torch.Generator().manual_seed(cfg.seed)
        self.noise = torch.randn((len(cfg.prompts), *latent_shape), generator=gen).to(device)
        self.rows = [(f"all rewards = {t:g}", t) for t in cfg.targets] if reward_names else [("no reward", None)]

    def describe(self) -> dict:
        s = self.cfg.settings
        guidance = s.guidance(self.reward_names)
        negative = target_dicts(*self._negative(1), self.reward_names)[0]
        return {"rows": [r for r, _ in self.rows], "columns": list(self.cfg.prompts), "steps": s.steps,
                "shift": self.cfg.shift, "guidance_scale": s.guidance_scale,
                "negative_targets": 0.0 if all(v == 0.0 for v in negative.values()) else negative,
                "seed": self.cfg.seed, "rewards": self.reward_names, "sampler": s.sampler,
                "text_guidance_scale": guidance.text_scale, "reward_guidance_scales": list(guidance.reward_scales),
                "guidance_interval": list(guidance.interval)}  # fmt: skip

    def _negative(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        names = self.reward_names
        return reward_tensors(self.cfg.settings.negative_reward_targets, names, n, 0.0, "sample.settings.negative_reward_targets")

    @torch.no_grad()
    def render(self, model: torch.nn.Module, autoencoder) -> np.ndarray:
        """The grid as one uint8 image [H, W, 3]."""
        s = self.cfg.settings
        n, r = len(self.cfg.prompts), len(self.reward_names)
        sigmas = flow_sigmas(s.steps, self.cfg.shift)
        guidance = s.guidance(self.reward_names)
        known = torch.ones(n, r, dtype=torch.bool, device=self.device)
        negative, negative_known = (t.to(self.device) for t in self._negative(n))
        tiles = []
        for _, target in self.rows:
            positive = torch.full((n, r), float(target or 0.0), device=self.device)
            conds = Conditions(self.text, self.text_mask, positive, known, negative, negative_known)
            fresh = torch.Generator().manual_seed(self.cfg.seed + 1)  # the sde sampler's noise: the same every grid
            latents = sample(model, self.noise, conds, guidance, sigmas, s.sampler, sde_noise=s.sde_noise,
                             noise_fn=partial(torch.randn, self.noise.shape, generator=fresh))  # fmt: skip
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
