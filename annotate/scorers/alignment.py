"""``alignment``: how well an image shows its caption in the shapes world, in [0, 1] (NaN for other captions).

``miro.data.shapes.alignment.caption_alignment``: the caption is parsed back into GenEval metadata, the
programmatic shapes detector finds the objects, and GenEval's filter and position rule grade counts, colours and
relations (1 when GenEval's rules pass the image).  Computed in the preprocessing like the other weight-free
rewards; the detector's classifier is fitted once per process, before the DataLoader workers fork.
"""

from __future__ import annotations

from dataclasses import dataclass

from annotate.scorers.pixels import Measure, PixelScorer, PixelViews
from miro.utils.config import to_typed


@dataclass
class AlignmentConfig:
    """No settings: the detector and GenEval's rule options are fixed so scores compare across runs."""


def measure(views: PixelViews, prompt: str | None, cfg: AlignmentConfig) -> float:
    from miro.data.shapes.alignment import caption_alignment

    return caption_alignment(views.native(), prompt)


SETTINGS = AlignmentConfig  # the schema of miro/conf/rewards/alignment.yaml


def build(**cfg) -> PixelScorer:
    from miro.data.shapes.detector import default_detector

    default_detector()  # fit the shape classifier now: once per process, inherited by forked workers
    return PixelScorer({"alignment": Measure(measure, to_typed(cfg, AlignmentConfig), needs_prompt=True)})
