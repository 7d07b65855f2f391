"""``clip_score``: raw cosine between OpenAI CLIP ViT-L/14 (QuickGELU) image and text embeddings.

The raw cosine is stored (about 0.15-0.40 for real captions).  torchmetrics' ``CLIPScore`` reports
``max(100 * cosine, 0)`` with the same default model (``openai/clip-vit-large-patch14``): use
``torchmetrics_convention`` to compare.  The image forward is shared with ``aesthetic`` (``annotate.scorers.clip_l``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miro.utils.config import require


@dataclass
class ClipScoreConfig:
    model: str = "hf://openai/clip-vit-large-patch14"
    max_length: int = 77
    download: bool = False
    batch_size: int = 32

    def __post_init__(self):
        require(0 < self.max_length <= 77, "max_length", self.max_length, "must be in 1..77 (CLIP's context)")
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")


def torchmetrics_convention(raw_cosine: np.ndarray) -> np.ndarray:
    """torchmetrics ``CLIPScore`` per sample: ``max(100 * cos, 0)`` (NaN stays NaN)."""
    return np.maximum(100.0 * np.asarray(raw_cosine, dtype=np.float64), 0.0)


SETTINGS = ClipScoreConfig  # the schema of miro/conf/rewards/clip_score.yaml


def build(**cfg):
    from annotate.scorers.clip_l import build_clip_l

    return build_clip_l(clip_score=cfg)
