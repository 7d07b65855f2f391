"""Exponential moving average of the weights, the network used for sampling and the final export."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema <- decay * ema + (1 - decay) * param`` after every optimizer step (never on accumulation
    micro-steps).  With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` after n updates, so
    short runs are not dominated by the initial weights.  Buffers are copied, not averaged.

    Checkpoints hold it as ``ema.safetensors`` (``miro.train.checkpoint``; never pickled).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay={decay}: must be in [0, 1]")
        self.decay, self.warmup, self.num_updates = decay, warmup, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        for p in self.model.parameters():
            p.data = p.data.float()

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach().to(e.dtype) for e, p in zip(ema_params, model.parameters(), strict=True)]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.warmup, self.num_updates = state["decay"], state["warmup"], state["num_updates"]
        self.model.load_state_dict(state["model"])
