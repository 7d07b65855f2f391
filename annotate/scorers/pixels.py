"""Shared pieces of the weight-free scorers: the working copies they measure and the scorer base class.

Each score is computed in ``preprocess`` (so in the DataLoader workers, in parallel) and the "forward" only
hands the numbers back.  Pixel values are on the 0..255 scale throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from annotate.scorers.base import Item, Scorer, as_float64
from annotate.scorers.weights import package_versions
from miro.utils.config import require


@dataclass
class FixedSizeConfig:
    size: int = 256  # every image is measured at size x size so scores compare across resolutions

    def __post_init__(self):
        require(8 <= self.size <= 4096, "size", self.size, "must be an integer in 8..4096")


def fixed_size(image: Image.Image, size: int) -> Image.Image:
    """``size`` x ``size`` bicubic copy (antialiased when shrinking); aspect ratio is not kept on purpose."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)


def grey(image: Image.Image) -> np.ndarray:
    """ITU-R 601 luma as float64 (PIL's "L" conversion, kept in floating point)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


class PixelScorer(Scorer):
    """A weight-free, image-only reward computed by ``measure(image) -> float``."""

    config: object

    def __init__(self, name: str, config: object):
        self.name = name
        self.outputs = (name,)
        self.config = config

    def measure(self, image: Image.Image) -> float:
        raise NotImplementedError

    def _prep(self, image: Image.Image, prompt: str | None) -> Item:
        return {"score": torch.tensor(float(self.measure(image)), dtype=torch.float64)}

    def preprocessor(self):
        return self._prep  # the scorer holds no weights, so it is its own (picklable) preprocessor

    def forward(self, batch) -> dict[str, np.ndarray]:
        return {self.name: as_float64(batch["score"])}

    def provenance(self) -> dict:
        from dataclasses import asdict

        return {
            "model": f"weight-free:{self.name}",
            "implementation": f"{type(self).__module__}.{type(self).__name__}",
            "weights": [],
            "packages": package_versions("numpy", "scipy", "pillow"),
            "config": asdict(self.config),
        }
