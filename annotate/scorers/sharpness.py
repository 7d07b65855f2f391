"""``sharpness``: log(1 + variance of the Laplacian) of the median-filtered luma, at a fixed size.

Blur removes high frequencies, so the Laplacian's variance collapses; the log keeps the scale usable (the raw
variance spans orders of magnitude).  Pixel noise raises the raw variance as much as crisp edges do (on the
shapes world, Spearman +0.71 with the noise strength and only -0.35 with blur), so the luma first goes through
a ``median`` x ``median`` median filter at its native resolution, which removes pixel noise and keeps edges
(+0.06 with noise, -0.47 with blur); ``low_noise`` is the reward that sees noise.  Images larger than
``max_side`` are area-averaged down first (cost), and the result is resized to ``size`` x ``size`` so scores
compare across resolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from annotate.scorers.pixels import Measure, PixelScorer, PixelViews
from miro.utils.config import require, to_typed


@dataclass
class SharpnessConfig:
    size: int = 256  # the Laplacian is taken on a size x size copy
    median: int = 5  # median filter width at native resolution (1 = off)
    max_side: int = 1024  # larger images are area-averaged to this longest side before filtering

    def __post_init__(self):
        require(8 <= self.size <= 4096, "size", self.size, "must be an integer in 8..4096")
        require(self.median >= 1 and self.median % 2 == 1, "median", self.median, "must be an odd integer >= 1")
        require(self.max_side >= 8, "max_side", self.max_side, "must be an integer >= 8")


def laplacian_log_variance(luma: np.ndarray) -> float:
    return float(np.log1p(ndimage.laplace(luma, mode="reflect").var()))


def denoised_luma(views: PixelViews, cfg: SharpnessConfig) -> np.ndarray:
    """The median-filtered luma at ``size`` x ``size`` (float64)."""
    luma = views.native_luma()
    h, w = luma.shape
    if max(h, w) > cfg.max_side:
        s = cfg.max_side / max(h, w)
        small = Image.fromarray(luma.astype(np.float32), "F").resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BOX)
        luma = np.asarray(small, dtype=np.float64)
    if cfg.median > 1:
        luma = ndimage.median_filter(luma, size=cfg.median, mode="reflect")
    if luma.shape != (cfg.size, cfg.size):
        img = Image.fromarray(luma.astype(np.float32), "F").resize((cfg.size, cfg.size), Image.Resampling.BICUBIC)
        luma = np.asarray(img, dtype=np.float64)
    return luma


def measure(views: PixelViews, prompt: str | None, cfg: SharpnessConfig) -> float:
    return laplacian_log_variance(denoised_luma(views, cfg))


SETTINGS = SharpnessConfig  # the schema of miro/conf/rewards/sharpness.yaml


def build(**cfg) -> PixelScorer:
    return PixelScorer({"sharpness": Measure(measure, to_typed(cfg, SharpnessConfig))})
