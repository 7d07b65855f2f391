"""``pickscore``: PickScore v1 (yuvalkirstain/PickScore_v1), a CLIP ViT-H/14 fine-tuned on Pick-a-Pic.

As in the PickScore README: the laion CLIP-ViT-H-14 processor (shortest side 224 bicubic, centre crop, OpenAI
normalisation; 77 tokens), L2-normalised ``get_image_features`` / ``get_text_features``, and
score = ``logit_scale.exp() * cosine`` (about 20-23 for real images; logit_scale.exp() is about 100).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from annotate.scorers.base import Scorer, as_float64, text_mask_nan
from annotate.scorers.hf_clip import (
    ClipPrep,
    clip_embeddings,
    load_clip_model,
    load_image_processor,
    load_tokenizer,
)
from miro.utils.config import require, to_typed
from miro.utils.weights import package_versions, resolve_dir

MODEL_SOURCE = "the Hugging Face repo yuvalkirstain/PickScore_v1"
PROCESSOR_SOURCE = "the Hugging Face repo laion/CLIP-ViT-H-14-laion2B-s32B-b79K (processor and tokenizer files)"


@dataclass
class PickScoreConfig:
    model: str = "hf://yuvalkirstain/PickScore_v1"
    processor: str = "hf://laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    max_length: int = 77
    download: bool = False
    batch_size: int = 16

    def __post_init__(self):
        require(0 < self.max_length <= 77, "max_length", self.max_length, "must be in 1..77 (CLIP's context)")
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")


class PickScoreScorer(Scorer):
    """``logit_scale.exp() * cosine`` of a CLIPModel folder; SciScore (``annotate.scorers.sciscore``) is the same
    computation on other weights and subclasses this with its own name and model id."""

    name = "pickscore"
    outputs = ("pickscore",)
    text_outputs = frozenset({"pickscore"})
    model_id = "yuvalkirstain/PickScore_v1"

    def __init__(self, model, image_processor, tokenizer, config: PickScoreConfig, files: list[dict] | None = None, tokenizer_source: str = "folder"):
        self.model, self.image_processor, self.tokenizer = model.eval(), image_processor, tokenizer
        self.config, self.files, self.tokenizer_source = config, files or [], tokenizer_source
        self.batch_size = config.batch_size

    def preprocessor(self) -> ClipPrep:
        return ClipPrep(self.image_processor, self.tokenizer, self.config.max_length)

    @torch.inference_mode()
    def forward(self, batch) -> dict[str, np.ndarray]:
        img, txt = clip_embeddings(self.model, batch, self.device, self.dtype)
        s = self.model.logit_scale.float().exp() * (img * txt).sum(-1)
        return {self.name: text_mask_nan(as_float64(s), batch.get("has_prompt"))}

    def provenance(self) -> dict:
        return {
            "model": self.model_id,
            "implementation": f"annotate.scorers.{self.name} (transformers CLIPModel)",
            "weights": self.files,
            "tokenizer": self.tokenizer_source,
            "packages": package_versions("transformers", "pillow"),
            "config": asdict(self.config),
        }


def load_logit_scorer(cls: type[PickScoreScorer], cfg, what: str, model_source: str, processor_source: str) -> PickScoreScorer:
    """``cls`` on the CLIPModel folder ``cfg.model`` with the processor and tokenizer of ``cfg.processor``."""
    key = f"rewards.{cls.name}"
    folder = resolve_dir(cfg.model, what=f"{what} model", source=model_source, download=cfg.download, key=f"{key}.model")
    pfolder = resolve_dir(cfg.processor, what=f"{what} processor", source=processor_source, download=cfg.download, key=f"{key}.processor")
    model, files = load_clip_model(folder, what)
    image_processor = load_image_processor(pfolder, f"{what} processor", processor_source)
    tokenizer, tok_source = load_tokenizer(pfolder, cfg.max_length)
    return cls(model, image_processor, tokenizer, cfg, files, tok_source)


def from_config(cfg: PickScoreConfig) -> PickScoreScorer:
    return load_logit_scorer(PickScoreScorer, cfg, "PickScore", MODEL_SOURCE, PROCESSOR_SOURCE)


SETTINGS = PickScoreConfig  # the schema of miro/conf/rewards/pickscore.yaml


def build(**cfg) -> PickScoreScorer:
    return from_config(to_typed(cfg, PickScoreConfig))
