"""Time, reward and position embeddings of the transformer."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_features(t: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of ``scale * t`` ([B] -> [B, dim]; cos then sin, as DiT).

    t in [0, 1] is scaled by 1000 so the frequencies span the same range as for DDPM's integer steps.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (scale * t.float())[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoidal features of t*1000 -> Linear, SiLU, Linear."""

    def __init__(self, dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        feats = timestep_features(t, self.frequency_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(feats)


class RewardEmbedder(nn.Module):
    """One token per reward, as MIRO: value in [0, 1] -> random Fourier features -> that reward's own MLP.

    Each reward has its own frozen frequencies and its own 2-layer MLP (stored stacked, run as one batched
    matmul), a learned position embedding, and a learned null token that replaces the MLP output wherever
    ``mask`` is False (dropped or unknown reward).  Values under a False mask are ignored, even NaN.
    The frequencies are a persistent buffer drawn from a fixed seed, so a checkpoint carries them.
    """

    def __init__(self, num_rewards: int, dim: int, fourier_dim: int = 256, fourier_scale: float = 1.0, seed: int = 0):
        super().__init__()  # the arguments are checked where they are given: MiroTransformer.check_arguments
        gen = torch.Generator().manual_seed(seed)
        freqs = torch.randn(num_rewards, fourier_dim // 2, generator=gen, device="cpu") * fourier_scale
        self.register_buffer("freqs", freqs)
        self.w1 = nn.Parameter(torch.empty(num_rewards, fourier_dim, dim))
        self.b1 = nn.Parameter(torch.zeros(num_rewards, 1, dim))
        self.w2 = nn.Parameter(torch.empty(num_rewards, dim, dim))
        self.b2 = nn.Parameter(torch.zeros(num_rewards, 1, dim))
        self.null = nn.Parameter(torch.zeros(num_rewards, dim))
        self.pos = nn.Parameter(torch.zeros(num_rewards, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in (self.w1, self.w2):  # xavier-uniform per reward, as nn.Linear layers would get
            bound = math.sqrt(6.0 / (w.shape[1] + w.shape[2]))
            nn.init.uniform_(w, -bound, bound)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)
        nn.init.trunc_normal_(self.null, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)

    @property
    def num_rewards(self) -> int:
        return self.freqs.shape[0]

    def fourier_features(self, values: torch.Tensor) -> torch.Tensor:
        """[B, R] -> [R, B, F]: cos and sin of 2 pi f v (the layout the batched per-reward MLP wants)."""
        ang = (2 * math.pi) * values.float().t()[:, :, None] * self.freqs[:, None, :]
        return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """values [B, R] in [0, 1], mask [B, R] bool -> tokens [B, R, D]."""
        values = torch.where(mask, values, torch.zeros_like(values))
        feats = self.fourier_features(values).to(self.w1.dtype)
        h = torch.nn.functional.silu(torch.baddbmm(self.b1, feats, self.w1))
        out = torch.baddbmm(self.b2, h, self.w2).transpose(0, 1)  # [B, R, D]
        null = self.null.to(out.dtype)
        return torch.where(mask[:, :, None], out, null[None]) + self.pos.to(out.dtype)


def sincos_2d(grid_h: int, grid_w: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding ([grid_h * grid_w, dim], row-major; MAE/DiT layout).

    The first half of the channels encodes the column (x), the second half the row (y).
    """
    if dim % 4:
        raise ValueError(f"width={dim}: the 2D sin-cos position embedding needs a multiple of 4")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, device=device, dtype=torch.float64),
        torch.arange(grid_w, device=device, dtype=torch.float64),
        indexing="ij",
    )

    def _axis(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    return torch.cat([_axis(xs), _axis(ys)], dim=1).to(dtype)
