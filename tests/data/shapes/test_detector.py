"""The programmatic detector: the issue's accuracy target on clean 64 px scenes, the output contract, edge cases."""

import io

import numpy as np
import pytest
from PIL import Image

from miro.data.shapes.config import DegradationsConfig, DegradationSpec, ShapesConfig
from miro.data.shapes.detector import (
    ShapeClassifier,
    ShapesDetector,
    _training_features,
    default_detector,
    detect,
)
from miro.data.shapes.geometry import Placed
from miro.data.shapes.matching import MatchCounts, iou, match_scene
from miro.data.shapes.render import background, paint
from miro.data.shapes.vocab import BACKGROUND, CLASSES, COLORS, PALETTE

NAMES = ("clutter", "blur", "low_contrast", "color_cast", "noise", "jpeg")


def world(resolution, seed=11, **degradations):
    specs = {k: DegradationSpec(prob=0.0) for k in NAMES}
    for k, (lo, hi) in degradations.items():
        specs[k] = DegradationSpec(prob=1.0, min_strength=lo, max_strength=hi)
    from miro.data.shapes.world import ShapesWorld

    return ShapesWorld(ShapesConfig(out="x", resolution=resolution, seed=seed, degradations=DegradationsConfig(**specs)))


def score_world(w, n):
    total = MatchCounts()
    for i in range(n):
        s = w.sample(i)
        total.add(match_scene(detect(Image.open(io.BytesIO(s.image))), s.record["scene"]["objects"]))
    return total


def test_clean_64px_accuracy_target():
    """Issue #2: at least 98% of objects found with the right class and colour over >= 500 clean 64 px scenes."""
    total = score_world(world(64), 520)
    rates = total.rates()
    assert total.objects > 1000
    assert rates["found"] >= 0.98, (rates, total.confusions)
    assert total.false_positives <= 0.01 * total.objects, rates


def test_clean_32px_accuracy():
    rates = score_world(world(32, seed=12), 150).rates()
    assert rates["found"] >= 0.93, rates


def test_mild_blur_and_noise_still_mostly_found():
    assert score_world(world(64, seed=13, blur=(0.15, 0.35)), 60).rates()["found"] >= 0.9
    assert score_world(world(64, seed=14, noise=(0.15, 0.35)), 60).rates()["found"] >= 0.85


def test_detection_contract_and_inputs():
    s = world(64).sample(3)
    img = Image.open(io.BytesIO(s.image))
    dets = detect(img)
    assert dets and [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
    for d in dets:
        assert set(d) == {"class", "score", "box", "mask", "color"}
        assert d["class"] in CLASSES and d["color"] in COLORS and 0.0 <= d["score"] <= 1.0
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert d["mask"].shape == (64, 64) and d["mask"].dtype == bool
        ys, xs = np.nonzero(d["mask"])
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == d["box"]
    arr = np.asarray(img.convert("RGB"))
    same = detect(arr)
    assert [(d["class"], d["color"], d["box"]) for d in same] == [(d["class"], d["color"], d["box"]) for d in dets]
    rgba = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert len(detect(rgba)) == len(dets)
    assert all(d["mask"] is None for d in detect(arr, masks=False))


def test_background_only_and_bad_input():
    rng = np.random.default_rng(0)
    assert detect(np.clip(background(rng, 64, BACKGROUND, 6.0), 0, 255).astype(np.uint8)) == []
    assert detect(np.full((40, 40, 3), 128, np.uint8)) == []
    with pytest.raises(ValueError, match="RGB image"):
        detect(np.zeros((4, 4, 2)))


def test_single_object_box_and_labels_exact():
    img = np.zeros((96, 96, 3)) + np.array(BACKGROUND, float)
    obj = Placed("star", "purple", (40.3, 51.7), 30.0, 8.0)
    paint(img, obj.polygon(), PALETTE["purple"])
    (d,) = detect(img.round().astype(np.uint8))
    assert d["class"] == "star" and d["color"] == "purple" and d["score"] > 0.9
    assert iou(d["box"], obj.box()) > 0.85


def test_classifier_fit_is_deterministic_and_separates_classes():
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    xa = np.array([f for c in CLASSES for f in _training_features(rng_a, c, 12)])
    xb = np.array([f for c in CLASSES for f in _training_features(rng_b, c, 12)])
    np.testing.assert_array_equal(xa, xb)
    y = np.repeat(np.arange(len(CLASSES)), 12)
    post, _ = default_detector().classifier.predict(xa)
    assert (post.argmax(1) == y).mean() > 0.9
    assert isinstance(default_detector().classifier, ShapeClassifier)


def test_detector_subset_of_classes_and_colors():
    det = ShapesDetector(classes=("circle", "square", "star"), colors=("red", "blue", "white"))
    img = np.zeros((64, 64, 3)) + np.array(BACKGROUND, float)
    paint(img, Placed("square", "blue", (20, 20), 18, 0).polygon(), PALETTE["blue"])
    (d,) = det(img.round().astype(np.uint8))
    assert (d["class"], d["color"]) == ("square", "blue")
