"""Small real components for the training tests: the real ``MiroTransformer`` at a tiny size, the real
autoencoders (identity; a tiny random-weight ``AutoencoderKL`` saved and loaded through ``KLAutoencoder``),
and a hash-embedding text encoder that honours the ``TextEncoder`` contract without loading MiniLM
(the real MiniLM path is covered by the command-line end-to-end test).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from miro.models.autoencoders import KLAutoencoder
from tests.models.helpers import randomize_, save_tiny_vae, tiny_model


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


def tiny_kl_autoencoder(folder: Path) -> KLAutoencoder:
    """A 4-channel, 2x-downsampling VAE through the production loader (written once per folder)."""
    if not (folder / "config.json").is_file():
        save_tiny_vae(folder)
    return KLAutoencoder(str(folder))


def tiny_transformer(reward_names: list[str], in_channels: int = 3, sample_size: int = 16, seed: int = 0):
    model = tiny_model(in_channels=in_channels, sample_size=sample_size, text_dim=8, reward_names=list(reward_names),
                       num_registers=0)
    return randomize_(model, seed=seed, std=0.05) if seed else model
