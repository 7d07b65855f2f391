"""``contrast``: RMS contrast, the standard deviation of the luma in [0, 1], measured at a fixed size.

0 for a flat image, 0.5 for a half-black half-white one (the maximum).  A washed-out or low-contrast image
scales it down by the contrast factor.
"""

from __future__ import annotations

from annotate.scorers.pixels import FixedSizeConfig, Measure, PixelScorer, PixelViews
from miro.utils.config import to_typed


def measure(views: PixelViews, prompt: str | None, cfg: FixedSizeConfig) -> float:
    return float((views.luma(cfg.size) / 255.0).std())


SETTINGS = FixedSizeConfig  # the schema of conf/rewards/contrast.yaml


def build(**cfg) -> PixelScorer:
    return PixelScorer({"contrast": Measure(measure, to_typed(cfg, FixedSizeConfig))})
