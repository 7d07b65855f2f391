"""``hpsv2``: Human Preference Score v2 / v2.1 (xswu/HPSv2) on open_clip's ViT-H-14.

The checkpoint is ``{'state_dict': ...}`` in fp16 with open_clip key names; it is loaded into
``open_clip.create_model(arch)`` in float32 and every key is checked.  Preprocessing is HPS's own pad-to-square
(``annotate.scorers.transforms.HPSPadSquare``); the score is the cosine of the L2-normalised image and text
features, with no logit scale (about 0.25-0.35; benchmark tables print x100).  v2.0 and v2.1 are different
weights and their scores are not comparable, so the version is part of the provenance.  The PyPI ``hpsv2``
package is not used (broken packaging, downloads at every call).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from annotate.scorers.base import Item, Scorer, as_float64, text_mask_nan
from annotate.scorers.transforms import HPSPadSquare
from miro.utils.config import require, require_choice, to_typed
from miro.utils.weights import check_keys, file_record, package_versions, resolve_file

CHECKPOINTS = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
SOURCE = "the Hugging Face repo xswu/HPSv2"


@dataclass
class HPSv2Config:
    version: str = "v2.1"
    checkpoint: str | None = None  # null: hf://xswu/HPSv2/<the version's file>
    arch: str = "ViT-H-14"  # open_clip model config name
    download: bool = False
    batch_size: int = 16

    def __post_init__(self):
        require_choice("version", self.version, list(CHECKPOINTS))
        require(self.batch_size > 0, "batch_size", self.batch_size, "must be a positive integer")

    @property
    def checkpoint_spec(self) -> str:
        return self.checkpoint or f"hf://xswu/HPSv2/{CHECKPOINTS[self.version]}"


class HPSPrep:
    """Picklable: HPS pad-to-square image preprocessing and open_clip tokenisation."""

    def __init__(self, tokenizer, image_size: int):
        self.tokenizer, self.transform = tokenizer, HPSPadSquare(image_size)

    def __call__(self, image, prompt: str | None) -> Item:
        return {
            "pixel_values": self.transform(image),
            "input_ids": self.tokenizer([prompt or ""])[0],
            "has_prompt": torch.tensor(prompt is not None),
        }


class HPSv2Scorer(Scorer):
    name = "hpsv2"
    outputs = ("hpsv2",)
    text_outputs = frozenset({"hpsv2"})

    def __init__(self, model, tokenizer, config: HPSv2Config, files: list[dict] | None = None):
        self.model, self.tokenizer, self.config, self.files = model.eval(), tokenizer, config, files or []
        self.batch_size = config.batch_size
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    def preprocessor(self) -> HPSPrep:
        return HPSPrep(self.tokenizer, self.image_size)

    @torch.inference_mode()
    def forward(self, batch) -> dict[str, np.ndarray]:
        img = self.model.encode_image(batch["pixel_values"].to(self.device, self.dtype))
        txt = self.model.encode_text(batch["input_ids"].to(self.device))
        img = torch.nn.functional.normalize(img.float(), dim=-1)
        txt = torch.nn.functional.normalize(txt.float(), dim=-1)
        return {self.name: text_mask_nan(as_float64((img * txt).sum(-1)), batch.get("has_prompt"))}

    def provenance(self) -> dict:
        return {
            "model": f"xswu/HPSv2 {self.config.version} ({self.config.arch})",
            "implementation": "annotate.scorers.hpsv2 (open_clip)",
            "version": self.config.version,
            "weights": self.files,
            "packages": package_versions("open_clip_torch", "torchvision", "pillow"),
            "config": asdict(self.config),
        }


def load_open_clip(arch: str, checkpoint, what: str):
    """``open_clip.create_model(arch)`` filled from a checkpoint through open_clip's own loader, keys checked."""
    import open_clip

    model = open_clip.create_model(arch, pretrained=None, precision="fp32", device="cpu")
    try:
        res = open_clip.load_checkpoint(model, str(checkpoint), strict=False, weights_only=True)
    except RuntimeError as err:  # shape mismatches: wrong architecture for this checkpoint
        raise RuntimeError(f"{what} ({checkpoint}) does not fit open_clip {arch!r}: {err}") from None
    check_keys(f"{what} ({checkpoint})", res.missing_keys, res.unexpected_keys, (r"position_ids$",))
    return model.float().eval()


def from_config(cfg: HPSv2Config) -> HPSv2Scorer:
    import open_clip

    require_choice("arch", cfg.arch, open_clip.list_models())
    ckpt = resolve_file(cfg.checkpoint_spec, what=f"HPS{cfg.version} checkpoint", source=SOURCE, download=cfg.download, key="rewards.hpsv2.checkpoint")
    model = load_open_clip(cfg.arch, ckpt, f"HPS{cfg.version} checkpoint")
    return HPSv2Scorer(model, open_clip.get_tokenizer(cfg.arch), cfg, [file_record(ckpt, "checkpoint")])


SETTINGS = HPSv2Config  # the schema of miro/conf/rewards/hpsv2.yaml


def build(**cfg) -> HPSv2Scorer:
    return from_config(to_typed(cfg, HPSv2Config))
