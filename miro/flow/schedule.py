"""Sampling grids over the noise level t, identical to diffusers' ``FlowMatchEulerDiscreteScheduler``."""

from __future__ import annotations

import numpy as np
import torch


def shift_time(t, shift: float):
    """SD3's resolution shift t' = s t / (1 + (s - 1) t); s > 1 spends more steps at high noise."""
    return shift * t / (1 + (shift - 1) * t)


def flow_sigmas(num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The ``num_steps + 1`` noise levels (ending in 0) that the diffusers scheduler steps through.

    Reproduces ``FlowMatchEulerDiscreteScheduler(num_train_timesteps, shift).set_timesteps(num_steps)``
    (static shifting; the endpoints come from the shifted training grid, then the linspace is shifted again,
    exactly as diffusers does).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}: must be >= 1")
    train = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1] / num_train_timesteps
    train = shift * train / (1 + (shift - 1) * train)
    sigma_max, sigma_min = float(train[0]), float(train[-1])
    ts = np.linspace(sigma_max * num_train_timesteps, sigma_min * num_train_timesteps, num_steps)
    sigmas = ts / num_train_timesteps
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    sigmas = torch.from_numpy(sigmas).to(torch.float32)
    return torch.cat([sigmas, torch.zeros(1)])
