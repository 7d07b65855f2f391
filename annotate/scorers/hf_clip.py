"""Loading a transformers ``CLIPModel`` folder and its processor (PickScore, OpenAI CLIP ViT-L/14).

Images go through the folder's ``CLIPImageProcessor`` settings on the PIL backend, which is what the original
scorers ran (transformers 4.x's CLIP processor, ``clip.load``'s torchvision-on-PIL transform); transformers 5's
default torchvision-tensor backend differs by up to 0.015 in normalised pixels.

What comes before the processor is the official order of each model (``ClipPrep.pre``): PickScore's processor
(transformers 4.27.3) converts to RGB first with PIL's plain ``convert("RGB")`` (transformers 5 composites
transparency on white instead, so the conversion is done here, before it); OpenAI CLIP's ``clip.load`` (CLIP
score, the aesthetic predictor) resizes and crops in the image's own mode and converts last
(``openai_geometry``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from annotate.scorers.base import Item
from annotate.scorers.transforms import convert_rgb
from miro.utils.weights import check_keys, file_record, hf_weight_files

log = logging.getLogger(__name__)

HARMLESS = (r"position_ids$",)
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def load_clip_model(folder: Path, what: str):
    """``CLIPModel.from_pretrained`` in float32, failing loudly on any key that did not load."""
    from transformers import CLIPModel

    model, info = CLIPModel.from_pretrained(str(folder), output_loading_info=True)
    check_keys(f"{what} ({folder})", info.get("missing_keys", ()), info.get("unexpected_keys", ()), HARMLESS, info.get("mismatched_keys", ()))
    return model.float().eval(), [file_record(p, "model") for p in hf_weight_files(folder)]


def load_image_processor(folder: Path, what: str, source: str):
    """The folder's image processor; ``FileNotFoundError`` naming ``what`` and where it comes from if it has none."""
    import transformers
    from transformers import AutoImageProcessor

    if not any((folder / f).is_file() for f in _PROCESSOR_FILES):
        raise FileNotFoundError(f"{what}: no preprocessor_config.json in {folder}; it comes from {source}")
    if int(transformers.__version__.split(".")[0]) >= 5:
        return AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    return AutoImageProcessor.from_pretrained(str(folder), use_fast=False)


def load_tokenizer(folder: Path, max_length: int):
    """The folder's CLIP tokenizer, or the CLIP BPE vocabulary open_clip ships when the folder has none."""
    from transformers import AutoTokenizer

    if any((folder / f).is_file() for f in _TOKENIZER_FILES):
        return AutoTokenizer.from_pretrained(str(folder)), "folder"
    from miro.utils.clip_tokenizer import load_clip_tokenizer

    log.info("%s has no tokenizer files; using the CLIP BPE vocabulary shipped with open_clip", folder)
    return load_clip_tokenizer(max_length), "open_clip bpe_simple_vocab_16e6"


def pooled(out) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4.x and a ModelOutput in 5.x."""
    return out if torch.is_tensor(out) else out.pooler_output


def openai_geometry(image_processor):
    """``clip.load``'s resize and centre crop in the image's own mode, then RGB, with the processor's sizes (the
    processor then finds a ``crop`` x ``crop`` RGB image and only rescales and normalises it)."""
    from annotate.scorers.transforms import center_crop_geometry

    size = image_processor.size
    crop = image_processor.crop_size
    short = size["shortest_edge"] if "shortest_edge" in size else min(size["height"], size["width"])
    return center_crop_geometry(int(short), int(crop["height"]) if crop else None)


class ClipPrep:
    """Picklable CLIP preprocessing: ``pre`` (the official order's RGB conversion, and for OpenAI CLIP its resize
    and crop), the folder's image processor (PIL backend) and the tokenizer."""

    def __init__(self, image_processor, tokenizer, max_length: int, with_text: bool = True, pre=convert_rgb):
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.max_length, self.with_text, self.pre = max_length, with_text, pre

    def __call__(self, image, prompt: str | None) -> Item:
        item: Item = {"pixel_values": self.image_processor(images=self.pre(image), return_tensors="pt")["pixel_values"][0]}
        if self.with_text:
            tok = self.tokenizer(prompt or "", padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
            item["input_ids"] = tok["input_ids"][0]
            item["attention_mask"] = tok["attention_mask"][0]
            item["has_prompt"] = torch.tensor(prompt is not None)
        return item


def clip_embeddings(model, batch: dict, device, dtype, with_text: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """L2-normalised float32 image (and text) embeddings of a collated ``ClipPrep`` batch."""
    img = pooled(model.get_image_features(pixel_values=batch["pixel_values"].to(device, dtype)))
    img = torch.nn.functional.normalize(img.float(), dim=-1)
    if not with_text:
        return img, None
    txt = pooled(model.get_text_features(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)))
    return img, torch.nn.functional.normalize(txt.float(), dim=-1)
