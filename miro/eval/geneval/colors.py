"""GenEval's colour classifier: zero-shot CLIP over ten colours on each detected object.

As in GenEval's ``evaluate_images.py``: the image is composited with the instance mask over a grey
``#999999`` background and cropped to the box, passed through the CLIP val transform, and classified
against a zero-shot head built like clip_benchmark's ``zero_shot_classifier`` (per colour, the normalised
mean of the normalised text embeddings of three templates, then normalised again).

The model is OpenAI CLIP ViT-L/14, which uses QuickGELU.  GenEval loaded it with open_clip 2.20 as
``("ViT-L-14", "openai")``, which switched to QuickGELU by itself; open_clip 3.x no longer does (it only
warns, and runs the OpenAI weights with plain GELU: wrong features).  Hence the default architecture
``ViT-L-14-quickgelu`` and ``force_quick_gelu=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from miro.contracts.geneval_rules import COLORS
from miro.utils.weights import WeightsNotFoundError

log = logging.getLogger(__name__)

CLIP_MODEL = "ViT-L-14-quickgelu"
CLIP_PRETRAINED = "openai"
BACKGROUND = "#999999"
TEMPLATES = ("a photo of a {c} {classname}", "a photo of a {c}-colored {classname}", "a photo of a {c} object")

MISSING_WEIGHTS_HELP = (
    "GenEval's colour classifier needs OpenAI CLIP ViT-L/14 weights: either in the Hugging Face cache "
    "(open_clip's 'openai' tag reads timm/vit_large_patch14_clip_224.openai) or as a local file passed as "
    "colors.pretrained=/path/to/open_clip_pytorch_model.bin (an open_clip state dict or safetensors file)."
)


class ColorModelUnavailable(WeightsNotFoundError):
    """The CLIP weights for the colour classifier are not on disk."""


def color_templates(classname: str) -> list[str]:
    """GenEval's three templates for one object class, with ``{c}`` left for the colour."""
    return [t.replace("{classname}", classname) for t in TEMPLATES]


@torch.no_grad()
def zero_shot_weights(model, tokenizer, labels: Sequence[str], templates: Sequence[str], device) -> torch.Tensor:
    """clip_benchmark's ``zero_shot_classifier``: ``[D, len(labels)]`` unit columns."""
    columns = []
    for label in labels:
        tokens = tokenizer([t.format(c=label) for t in templates]).to(device)
        emb = F.normalize(model.encode_text(tokens).float(), dim=-1).mean(dim=0)
        columns.append(emb / emb.norm())
    return torch.stack(columns, dim=1)


def composite_crop(image: Image.Image, detection: dict, background: str = BACKGROUND, crop: bool = True) -> Image.Image:
    """The object on grey: pixels outside the mask set to ``background``, then cropped to the box."""
    image = image.convert("RGB")
    mask = detection.get("mask")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (image.height, image.width):
            raise ValueError(f"mask shape {mask.shape} does not match the image size {image.height}x{image.width}")
        image = Image.composite(image, Image.new("RGB", image.size, background), Image.fromarray(mask))
    if crop:
        cropped = image.crop(tuple(detection["box"][:4]))
        if cropped.width > 0 and cropped.height > 0:  # an empty mask has a zero box: keep the whole image
            image = cropped
    return image


class ColorClassifier:
    """``classify(image, detections, classname) -> [colour per detection]``, the callable GenEval's rules use."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess,
        tokenizer,
        colors: Sequence[str] = COLORS,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        background: str = BACKGROUND,
        crop: bool = True,
        amp: bool = True,
    ):
        self.model = model.eval().to(device)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.colors = tuple(colors)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.background = background
        self.crop = crop
        self.amp = amp
        self._heads: dict[str, torch.Tensor] = {}

    @classmethod
    def load(
        cls,
        model_name: str = CLIP_MODEL,
        pretrained: str = CLIP_PRETRAINED,
        device: str | torch.device = "cpu",
        force_quick_gelu: bool = True,
        cache_dir: str | None = None,
        **kwargs,
    ) -> ColorClassifier:
        """open_clip model + val transform + tokenizer; ``pretrained`` is a tag ("openai") or a weight file."""
        import open_clip

        looks_like_path = any(sep in pretrained for sep in ("/", "\\")) or Path(pretrained).suffix != ""
        if looks_like_path and not Path(pretrained).expanduser().is_file():
            raise ColorModelUnavailable(f"CLIP weight file not found: {pretrained}.  {MISSING_WEIGHTS_HELP}")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=str(Path(pretrained).expanduser()) if looks_like_path else pretrained,
                force_quick_gelu=force_quick_gelu,
                cache_dir=cache_dir,
                require_pretrained=True,
            )
        except RuntimeError as err:
            raise ColorModelUnavailable(f"cannot load CLIP {model_name} ({pretrained}): {err}.  {MISSING_WEIGHTS_HELP}") from None
        return cls(model, preprocess, open_clip.get_tokenizer(model_name), device=device, **kwargs)

    def head(self, classname: str) -> torch.Tensor:
        """The zero-shot colour head for one object class (cached)."""
        if classname not in self._heads:
            with self._autocast():
                self._heads[classname] = zero_shot_weights(
                    self.model, self.tokenizer, self.colors, color_templates(classname), self.device
                )
        return self._heads[classname]

    def classify(self, image: Image.Image, detections: Sequence[dict], classname: str) -> list[str]:
        return self.classify_many([(image, detections, classname)])[0]

    @torch.no_grad()
    def classify_many(self, requests: Sequence[tuple[Image.Image, Sequence[dict], str]]) -> list[list[str]]:
        """Colours for several (image, detections, class) requests, crops batched across requests."""
        crops, owners = [], []
        for r, (image, detections, classname) in enumerate(requests):
            for det in detections:
                crops.append(composite_crop(image, det, self.background, self.crop))
                owners.append((r, classname))
        out: list[list[str]] = [[] for _ in requests]
        for start in range(0, len(crops), self.batch_size):
            pixels = torch.stack([self.preprocess(c) for c in crops[start : start + self.batch_size]]).to(self.device)
            with self._autocast():
                feats = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
            for feat, (r, classname) in zip(feats, owners[start : start + self.batch_size]):
                out[r].append(self.colors[int((feat @ self.head(classname)).argmax())])
        return out

    def _autocast(self):
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda")
        return nullcontext()
