"""One OpenAI CLIP ViT-L/14 image forward for both ``clip_score`` and ``aesthetic``.

The two rewards use the same image embedding (A6 of the reward notes), so when both are requested one scorer
fills both columns: image tower once, text tower only for ``clip_score``, the aesthetic MLP on the normalised
embedding (in float32, as the original).  Images follow ``clip.load``'s order (the OpenAI CLIP package, and the
aesthetic predictor's ``simple_inference.py``): resize and crop in the image's own mode, RGB last.  The reward modules ``clip_score`` and ``aesthetic`` import this one; it
imports only their settings (``clip_l_config``) and the head loader (``aesthetic_head``), never them.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from annotate.scorers.aesthetic_head import load_aesthetic_head, resolve_head
from annotate.scorers.base import MultiOutputScorer, as_float64, text_mask_nan
from annotate.scorers.clip_l_config import AestheticConfig, ClipScoreConfig
from annotate.scorers.heads import MLPHead
from annotate.scorers.hf_clip import (
    ClipPrep,
    clip_embeddings,
    load_clip_model,
    load_image_processor,
    load_tokenizer,
    openai_geometry,
)
from miro.utils.config import ConfigError, to_typed
from miro.utils.weights import package_versions, resolve_dir

CLIP_SOURCE = "the Hugging Face repo openai/clip-vit-large-patch14"


class ClipLScorer(MultiOutputScorer):
    text_outputs = frozenset({"clip_score"})

    def __init__(
        self,
        model,
        image_processor,
        tokenizer,
        outputs: tuple[str, ...],
        head: MLPHead | None = None,
        configs: dict | None = None,
        files: list[dict] | None = None,
        max_length: int = 77,
        batch_size: int = 32,
    ):
        if not outputs or set(outputs) - {"clip_score", "aesthetic"}:
            raise ValueError(f"outputs {outputs}: a subset of ('clip_score', 'aesthetic')")
        if "aesthetic" in outputs and head is None:
            raise ValueError("the aesthetic output needs its MLP head")
        self.model, self.image_processor, self.tokenizer = model.eval(), image_processor, tokenizer
        self.outputs, self.head = tuple(outputs), (head.eval() if head is not None else None)
        self.name = "+".join(self.outputs)
        self.configs, self.files, self.max_length, self.batch_size = configs or {}, files or [], max_length, batch_size

    @property
    def with_text(self) -> bool:
        return "clip_score" in self.outputs

    def preprocessor(self) -> ClipPrep:
        return ClipPrep(self.image_processor, self.tokenizer, self.max_length, with_text=self.with_text, pre=openai_geometry(self.image_processor))

    def _move(self) -> None:
        self.model.to(self.device, self.dtype)
        if self.head is not None:
            self.head.to(self.device, torch.float32)

    @torch.inference_mode()
    def forward(self, batch) -> dict[str, np.ndarray]:
        img, txt = clip_embeddings(self.model, batch, self.device, self.dtype, with_text=self.with_text)
        out = {}
        if "clip_score" in self.outputs:
            out["clip_score"] = text_mask_nan(as_float64((img * txt).sum(-1)), batch.get("has_prompt"))
        if "aesthetic" in self.outputs:
            out["aesthetic"] = as_float64(self.head(img).squeeze(-1))
        return out

    def output_provenance(self, output: str) -> dict:
        clip_files = [f for f in self.files if f["role"] != "aesthetic_head"]
        prov = {
            "model": "openai/clip-vit-large-patch14",
            "implementation": "annotate.scorers.clip_l (transformers CLIPModel, image forward shared by clip_score and aesthetic)",
            "weights": clip_files,
            "packages": package_versions("transformers", "pillow"),
            "config": asdict(self.configs[output]),
        }
        if output == "aesthetic":
            prov["model"] = "LAION improved-aesthetic-predictor on openai/clip-vit-large-patch14"
            prov["weights"] = self.files
        return prov


def build_clip_l(clip_score: dict | ClipScoreConfig | None = None, aesthetic: dict | AestheticConfig | None = None) -> ClipLScorer:
    """The CLIP-L scorer for the requested outputs; both configs must name the same CLIP model folder."""
    cs = to_typed(clip_score, ClipScoreConfig) if isinstance(clip_score, dict) else clip_score
    ae = to_typed(aesthetic, AestheticConfig) if isinstance(aesthetic, dict) else aesthetic
    if cs is None and ae is None:
        raise ValueError("build_clip_l needs a clip_score or an aesthetic config")
    spec = cs.model if cs is not None else ae.clip_model
    if cs is not None and ae is not None and cs.model != ae.clip_model:
        raise ConfigError(f"rewards.aesthetic.clip_model={ae.clip_model!r}: must equal rewards.clip_score.model={cs.model!r} to share the forward")
    download = any(c.download for c in (cs, ae) if c is not None)
    folder = resolve_dir(spec, what="CLIP ViT-L/14", source=CLIP_SOURCE, download=download, key="rewards.clip_score.model")
    model, files = load_clip_model(folder, "CLIP ViT-L/14")
    image_processor = load_image_processor(folder, "CLIP ViT-L/14", CLIP_SOURCE)
    max_length = cs.max_length if cs is not None else 77
    tokenizer, _ = load_tokenizer(folder, max_length)
    head = None
    outputs: list[str] = []
    configs: dict = {}
    if cs is not None:
        outputs.append("clip_score")
        configs["clip_score"] = cs
    if ae is not None:
        head, record = load_aesthetic_head(resolve_head(ae))
        if head.in_features != model.config.projection_dim:
            raise ValueError(f"aesthetic head takes {head.in_features}-d embeddings, the CLIP model gives {model.config.projection_dim}")
        files.append(record)
        outputs.append("aesthetic")
        configs["aesthetic"] = ae
    batch = min(c.batch_size for c in configs.values())
    return ClipLScorer(model, image_processor, tokenizer, tuple(outputs), head, configs, files, max_length, batch)
