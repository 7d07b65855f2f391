"""Tiny random-weight models of the real architecture classes, saved in the real on-disk formats.

The production loaders (``Mask2FormerDetector.from_pretrained``, ``ColorClassifier.load``) read them
exactly as they read real checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

NUM_COCO = 80


def save_tiny_mask2former(out_dir: Path, boost_class: int | None = None, seed: int = 0) -> Path:
    """A 0.36M-parameter Mask2Former (Swin backbone, 80 labels, 10 queries) saved with ``save_pretrained``.

    ``boost_class`` raises that class's logit bias so every query predicts it with high probability, which
    gives detections above GenEval's thresholds.
    """
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    backbone = SwinConfig(
        image_size=224, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    cfg = Mask2FormerConfig(
        backbone_config=backbone, num_labels=NUM_COCO, num_queries=10, hidden_dim=32, mask_feature_size=32,
        feature_size=32, encoder_layers=1, decoder_layers=2, dim_feedforward=64, encoder_feedforward_dim=64,
        num_attention_heads=4, id2label={i: f"c{i}" for i in range(NUM_COCO)},
        label2id={f"c{i}": i for i in range(NUM_COCO)},
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    if boost_class is not None:
        with torch.no_grad():
            model.class_predictor.bias[boost_class] += 12.0
    model.save_pretrained(out_dir)
    return Path(out_dir)


TINY_CLIP_NAME = "tiny-ViT-L-14-quickgelu-test"


def register_tiny_clip(cfg_dir: Path) -> str:
    """Register a tiny open_clip config with ViT-L-14-quickgelu's keys (QuickGELU, patch 14, 224 px)."""
    import open_clip

    cfg = {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 8, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
    }
    cfg_dir.mkdir(parents=True, exist_ok=True)
    path = cfg_dir / f"{TINY_CLIP_NAME}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(path))
    return TINY_CLIP_NAME


def save_tiny_clip(out_file: Path, cfg_dir: Path, seed: int = 0) -> tuple[str, Path]:
    """A random tiny CLIP of the registered config, saved as a plain state dict (open_clip's file format)."""
    import open_clip

    name = register_tiny_clip(cfg_dir)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    torch.save(model.state_dict(), out_file)
    return name, Path(out_file)
