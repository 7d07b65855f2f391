"""``clip_score``: raw cosine between OpenAI CLIP ViT-L/14 (QuickGELU) image and text embeddings.

The raw cosine is stored (about 0.15-0.40 for real captions).  torchmetrics' ``CLIPScore`` reports
``max(100 * cosine, 0)`` with the same default model (``openai/clip-vit-large-patch14``): use
``torchmetrics_convention`` to compare.  The image forward is shared with ``aesthetic`` (``annotate.scorers.clip_l``);
the settings are in ``annotate.scorers.clip_l_config``.
"""

from __future__ import annotations

import numpy as np

from annotate.scorers.clip_l import build_clip_l
from annotate.scorers.clip_l_config import ClipScoreConfig

__all__ = ["SETTINGS", "ClipScoreConfig", "build", "torchmetrics_convention"]


def torchmetrics_convention(raw_cosine: np.ndarray) -> np.ndarray:
    """torchmetrics ``CLIPScore`` per sample: ``max(100 * cos, 0)`` (NaN stays NaN)."""
    return np.maximum(100.0 * np.asarray(raw_cosine, dtype=np.float64), 0.0)


SETTINGS = ClipScoreConfig  # the schema of miro/conf/rewards/clip_score.yaml


def build(**cfg):
    return build_clip_l(clip_score=cfg)
