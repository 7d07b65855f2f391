"""AdamW with decoupled weight decay on matrices only, and a stateless warm-up + cosine learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from miro.utils.config import require, require_choice

SCHEDULES = ("cosine", "constant")
_DECAYED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1  # cosine ends at lr * min_lr_ratio (MIRO: ~0.095)
    grad_clip: float = 2.0  # max global grad norm; 0 disables clipping (the norm is still logged)

    def __post_init__(self):
        require(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        require(all(0 <= b < 1 for b in self.betas), "optim.betas", self.betas, "must be in [0, 1)")
        require(self.eps > 0, "optim.eps", self.eps, "must be > 0")
        require(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        require(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "must be >= 0")
        require_choice("optim.schedule", self.schedule, SCHEDULES)
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        require(self.grad_clip >= 0, "optim.grad_clip", self.grad_clip, "must be >= 0 (0 = no clipping)")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay only on the weight matrices of linear and conv layers; norms, biases, embeddings,
    learned tokens and null embeddings are not decayed."""
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, _DECAYED)}
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if id(p) in decayed]
    rest = [p for p in params if id(p) not in decayed]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """On CUDA the fused AdamW kernel: one launch per step instead of a dozen per parameter group, which is
    most of an optimizer step for the small models of this project (they are launch-bound on a GPU)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                             fused=fused or None)  # fmt: skip


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up to ``lr`` over ``warmup_steps``
    (the first step uses lr / warmup_steps), then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
    low = cfg.lr * cfg.min_lr_ratio
    return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
