"""``contrast``: RMS contrast, the standard deviation of the luma in [0, 1], on an 8 x 8 area average.

0 for a flat image, 0.5 for a half-black half-white one (the maximum).  A washed-out or low-contrast image
scales it down by the contrast factor.  The area average keeps global tone and removes per-pixel noise, which
would otherwise count as contrast (shapes world: Spearman +0.25 with the noise strength at full resolution,
-0.01 at 8 x 8).
"""

from __future__ import annotations

import numpy as np

from annotate.scorers.pixels import CoarseConfig, Measure, PixelScorer, PixelViews
from miro.utils.config import to_typed


def measure(views: PixelViews, prompt: str | None, cfg: CoarseConfig) -> float:
    return float((views.area(cfg.size) @ np.array([0.299, 0.587, 0.114]) / 255.0).std())


SETTINGS = CoarseConfig  # the schema of miro/conf/rewards/contrast.yaml


def build(**cfg) -> PixelScorer:
    return PixelScorer({"contrast": Measure(measure, to_typed(cfg, CoarseConfig))})
