"""GenEval's evaluation rules (djghosh13/geneval ``evaluation/evaluate_images.py``), independent of the detector.

The detector gives one image's detections in the contract format (docs/contracts.md)::

    {"class": str, "score": float, "box": [x0, y0, x1, y1], "mask": bool[H, W] or None, "color": str or None}

and a colour callable decides the colour of the detections a ``color`` clause looks at: the real evaluator
passes its CLIP zero-shot classifier, the shapes world uses the detections' own ``color`` (the default).

Behaviour kept exactly as GenEval's (thresholds, the per-class filter, the AND of includes and OR of excludes,
the position rule and the ``reason`` strings).  One thing is made deterministic: when a position check fails,
GenEval joins the relations it found in Python ``set`` order; here they are joined in the order
``left of, right of, above, below``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

Detection = Mapping  # {"class", "score", "box", "mask", "color"}
ColorFn = Callable[[Sequence[Detection], str], list]  # (detections of one class, class name) -> colour names


@dataclass(frozen=True)
class RuleOptions:
    """GenEval's ``--options`` with their defaults."""

    threshold: float = 0.3  # minimum score (strictly greater) for every tag but counting
    counting_threshold: float = 0.9  # minimum score for the counting tag
    max_objects: int = 16  # at most this many detections per class
    max_overlap: float = 1.0  # greedy per-class IoU filter; 1.0 = off
    position_threshold: float = 0.1  # margin of the position rule, as a fraction of the two objects' sizes

    def __post_init__(self):
        for key in ("threshold", "counting_threshold", "max_overlap", "position_threshold"):
            v = getattr(self, key)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{key}={v!r}: must be in [0, 1]")
        if self.max_objects < 1:
            raise ValueError(f"max_objects={self.max_objects!r}: must be >= 1")


DEFAULT_OPTIONS = RuleOptions()


def compute_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """GenEval's IoU, with its inclusive-pixel ``+ 1`` in widths and heights."""

    def area(b):
        return max(b[2] - b[0] + 1, 0) * max(b[3] - b[1] + 1, 0)

    inter = area([max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])])
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0


def relative_position(box_a: Sequence[float], box_b: Sequence[float], position_threshold: float = 0.1) -> set[str]:
    """Relations of A relative to B: the centre offset, shrunk by ``position_threshold`` times the summed box
    sizes, normalised by the raw offset's length; a component beyond 0.5 either way names the relation."""
    boxes = np.array([box_a[:4], box_b[:4]], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - position_threshold * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def confidence_threshold(tag: str, options: RuleOptions = DEFAULT_OPTIONS) -> float:
    return options.counting_threshold if tag == "counting" else options.threshold


def score_array(dets: Sequence[Detection]) -> np.ndarray:
    """The detections' scores in the dtype the detector handed over (numpy or torch scalars keep theirs; Python
    floats are float64), so the threshold is compared in that dtype as GenEval's numpy comparison does: mmdet's
    float32 scores against ``float32(0.3)``, where a box scoring exactly ``float32(0.3)`` is not kept."""
    scores = np.stack([np.asarray(d["score"].detach().cpu() if hasattr(d["score"], "detach") else d["score"]) for d in dets])
    return scores if np.issubdtype(scores.dtype, np.floating) else scores.astype(np.float64)


def filter_detections(detections: Sequence[Detection], tag: str, options: RuleOptions = DEFAULT_OPTIONS) -> dict[str, list[Detection]]:
    """Per class: most confident first, keep scores above the tag's threshold (compared in the scores' own
    dtype, ``score_array``), at most ``max_objects``, then the greedy overlap filter when ``max_overlap < 1``.
    Classes left empty are absent from the result."""
    thr = confidence_threshold(tag, options)
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        by_class.setdefault(det["class"], []).append(det)
    out: dict[str, list[Detection]] = {}
    for cls, dets in by_class.items():
        scores = score_array(dets)
        order = np.argsort(scores)[::-1]  # GenEval's own ordering, ties included
        order = order[scores[order] > np.asarray(thr, dtype=scores.dtype)][: options.max_objects].tolist()
        kept: list[Detection] = []
        while order:
            best = order.pop(0)
            kept.append(dets[best])
            order = [i for i in order if options.max_overlap == 1 or compute_iou(dets[best]["box"], dets[i]["box"]) < options.max_overlap]
        if kept:
            out[cls] = kept
    return out


def detection_colors(dets: Sequence[Detection], classname: str) -> list:
    """The colour callable of detectors that colour their own detections (the shapes detector)."""
    return [d.get("color") for d in dets]


def _color_reason(req: Mapping, colors: list) -> str:
    c = req["color"]
    found = ", ".join(f"{colors.count(k)} {k}" for k in COLORS if k in colors)
    return f"expected {c} {req['class']}>={req['count']}, found {colors.count(c)} {c}; and {found}"


def evaluate(metadata: Mapping, detected: Mapping[str, Sequence[Detection]], color_fn: ColorFn = detection_colors,
             options: RuleOptions = DEFAULT_OPTIONS) -> tuple[bool, str]:
    """GenEval's ``evaluate``: ``detected`` is the output of ``filter_detections``; returns (correct, reason).

    Includes are ANDed and excludes ORed; colour and position look only at the ``count`` most confident
    detections of the class; a position clause needs its target group to have matched.
    """
    correct = True
    reason: list[str] = []
    matched_groups: list[Sequence[Detection] | None] = []
    for req in metadata.get("include", []):
        cls, count = req["class"], req["count"]
        matched = True
        found = list(detected.get(cls, []))[:count]
        if len(found) < count:
            correct = matched = False
            reason.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = list(color_fn(found, cls))
                if colors.count(req["color"]) < count:
                    correct = matched = False
                    reason.append(_color_reason(req, colors))
            if "position" in req and matched:
                rel, target = req["position"]
                if not 0 <= target < len(matched_groups):
                    raise ValueError(f"position target group {target} of {cls!r} is not an earlier include clause")
                if matched_groups[target] is None:
                    correct = matched = False
                    reason.append(f"no target for {cls} to be {rel}")
                else:
                    for obj in found:
                        for tgt in matched_groups[target]:
                            rels = relative_position(obj["box"], tgt["box"], options.position_threshold)
                            if rel not in rels:
                                correct = matched = False
                                seen = " and ".join(r for r in RELATIONS if r in rels)
                                reason.append(f"expected {cls} {rel} target, found {seen} target")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        cls = req["class"]
        if len(detected.get(cls, [])) >= req["count"]:
            correct = False
            reason.append(f"expected {cls}<{req['count']}, found {len(detected[cls])}")
    return correct, "\n".join(reason)


def result_row(filename: str, metadata: Mapping, detections: Sequence[Detection], color_fn: ColorFn = detection_colors,
               options: RuleOptions = DEFAULT_OPTIONS) -> dict:
    """One ``results.jsonl`` row, as GenEval's ``evaluate_image`` writes it (``details``: per class the kept
    boxes as ``[x0, y0, x1, y1, score]``)."""
    detected = filter_detections(detections, metadata["tag"], options)
    correct, reason = evaluate(metadata, detected, color_fn, options)
    details = {cls: [[float(v) for v in d["box"][:4]] + [float(d["score"])] for d in dets] for cls, dets in detected.items()}
    return {
        "filename": filename,
        "tag": metadata["tag"],
        "prompt": metadata["prompt"],
        "correct": bool(correct),
        "reason": reason,
        "metadata": json.dumps(dict(metadata)),
        "details": json.dumps(details),
    }
