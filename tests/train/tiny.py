"""Tiny stand-ins that honour the contracts of docs/contracts.md (model call, TextEncoder, Autoencoder).

Used until the real classes of ``miro.models`` are merged; small enough that a training step takes a few ms.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class TinyTextEncoder(nn.Module):
    """Hash-of-word token embeddings, right-padded to ``max_length`` (deterministic, frozen)."""

    def __init__(self, dim: int = 8, max_length: int = 12, vocab: int = 64):
        super().__init__()
        self.dim, self.max_length, self.vocab = dim, max_length, vocab
        self.register_buffer("table", torch.randn(vocab, dim, generator=torch.Generator().manual_seed(0)))

    def identifier(self) -> str:
        return f"tiny-text-{self.dim}-{self.max_length}"

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb = torch.zeros(len(prompts), self.max_length, self.dim, device=self.table.device)
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool, device=self.table.device)
        for i, p in enumerate(prompts):
            ids = [int(hashlib.md5(w.encode()).hexdigest()[:6], 16) % self.vocab for w in p.split()][: self.max_length]
            emb[i, : len(ids)] = self.table[ids]
            mask[i, : len(ids)] = True
        return emb, mask


class TinyAutoencoder(nn.Module):
    """2x average-pool 'encoder' with a scale, nearest-upsample decoder: a cheap latent space."""

    latent_channels, downsample = 3, 2

    def identifier(self) -> str:
        return "tiny-ae-pool2"

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, 2) * 1.5

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.interpolate(latents / 1.5, scale_factor=2, mode="nearest").clamp(-1, 1)


class TinyVelocityModel(ModelMixin, ConfigMixin):
    """A small conv net with the model-call contract: pooled text, one embedding per reward with a learned
    null, a learned null text, and dropout (so resume tests cover the global RNG too)."""

    @register_to_config
    def __init__(self, in_channels: int = 3, text_dim: int = 8, reward_names: list[str] | tuple = (), hidden: int = 32,
                 dropout: float = 0.1):
        super().__init__()
        r = len(reward_names)
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.time = nn.Linear(1, hidden)
        self.text_proj = nn.Linear(text_dim, hidden)
        self.null_text = nn.Parameter(torch.zeros(hidden))
        self.reward_scale = nn.Parameter(torch.randn(r, hidden) * 0.1)
        self.reward_shift = nn.Parameter(torch.zeros(r, hidden))
        self.null_rewards = nn.Parameter(torch.zeros(r, hidden))
        self.norm = nn.GroupNorm(4, hidden)
        self.drop = nn.Dropout(dropout)
        self.conv_out = nn.Conv2d(hidden, in_channels, 3, padding=1)

    def forward(self, x, t, text, text_mask, rewards=None, reward_mask=None, drop_text=None):
        cond = self.time(t[:, None].to(x.dtype))
        m = text_mask[..., None].to(x.dtype)
        pooled = (self.text_proj(text) * m).sum(1) / m.sum(1).clamp(min=1)
        if drop_text is not None:
            pooled = torch.where(drop_text[:, None], self.null_text[None], pooled)
        cond = cond + pooled
        if self.config.reward_names:
            emb = rewards[..., None] * self.reward_scale[None] + self.reward_shift[None]
            if reward_mask is not None:
                emb = torch.where(reward_mask[..., None], emb, self.null_rewards[None])
            cond = cond + emb.sum(1)
        h = F.silu(self.norm(self.conv_in(x) + cond[:, :, None, None]))
        return self.conv_out(self.drop(h))
