"""The shapes world: a generator of captioned scenes of coloured shapes, its detector and caption alignment.

``python -m miro.data.shapes out=DIR ...`` writes WebDataset shards; usage and formats in docs/shapes_world.md.
"""

from miro.data.shapes.alignment import alignment_score, caption_alignment, parse_caption
from miro.data.shapes.config import ShapesConfig
from miro.data.shapes.detector import ShapesDetector, detect
from miro.data.shapes.geneval import evaluate_image
from miro.data.shapes.world import ShapesWorld

__all__ = [
    "ShapesConfig",
    "ShapesDetector",
    "ShapesWorld",
    "alignment_score",
    "caption_alignment",
    "detect",
    "evaluate_image",
    "parse_caption",
]
