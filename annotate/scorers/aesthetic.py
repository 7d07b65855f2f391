"""``aesthetic``: the LAION improved-aesthetic-predictor v2 head on the OpenAI CLIP ViT-L/14 image embedding.

Head: Linear 768-1024-128-64-16-1 with dropout and no activations (keys ``layers.{0,2,4,6,7}``), fed the
L2-normalised projected image embedding, output on a roughly 1-10 scale.  Built together with ``clip_score``
on one ViT-L/14 image forward pass (``annotate.scorers.clip_l``); the head file is found and loaded by
``annotate.scorers.aesthetic_head``, the settings are in ``annotate.scorers.clip_l_config``.
"""

from __future__ import annotations

from annotate.scorers.aesthetic_head import HEAD_URL, KNOWN_HEADS, load_aesthetic_head, resolve_head
from annotate.scorers.clip_l import build_clip_l
from annotate.scorers.clip_l_config import AestheticConfig

__all__ = ["HEAD_URL", "KNOWN_HEADS", "SETTINGS", "AestheticConfig", "build", "load_aesthetic_head", "resolve_head"]

SETTINGS = AestheticConfig  # the schema of miro/conf/rewards/aesthetic.yaml


def build(**cfg):
    return build_clip_l(aesthetic=cfg)
