"""The linear MLP head shared by ImageReward and the LAION aesthetic predictor.

Both papers use Linear 768-1024-128-64-16-1 with dropout 0.2, 0.2, 0.1 in between and no activations (the
ReLUs are commented out in both codebases), so the state-dict keys are ``layers.{0,2,4,6,7}`` in both files and
in eval mode the head is one affine map.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_LAYERS = (0, 2, 4, 6, 7)


class MLPHead(nn.Module):
    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
