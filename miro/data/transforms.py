"""The one definition of the training-image preprocessing and of the text-feature layout.

Both the data pipeline and the feature cache go through these, so cached features equal features
computed on the fly.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def center_crop_resize(img: Image.Image, resolution: int) -> Image.Image:
    """Resize the shorter side to ``resolution`` (bicubic, antialiased), then crop the centre square."""
    w, h = img.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def image_to_uint8(img: Image.Image, resolution: int) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor ``[3, resolution, resolution]`` (kept uint8 until it is on the device)."""
    arr = np.asarray(center_crop_resize(img, resolution), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def uint8_to_unit(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images -> floats in [-1, 1], the range the autoencoders take."""
    return images.to(dtype) / 127.5 - 1.0


def text_lengths(mask: torch.Tensor) -> torch.Tensor:
    """Per-row token counts of a right-padded mask ``[B, L]``; raises if a mask is not a prefix."""
    lengths = mask.sum(1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
    if not torch.equal(prefix, mask.bool()):
        raise ValueError("text_mask must be right-padded (True tokens first); got a mask with gaps")
    return lengths


def trim_text(emb: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing columns that are padding in every row, so on-the-fly and cached text agree."""
    length = int(text_lengths(mask).max().clamp(min=1))
    return emb[:, :length], mask[:, :length]


def pad_text_to(emb: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch's text ``[B, n, D]`` (zeros, mask False) to ``length`` tokens, so every batch has one shape;
    CUDA-graph replay (``compile_mode=reduce-overhead``) records a graph per shape.  The network ignores the
    padding (its attention and pooling read the mask), so the output is the trimmed batch's."""
    n = emb.shape[1]
    if n > length:
        raise ValueError(f"the batch has {n} text tokens, more than the {length} to pad to")
    if n == length:
        return emb, mask
    emb = torch.cat([emb, emb.new_zeros(emb.shape[0], length - n, emb.shape[2])], dim=1)
    return emb, torch.cat([mask, mask.new_zeros(mask.shape[0], length - n)], dim=1)


def pad_text(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-sample token embeddings ``[n_i, D]`` into ``[B, max n, D]`` (zeros) plus a bool mask."""
    length = max(1, max(r.shape[0] for r in rows))
    out = rows[0].new_zeros(len(rows), length, rows[0].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = True
    return out, mask
