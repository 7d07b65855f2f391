"""``jina_clip``: the MIRO authors' CLIP score, on ``jinaai/jina-clip-v2`` (long captions, up to 1024 tokens).

As their ``data/preprocess_data.py``: ``AutoModel`` / ``AutoTokenizer`` / ``AutoImageProcessor`` of the repo,
the images (RGB) through the repo's image processor, the captions tokenised with ``truncation=True``,
``padding="longest"`` (within the batch) and ``max_length=1024``, one ``model(**pixels, **tokens)`` call and the
diagonal of ``logits_per_image`` (logit scale x cosine, about 100 x cosine).  That raw value is stored; the
authors store ``/100`` (``miro.contracts.rewards.author_value``) and ran the model in bf16 (``dtype=bfloat16``).

jina-CLIP v2 is implemented in the repo's own Python code, so loading it runs code downloaded with the weights
(transformers' ``trust_remote_code``).  That is never done silently: ``trust_remote_code: true`` in the reward's
settings is the user's consent, and without it building the scorer raises an error saying so.  The remote code
imports packages this project does not install (``einops``, ``timm``; ``xformers`` / flash-attention optional);
a missing one is reported with the install line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from annotate.scorers.base import Item, Scorer, as_float64, text_mask_nan
from annotate.scorers.transforms import convert_rgb
from miro.utils.config import ConfigError, require, to_typed
from miro.utils.weights import file_record, hf_weight_files, package_versions, resolve_dir

SOURCE = (
    "the Hugging Face repo jinaai/jina-clip-v2 (weights, its modelling code, tokenizer and processor files)"
)
REMOTE_CODE_PACKAGES = "pip install einops timm"


@dataclass
class JinaClipConfig:
    """The schema of ``conf/rewards/jina_clip.yaml``."""

    model: str = "hf://jinaai/jina-clip-v2"
    trust_remote_code: bool = False  # the user's consent to run the repo's own modelling code
    max_length: int = 1024
    download: bool = False
    batch_size: int = 16

    def __post_init__(self):
        require(
            0 < self.max_length <= 8192,
            "max_length",
            self.max_length,
            "must be in 1..8192 (jina-CLIP v2's text context; the authors use 1024)",
        )
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")


class JinaPrep:
    """Picklable: RGB image through the repo's image processor, caption token ids (unpadded; padded per batch)."""

    def __init__(self, image_processor, tokenizer, max_length: int):
        self.image_processor, self.tokenizer, self.max_length = image_processor, tokenizer, max_length

    def __call__(self, image, prompt: str | None) -> Item:
        tok = self.tokenizer(prompt or "", truncation=True, max_length=self.max_length, return_tensors="pt")
        return {
            "pixel_values": self.image_processor(convert_rgb(image), return_tensors="pt")["pixel_values"][0],
            "input_ids": tok["input_ids"][0],
            "has_prompt": torch.tensor(prompt is not None),
        }


def right_pad(rows, value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``padding="longest"``: ids padded on the right to the batch's longest, and the attention mask."""
    rows = list(rows) if isinstance(rows, list) else list(rows.unbind(0))
    ids = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=rows[0].dtype)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask


class JinaClipScorer(Scorer):
    name = "jina_clip"
    outputs = ("jina_clip",)
    text_outputs = frozenset({"jina_clip"})

    def __init__(
        self, model, image_processor, tokenizer, cfg: JinaClipConfig, files: list[dict] | None = None
    ):
        self.model, self.image_processor, self.tokenizer = model.eval(), image_processor, tokenizer
        self.config, self.files, self.batch_size = cfg, files or [], cfg.batch_size

    def preprocessor(self) -> JinaPrep:
        return JinaPrep(self.image_processor, self.tokenizer, self.config.max_length)

    @torch.inference_mode()
    def forward(self, batch) -> dict[str, np.ndarray]:
        ids, mask = right_pad(batch["input_ids"], self.tokenizer.pad_token_id or 0)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            pixel_values=batch["pixel_values"].to(self.device, self.dtype),
        )
        return {
            self.name: text_mask_nan(
                as_float64(out.logits_per_image.float().diagonal()), batch.get("has_prompt")
            )
        }

    def provenance(self) -> dict:
        return {
            "model": "jinaai/jina-clip-v2",
            "implementation": "annotate.scorers.jina_clip (the repo's remote code through transformers AutoModel)",
            "weights": self.files,
            "packages": package_versions("transformers", "pillow", "einops", "timm"),
            "config": asdict(self.config),
        }


def from_config(cfg: JinaClipConfig) -> JinaClipScorer:
    if not cfg.trust_remote_code:
        raise ConfigError(
            "rewards.jina_clip.trust_remote_code=False: jina-CLIP v2 (jinaai/jina-clip-v2) is implemented in its repository's own "
            "Python code, which transformers runs only with trust_remote_code.  Set rewards.jina_clip.trust_remote_code=true to "
            f"allow it (its code also needs: {REMOTE_CODE_PACKAGES})"
        )
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    folder = resolve_dir(
        cfg.model, what="jina-CLIP v2", source=SOURCE, download=cfg.download, key="rewards.jina_clip.model"
    )
    try:
        model = AutoModel.from_pretrained(str(folder), trust_remote_code=True)
        image_processor = AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=True)
    except ImportError as err:
        raise ImportError(
            f"jina-CLIP v2's remote code needs a package that is not installed ({err}): {REMOTE_CODE_PACKAGES}"
        ) from err
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return JinaClipScorer(
        model.float(),
        image_processor,
        tokenizer,
        cfg,
        [file_record(p, "model") for p in hf_weight_files(folder)],
    )


SETTINGS = JinaClipConfig


def build(**cfg) -> JinaClipScorer:
    return from_config(to_typed(cfg, JinaClipConfig))
