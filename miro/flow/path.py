"""The linear (rectified-flow) probability path; see ``miro.flow`` for the time convention."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PathSample:
    """A point on the path and what the network should predict there."""

    x_t: torch.Tensor
    t: torch.Tensor  # [B], noise level in [0, 1]
    target: torch.Tensor  # velocity eps - x_0
    x_0: torch.Tensor
    noise: torch.Tensor


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


class LinearPath:
    """x_t = (1 - t) x_0 + t eps, velocity eps - x_0."""

    def sample(self, x_0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> PathSample:
        if noise is None:
            noise = torch.randn_like(x_0)
        if t.shape != (x_0.shape[0],):
            raise ValueError(f"t must have shape [batch]={x_0.shape[0]}, got {tuple(t.shape)}")
        te = _expand(t, x_0)
        x_t = (1 - te) * x_0 + te * noise
        return PathSample(x_t=x_t, t=t, target=noise - x_0, x_0=x_0, noise=noise)
