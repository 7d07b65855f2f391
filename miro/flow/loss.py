"""The flow-matching regression loss and its per-time-bin diagnostic."""

from __future__ import annotations

import torch


def velocity_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample mean squared error between predicted and target velocity ([B]), optionally weighted per sample.

    Computed in fp32 whatever the autocast dtype, so mixed precision does not change the loss value.
    """
    err = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    if weight is not None:
        err = err * weight.float()
    return err


def loss_per_time_bin(loss: torch.Tensor, t: torch.Tensor, num_bins: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of per-sample losses in ``num_bins`` equal bins of t (accumulate, then divide)."""
    idx = (t.detach().float().clamp(0, 1 - 1e-6) * num_bins).long()
    sums = torch.zeros(num_bins, device=loss.device).index_add_(0, idx, loss.detach().float())
    counts = torch.zeros(num_bins, device=loss.device).index_add_(0, idx, torch.ones_like(loss, dtype=torch.float32))
    return sums, counts
