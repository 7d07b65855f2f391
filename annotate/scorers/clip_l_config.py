"""The settings of the two rewards computed on one OpenAI CLIP ViT-L/14 forward: ``clip_score`` and ``aesthetic``.

They live apart from the reward modules and from the shared scorer (``annotate.scorers.clip_l``) so the import
graph stays one-way: ``clip_score`` / ``aesthetic`` -> ``clip_l`` -> ``clip_l_config`` / ``aesthetic_head``.
"""

from __future__ import annotations

from dataclasses import dataclass

from miro.utils.config import require


@dataclass
class ClipScoreConfig:
    """The schema of ``conf/rewards/clip_score.yaml``."""

    model: str = "hf://openai/clip-vit-large-patch14"
    max_length: int = 77
    download: bool = False
    batch_size: int = 32

    def __post_init__(self):
        require(0 < self.max_length <= 77, "max_length", self.max_length, "must be in 1..77 (CLIP's context)")
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")


@dataclass
class AestheticConfig:
    """The schema of ``conf/rewards/aesthetic.yaml``."""

    clip_model: str = "hf://openai/clip-vit-large-patch14"
    head: str = "~/.cache/miro/weights/sac+logos+ava1-l14-linearMSE.pth"
    download: bool = False
    batch_size: int = 32

    def __post_init__(self):
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")
