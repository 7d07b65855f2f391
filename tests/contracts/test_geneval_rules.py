"""GenEval's rules on hand-built detections: every branch, threshold edges and the exact reason strings."""

import json

import numpy as np
import pytest

from miro.contracts.geneval_rules import (
    RuleOptions,
    compute_iou,
    evaluate,
    filter_detections,
    relative_position,
    result_row,
)


def det(cls, score, box, color=None):
    return {"class": cls, "score": score, "box": list(box), "mask": None, "color": color}


def run(meta, dets, **kw):
    opts = RuleOptions(**kw)
    return evaluate(meta, filter_detections(dets, meta["tag"], opts), options=opts)


# --- geometry -------------------------------------------------------------------------------------------


def test_compute_iou_uses_genevals_inclusive_pixels():
    assert compute_iou([0, 0, 9, 9], [0, 0, 9, 9]) == 1.0
    assert compute_iou([0, 0, 9, 9], [5, 0, 14, 9]) == pytest.approx(50 / 150)
    assert compute_iou([0, 0, 9, 9], [20, 20, 29, 29]) == 0.0


@pytest.mark.parametrize(
    "offset, expected",
    [((-30, 0), {"left of"}), ((30, 0), {"right of"}), ((0, -30), {"above"}), ((0, 30), {"below"}),
     ((-30, -30), {"left of", "above"}), ((30, 30), {"right of", "below"}), ((-30, 20), {"left of"})],
)
def test_relative_position_each_relation(offset, expected):
    b = [40, 40, 50, 50]
    a = [40 + offset[0], 40 + offset[1], 50 + offset[0], 50 + offset[1]]
    assert relative_position(a, b) == expected


def test_relative_position_margin_closed_form():
    # centres 2 px apart, each box 10 wide: the margin 0.1 * (10 + 10) = 2 swallows the offset exactly
    assert relative_position([2, 0, 12, 10], [0, 0, 10, 10]) == set()
    # 3 px apart: revised dx = 1, normalised by |offset| = 3 -> 1/3 < 0.5, still no relation
    assert relative_position([3, 0, 13, 10], [0, 0, 10, 10]) == set()
    # 5 px apart: revised 3 / 5 = 0.6 > 0.5
    assert relative_position([5, 0, 15, 10], [0, 0, 10, 10]) == {"right of"}
    # a larger margin option turns it off again: 5 - 0.2 * 20 = 1 -> 0.2
    assert relative_position([5, 0, 15, 10], [0, 0, 10, 10], position_threshold=0.2) == set()


def test_relative_position_accepts_boxes_with_scores():
    assert relative_position([0, 0, 10, 10, 0.9], [30, 0, 40, 10, 0.8]) == {"left of"}


# --- filtering ------------------------------------------------------------------------------------------


def test_threshold_is_strict_and_tag_dependent():
    dets = [det("star", 0.3, [0, 0, 5, 5]), det("star", 0.30001, [10, 0, 15, 5]), det("star", 0.9, [20, 0, 25, 5]),
            det("star", 0.95, [30, 0, 35, 5])]
    kept = filter_detections(dets, "single_object")
    assert [d["score"] for d in kept["star"]] == [0.95, 0.9, 0.30001]
    kept = filter_detections(dets, "counting")  # counting threshold 0.9, strictly greater
    assert [d["score"] for d in kept["star"]] == [0.95]
    assert filter_detections([det("star", 0.1, [0, 0, 1, 1])], "colors") == {}


def test_max_objects_caps_each_class():
    dets = [det("circle", 0.5 + i / 100, [3 * i, 0, 3 * i + 2, 2]) for i in range(20)] + [det("star", 0.9, [0, 9, 2, 11])]
    kept = filter_detections(dets, "two_object")
    assert len(kept["circle"]) == 16 and kept["circle"][0]["score"] == pytest.approx(0.69)
    assert len(filter_detections(dets, "two_object", RuleOptions(max_objects=3))["circle"]) == 3


def test_overlap_filter_only_below_one():
    dets = [det("square", 0.9, [0, 0, 10, 10]), det("square", 0.8, [1, 0, 11, 10]), det("square", 0.7, [30, 0, 40, 10])]
    assert len(filter_detections(dets, "single_object")["square"]) == 3  # max_overlap = 1: off
    kept = filter_detections(dets, "single_object", RuleOptions(max_overlap=0.5))
    assert [d["score"] for d in kept["square"]] == [0.9, 0.7]


# --- evaluation -----------------------------------------------------------------------------------------


def test_single_object_found_and_missing():
    meta = {"tag": "single_object", "include": [{"class": "star", "count": 1}], "prompt": "a photo of a star"}
    assert run(meta, [det("star", 0.8, [0, 0, 5, 5])]) == (True, "")
    assert run(meta, [det("circle", 0.8, [0, 0, 5, 5])]) == (False, "expected star>=1, found 0")
    assert run(meta, [det("star", 0.2, [0, 0, 5, 5])]) == (False, "expected star>=1, found 0")


def test_two_objects_are_anded():
    meta = {"tag": "two_object", "include": [{"class": "star", "count": 1}, {"class": "heart", "count": 1}]}
    assert run(meta, [det("star", 0.8, [0, 0, 5, 5]), det("heart", 0.5, [9, 0, 14, 5])])[0]
    assert run(meta, [det("star", 0.8, [0, 0, 5, 5])]) == (False, "expected heart>=1, found 0")
    assert run(meta, []) == (False, "expected star>=1, found 0\nexpected heart>=1, found 0")


def test_counting_with_exclude():
    meta = {"tag": "counting", "include": [{"class": "star", "count": 2}], "exclude": [{"class": "star", "count": 3}]}
    two = [det("star", 0.95, [0, 0, 5, 5]), det("star", 0.93, [9, 0, 14, 5])]
    assert run(meta, two) == (True, "")
    assert run(meta, two + [det("star", 0.91, [20, 0, 25, 5])]) == (False, "expected star<3, found 3")
    # a third star under the counting threshold does not count
    assert run(meta, two + [det("star", 0.85, [20, 0, 25, 5])]) == (True, "")
    assert run(meta, two[:1]) == (False, "expected star>=2, found 1")
    assert run(meta, two[:1], counting_threshold=0.5) == (False, "expected star>=2, found 1")


def test_excludes_are_ored():
    meta = {"tag": "counting", "include": [{"class": "star", "count": 1}],
            "exclude": [{"class": "star", "count": 2}, {"class": "heart", "count": 1}]}
    dets = [det("star", 0.95, [0, 0, 5, 5]), det("heart", 0.95, [9, 0, 14, 5])]
    assert run(meta, dets) == (False, "expected heart<1, found 1")


def test_color_check_uses_most_confident_and_exact_reason():
    meta = {"tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"}]}
    assert run(meta, [det("star", 0.9, [0, 0, 5, 5], "red")]) == (True, "")
    # the blue star is more confident, so it is the one looked at
    dets = [det("star", 0.9, [0, 0, 5, 5], "blue"), det("star", 0.8, [9, 0, 14, 5], "red")]
    assert run(meta, dets) == (False, "expected red star>=1, found 0 red; and 1 blue")


def test_color_reason_lists_colors_in_geneval_order():
    meta = {"tag": "counting", "include": [{"class": "heart", "count": 3, "color": "pink"}]}
    dets = [det("heart", 0.99, [10 * i, 0, 10 * i + 5, 5], c) for i, c in enumerate(["white", "pink", "red"])]
    assert run(meta, dets) == (False, "expected pink heart>=3, found 1 pink; and 1 red, 1 pink, 1 white")


def test_color_callable_plugs_in():
    calls = []

    def clip_like(dets, classname):
        calls.append((classname, len(dets)))
        return ["green" for _ in dets]

    meta = {"tag": "color_attr", "include": [{"class": "star", "count": 1, "color": "green"},
                                             {"class": "square", "count": 1, "color": "yellow"}]}
    dets = [det("star", 0.9, [0, 0, 5, 5]), det("square", 0.9, [9, 0, 14, 5])]
    detected = filter_detections(dets, "color_attr")
    ok, reason = evaluate(meta, detected, color_fn=clip_like)
    assert not ok and reason == "expected yellow square>=1, found 0 yellow; and 1 green"
    assert calls == [("star", 1), ("square", 1)]


def test_missing_colors_from_a_detector_that_gives_none():
    meta = {"tag": "colors", "include": [{"class": "star", "count": 1, "color": "red"}]}
    assert run(meta, [det("star", 0.9, [0, 0, 5, 5], None)]) == (False, "expected red star>=1, found 0 red; and ")


@pytest.mark.parametrize("rel, dx, dy", [("left of", -30, 0), ("right of", 30, 0), ("above", 0, -30), ("below", 0, 30)])
def test_position_each_relation(rel, dx, dy):
    meta = {"tag": "position", "include": [{"class": "circle", "count": 1},
                                           {"class": "star", "count": 1, "position": [rel, 0]}]}
    target = det("circle", 0.9, [40, 40, 50, 50])
    good = det("star", 0.9, [40 + dx, 40 + dy, 50 + dx, 50 + dy])
    bad = det("star", 0.9, [40 - dx, 40 - dy, 50 - dx, 50 - dy])
    assert run(meta, [target, good]) == (True, "")
    opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[rel]
    assert run(meta, [target, bad]) == (False, f"expected star {rel} target, found {opposite} target")


def test_position_failure_reason_with_no_and_two_relations():
    meta = {"tag": "position", "include": [{"class": "circle", "count": 1},
                                           {"class": "star", "count": 1, "position": ["below", 0]}]}
    target = det("circle", 0.9, [40, 40, 50, 50])
    assert run(meta, [target, det("star", 0.9, [41, 40, 51, 50])]) == (False, "expected star below target, found  target")
    assert run(meta, [target, det("star", 0.9, [10, 10, 20, 20])]) == (
        False, "expected star below target, found left of and above target")


def test_position_needs_target_and_is_skipped_after_a_colour_failure():
    meta = {"tag": "position", "include": [{"class": "circle", "count": 1},
                                           {"class": "star", "count": 1, "color": "red", "position": ["left of", 0]}]}
    star = det("star", 0.9, [0, 40, 10, 50], "red")
    assert run(meta, [star]) == (False, "expected circle>=1, found 0\nno target for star to be left of")
    wrong_color = det("star", 0.9, [80, 40, 90, 50], "blue")  # also on the wrong side: only the colour is reported
    ok, reason = run(meta, [det("circle", 0.9, [40, 40, 50, 50]), wrong_color])
    assert not ok and reason == "expected red star>=1, found 0 red; and 1 blue"


def test_position_every_object_against_every_target():
    meta = {"tag": "position", "include": [{"class": "circle", "count": 2},
                                           {"class": "star", "count": 1, "position": ["left of", 0]}]}
    circles = [det("circle", 0.9, [40, 0, 50, 10]), det("circle", 0.8, [40, 60, 50, 70])]
    assert run(meta, circles + [det("star", 0.9, [0, 30, 10, 40])])[0]
    between = [det("circle", 0.9, [40, 0, 50, 10]), det("circle", 0.8, [0, 60, 10, 70])]
    ok, reason = run(meta, between + [det("star", 0.9, [20, 30, 30, 40])])
    assert not ok and reason.startswith("expected star left of target, found")


def test_position_target_must_be_an_earlier_clause():
    meta = {"tag": "position", "include": [{"class": "star", "count": 1, "position": ["left of", 1]},
                                           {"class": "circle", "count": 1}]}
    with pytest.raises(ValueError, match="earlier include clause"):
        run(meta, [det("star", 0.9, [0, 0, 5, 5]), det("circle", 0.9, [20, 0, 25, 5])])


def test_official_position_row():
    path = "/work/shared/data/geneval/evaluation_metadata.jsonl"
    try:
        with open(path) as f:
            row = next(json.loads(line) for line in f if '"position"' in line)
    except FileNotFoundError:
        pytest.skip("official GenEval metadata not available")
    ref, obj = row["include"][0]["class"], row["include"][1]["class"]
    rel = row["include"][1]["position"][0]
    dx, dy = {"left of": (-50, 0), "right of": (50, 0), "above": (0, -50), "below": (0, 50)}[rel]
    dets = [det(ref, 0.99, [100, 100, 140, 140]), det(obj, 0.99, [100 + dx, 100 + dy, 140 + dx, 140 + dy])]
    assert run(row, dets) == (True, "")


def test_result_row_schema():
    meta = {"tag": "counting", "include": [{"class": "star", "count": 2}], "exclude": [{"class": "star", "count": 3}],
            "prompt": "a photo of two stars"}
    dets = [det("star", 0.95, [0, 0, 5, 5]), det("star", 0.92, [9, 0, 14, 5]), det("star", 0.5, [20, 0, 25, 5]),
            det("circle", 0.99, [30, 0, 35, 5])]
    row = result_row("00000/samples/0000.png", meta, dets)
    assert list(row) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert row["correct"] is True and row["reason"] == "" and row["tag"] == "counting"
    assert json.loads(row["metadata"]) == meta
    details = json.loads(row["details"])
    assert details == {"star": [[0, 0, 5, 5, 0.95], [9, 0, 14, 5, 0.92]], "circle": [[30, 0, 35, 5, 0.99]]}
    json.dumps(row)  # serialisable as a results.jsonl line


def test_rule_options_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        RuleOptions(threshold=1.5)
    with pytest.raises(ValueError, match="max_objects"):
        RuleOptions(max_objects=0)


def test_ties_follow_numpy_argsort_like_geneval():
    dets = [det("star", 0.5, [0, 0, 1, 1]), det("star", 0.5, [5, 0, 6, 1]), det("star", 0.7, [9, 0, 10, 1])]
    kept = filter_detections(dets, "single_object")["star"]
    order = np.argsort(np.array([0.5, 0.5, 0.7]))[::-1]
    assert [d["box"][0] for d in kept] == [dets[i]["box"][0] for i in order]


# --- the threshold in the detector's dtype (issue #12) ----------------------------------------------------------


@pytest.mark.parametrize("tag, thr", [("single_object", 0.3), ("counting", 0.9)])
def test_threshold_is_compared_in_the_detectors_dtype(tag, thr):
    """GenEval compares mmdet's float32 scores with the threshold in float32 (numpy keeps the array's dtype), so a
    box scoring exactly float32(thr) is dropped; float64 scores are compared in float64, where it is kept."""
    f32 = np.float32(thr)
    assert float(f32) != thr  # the float32 neighbour of the threshold is a different float64 number
    below, above = np.nextafter(f32, np.float32(0)), np.nextafter(f32, np.float32(1))
    dets32 = [det("dog", s, (0, 0, 9, 9)) for s in (below, f32, above)]
    kept32 = filter_detections(dets32, tag)["dog"]
    assert [d["score"] for d in kept32] == [above]  # exactly float32(thr) is not above float32(thr)
    # the official comparison itself, for the record: a float32 array against the Python float threshold
    assert list(np.array([below, f32, above], dtype=np.float32) > thr) == [False, False, True]
    # the same numbers handed over as float64 (or Python floats): compared in float64, float32(thr) > thr
    for cast in (np.float64, float):
        kept64 = filter_detections([det("dog", cast(s), (0, 0, 9, 9)) for s in (below, f32, above)], tag)["dog"]
        want = [float(above), float(f32)] if float(f32) > thr else [float(above)]  # 0.3 rounds up in float32, 0.9 down
        assert [float(d["score"]) for d in kept64] == want
    # float64 scores just either side of the float64 threshold
    kept = filter_detections([det("dog", s, (0, 0, 9, 9)) for s in (thr, np.nextafter(thr, 1.0))], tag)
    assert [d["score"] for d in kept["dog"]] == [np.nextafter(thr, 1.0)]


def test_threshold_dtype_from_torch_scalars_and_mixed_lists():
    import torch

    f32 = torch.tensor(0.3, dtype=torch.float32)
    assert "dog" not in filter_detections([det("dog", f32, (0, 0, 9, 9))], "single_object")
    assert "dog" in filter_detections([det("dog", f32.double(), (0, 0, 9, 9))], "single_object")
    assert "dog" in filter_detections([det("dog", 1, (0, 0, 9, 9))], "single_object")  # an int score
