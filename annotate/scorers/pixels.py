"""Shared pieces of the weight-free scorers: the working copies they measure and the scorer that runs them.

Each score is computed in the preprocessing (so in the DataLoader workers, in parallel) and the "forward" only
hands the numbers back.  Several weight-free rewards requested together share one scorer and one set of working
copies (one resize, one luma conversion per image).  Pixel values are on the 0..255 scale throughout.

They have no official package to follow, so they measure the image training sees: ``miro.data.images.to_rgb``
of the image as opened (transparency composited on white, 16-bit images rescaled to 8 bits, every other mode
through PIL's ``convert("RGB")``), at its own size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from annotate.scorers.base import Item, MultiOutputScorer, as_float64
from miro.data.images import to_rgb
from miro.utils.config import require
from miro.utils.weights import package_versions


@dataclass
class CoarseConfig:
    size: int = 8  # measured on a size x size area average: pixel noise averages out, global tone does not

    def __post_init__(self):
        require(1 <= self.size <= 4096, "size", self.size, "must be an integer in 1..4096")


class PixelViews:
    """Working copies of one image, made on first use and shared by every weight-free measure."""

    def __init__(self, image: Image.Image):
        self.image = image if image.mode == "RGB" else to_rgb(image)
        self._cache: dict = {}

    def native(self) -> np.ndarray:
        """H x W x 3 uint8 at the original resolution."""
        if "native" not in self._cache:
            self._cache["native"] = np.asarray(self.image)
        return self._cache["native"]

    def area(self, size: int) -> np.ndarray:
        """``size`` x ``size`` x 3 float64 box (area) average: each value is the mean of its source cell."""
        key = ("area", size)
        if key not in self._cache:
            img = self.image if self.image.size == (size, size) else self.image.resize((size, size), Image.Resampling.BOX)
            self._cache[key] = np.asarray(img, dtype=np.float64)
        return self._cache[key]

    def native_luma(self) -> np.ndarray:
        """Luma at the original resolution, float64."""
        if "native_luma" not in self._cache:
            self._cache["native_luma"] = self.native().astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return self._cache["native_luma"]


@dataclass(frozen=True)
class Measure:
    """A weight-free reward: ``fn(views, prompt, config) -> float`` (``prompt`` is None unless ``needs_prompt``)."""

    fn: Callable[[PixelViews, str | None, object], float]
    config: object
    needs_prompt: bool = False


class PixelScorer(MultiOutputScorer):
    """Weight-free rewards computed in the preprocessing: ``{name: Measure}``."""

    def __init__(self, measures: dict[str, Measure]):
        self.measures = dict(measures)
        self.outputs = tuple(self.measures)
        self.text_outputs = frozenset(n for n, m in self.measures.items() if m.needs_prompt)
        self.name = "+".join(self.outputs)

    @classmethod
    def merge(cls, scorers: list[PixelScorer]) -> PixelScorer:
        out: dict = {}
        for s in scorers:
            out.update(s.measures)
        return cls(out)

    def _prep(self, image: Image.Image, prompt: str | None) -> Item:
        views = PixelViews(image)
        out = {}
        for name, m in self.measures.items():
            value = float("nan") if (m.needs_prompt and prompt is None) else float(m.fn(views, prompt, m.config))
            out[name] = torch.tensor(value, dtype=torch.float64)
        return out

    def preprocessor(self):
        return self._prep  # no weights: the scorer is its own (picklable) preprocessor

    def forward(self, batch) -> dict[str, np.ndarray]:
        return {name: as_float64(batch[name]) for name in self.outputs}

    def output_provenance(self, output: str) -> dict:
        m = self.measures[output]
        return {
            "model": f"weight-free:{output}",
            "implementation": f"{m.fn.__module__}.{m.fn.__name__}",
            "weights": [],
            "packages": package_versions("numpy", "scipy", "pillow"),
            "config": asdict(m.config),
        }
