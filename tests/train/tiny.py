"""Tiny stand-ins that honour the contracts of docs/contracts.md (model call, TextEncoder, Autoencoder).

Used until the real classes of ``miro.models`` are merged; small enough that a training step takes a few ms.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
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
