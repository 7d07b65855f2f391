"""``sharpness``: log(1 + variance of the Laplacian) of the luma at a fixed size (higher = crisper edges).

Blur removes high frequencies, so the Laplacian's variance collapses; the log keeps the scale usable (the raw
variance spans orders of magnitude).  Noise also raises it: ``low_noise`` is the reward that sees noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from annotate.scorers.pixels import FixedSizeConfig, Measure, PixelScorer, PixelViews
from miro.utils.config import to_typed


def laplacian_log_variance(luma: np.ndarray) -> float:
    return float(np.log1p(ndimage.laplace(luma, mode="reflect").var()))


def measure(views: PixelViews, prompt: str | None, cfg: FixedSizeConfig) -> float:
    return laplacian_log_variance(views.luma(cfg.size))


SETTINGS = FixedSizeConfig  # the schema of conf/rewards/sharpness.yaml


def build(**cfg) -> PixelScorer:
    return PixelScorer({"sharpness": Measure(measure, to_typed(cfg, FixedSizeConfig))})
