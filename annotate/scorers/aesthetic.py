"""``aesthetic``: the LAION improved-aesthetic-predictor v2 head on the OpenAI CLIP ViT-L/14 image embedding.

Head: Linear 768-1024-128-64-16-1 with dropout and no activations (keys ``layers.{0,2,4,6,7}``), fed the
L2-normalised projected image embedding, output on a roughly 1-10 scale.  Built together with ``clip_score``
on one ViT-L/14 image forward pass (``annotate.scorers.clip_l``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from annotate.scorers.heads import MLPHead
from annotate.scorers.weights import file_record, load_checked, resolve_file
from miro.utils.config import require

log = logging.getLogger(__name__)

HEAD_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"
KNOWN_HEADS = {
    "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0": "sac+logos+ava1-l14-linearMSE.pth",
}


@dataclass
class AestheticConfig:
    clip_model: str = "hf://openai/clip-vit-large-patch14"
    head: str = "~/.cache/miro/weights/sac+logos+ava1-l14-linearMSE.pth"
    download: bool = False
    batch_size: int = 32

    def __post_init__(self):
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")


def load_aesthetic_head(path: str | Path) -> tuple[MLPHead, dict]:
    """The MLP from a ``.pth`` state dict (input width read from ``layers.0.weight``), every key checked."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if "layers.0.weight" not in sd:
        raise KeyError(f"aesthetic head {path}: no 'layers.0.weight'; keys are {sorted(sd)[:10]}")
    mlp = MLPHead(sd["layers.0.weight"].shape[1])
    load_checked(mlp, {k: v.float() for k, v in sd.items()}, f"aesthetic head {path}")
    record = file_record(Path(path), "aesthetic_head")
    record["known_as"] = KNOWN_HEADS.get(record["sha256"])
    if record["known_as"] is None:
        log.warning("aesthetic head %s (sha256 %s) is not the published sac+logos+ava1 head", path, record["sha256"])
    return mlp.eval(), record


def resolve_head(cfg: AestheticConfig) -> Path:
    return resolve_file(cfg.head, what="LAION aesthetic head", source=f"{HEAD_URL} (sha256 21dd590f...f1e0)", download=cfg.download, key="rewards.aesthetic.head")


SETTINGS = AestheticConfig  # the schema of miro/conf/rewards/aesthetic.yaml


def build(**cfg):
    from annotate.scorers.clip_l import build_clip_l

    return build_clip_l(aesthetic=cfg)
