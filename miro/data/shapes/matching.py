"""Detector accuracy against a scene's ground truth (used by the tests and ``scripts/bench_detector.py``).

An object is *found* when a detection overlaps its true box with IoU >= 0.5 and has the right class and
colour; each detection matches at most one object, most confident detections first.  Detections at or below
``min_score`` are ignored (GenEval's default threshold is 0.3); unmatched ones are false positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Plain IoU of [x0, y0, x1, y1] boxes with exclusive ends."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class MatchCounts:
    objects: int = 0  # true objects
    located: int = 0  # matched by a detection with IoU >= 0.5
    right_class: int = 0  # ... with the right class
    right_color: int = 0  # ... with the right colour
    found: int = 0  # ... with both
    detections: int = 0  # detections above min_score
    false_positives: int = 0  # detections matched to no object
    confusions: dict = field(default_factory=dict)  # (true class, predicted class) -> count, among located

    def add(self, other: MatchCounts) -> None:
        for k in ("objects", "located", "right_class", "right_color", "found", "detections", "false_positives"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k, v in other.confusions.items():
            self.confusions[k] = self.confusions.get(k, 0) + v

    def rates(self) -> dict[str, float]:
        def frac(a, b):
            return a / b if b else float("nan")

        return {
            "found": frac(self.found, self.objects),
            "recall": frac(self.located, self.objects),
            "precision": frac(self.detections - self.false_positives, self.detections),
            "class_acc": frac(self.right_class, self.located),
            "color_acc": frac(self.right_color, self.located),
            "fp_per_object": frac(self.false_positives, self.objects),
        }


def match_scene(detections: Sequence[dict], objects: Sequence[dict], min_score: float = 0.3, min_iou: float = 0.5) -> MatchCounts:
    """Counts for one image; ``objects`` are the ``scene.objects`` of a sample's json."""
    dets = sorted((d for d in detections if d["score"] > min_score), key=lambda d: -d["score"])
    counts = MatchCounts(objects=len(objects), detections=len(dets))
    free = list(range(len(objects)))
    for d in dets:
        best, best_iou = None, min_iou
        for j in free:
            v = iou(d["box"], objects[j]["box"])
            if v >= best_iou:
                best, best_iou = j, v
        if best is None:
            counts.false_positives += 1
            continue
        free.remove(best)
        obj = objects[best]
        counts.located += 1
        cls_ok, col_ok = d["class"] == obj["class"], d["color"] == obj["color"]
        counts.right_class += cls_ok
        counts.right_color += col_ok
        counts.found += cls_ok and col_ok
        if not cls_ok:
            key = (obj["class"], d["class"])
            counts.confusions[key] = counts.confusions.get(key, 0) + 1
    return counts
