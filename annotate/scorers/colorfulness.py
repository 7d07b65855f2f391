"""``colorfulness``: Hasler and Suesstrunk (2003), M = sigma_rgyb + 0.3 mu_rgyb on the 0..255 scale.

rg = R - G and yb = (R + G) / 2 - B; sigma and mu are the root-sum-squares of the two opponent channels' stds
and means.  0 for any grey image; about 15 "slightly", 33 "moderately", 59 "quite", 82 "highly" colourful in
the paper's calibration.  Measured at a fixed size.
"""

from __future__ import annotations

import numpy as np

from annotate.scorers.pixels import FixedSizeConfig, Measure, PixelScorer, PixelViews
from miro.utils.config import to_typed


def hasler_susstrunk(rgb: np.ndarray) -> float:
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def measure(views: PixelViews, prompt: str | None, cfg: FixedSizeConfig) -> float:
    return hasler_susstrunk(views.fixed(cfg.size))


SETTINGS = FixedSizeConfig  # the schema of conf/rewards/colorfulness.yaml


def build(**cfg) -> PixelScorer:
    return PixelScorer({"colorfulness": Measure(measure, to_typed(cfg, FixedSizeConfig))})
