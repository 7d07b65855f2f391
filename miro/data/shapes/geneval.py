"""GenEval scoring of one shapes-world image: the shapes detector plus GenEval's rules, one results row.

The folder-level command (GenEval's image layout, ``results.jsonl``, the summary) is built on this in
``miro/eval/geneval/``.
"""

from __future__ import annotations

from collections.abc import Mapping

from miro.contracts.geneval_rules import DEFAULT_OPTIONS, RuleOptions, detection_colors, result_row
from miro.data.shapes.detector import default_detector


def evaluate_image(image, metadata: Mapping, filename: str = "", detector=None, options: RuleOptions = DEFAULT_OPTIONS) -> dict:
    """GenEval's ``results.jsonl`` row for ``image`` (PIL or uint8 array) against one metadata item; the
    detections' own colours stand in for GenEval's CLIP colour classifier."""
    detector = detector or default_detector()
    return result_row(filename, metadata, detector(image), detection_colors, options)
