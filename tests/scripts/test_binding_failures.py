"""scripts/experiments/binding_failures.py: each failure kind from the detector's reading of a two-object image."""

import pytest
import torch

from tests.scripts.loader import load_script

bf = load_script("experiments/binding_failures.py")

RED_SQUARE_BLUE_HEXAGON = {"tag": "color_attr", "prompt": "a photo of a red square and a blue hexagon",
                           "include": [{"class": "square", "count": 1, "color": "red"},
                                       {"class": "hexagon", "count": 1, "color": "blue"}]}  # fmt: skip


def det(cls, color, x=2.0, score=0.9):
    return {"class": cls, "color": color, "score": score, "box": [x, 2.0, x + 8.0, 10.0]}


@pytest.mark.parametrize("detections, kind, missing", [
    ([det("square", "red"), det("hexagon", "blue", 16)], "correct", []),
    ([det("square", "red"), det("circle", "blue", 16)], "one class missing", ["hexagon"]),
    ([det("circle", "red"), det("circle", "blue", 16)], "both classes missing", ["square", "hexagon"]),
    ([det("square", "blue"), det("hexagon", "red", 16)], "colours swapped", []),
    ([det("square", "red"), det("hexagon", "red", 16)], "colour leaked", []),
    ([det("square", "blue"), det("hexagon", "blue", 16)], "colour leaked", []),
    ([det("square", "red"), det("hexagon", "green", 16)], "one colour wrong", []),
    ([det("square", "green"), det("hexagon", "pink", 16)], "both colours wrong", []),
    ([det("square", "red"), det("hexagon", "blue", 16, score=0.1)], "one class missing", ["hexagon"]),  # below the floor
])  # fmt: skip
def test_every_kind_of_colour_attribution_reading(detections, kind, missing):
    assert bf.failure_kind(RED_SQUARE_BLUE_HEXAGON, detections) == (kind, missing)


def test_two_objects_and_a_shared_class():
    two = {"tag": "two_object", "prompt": "a photo of a square and a heart",
           "include": [{"class": "square", "count": 1}, {"class": "heart", "count": 1}]}
    assert bf.failure_kind(two, [det("square", "red"), det("heart", "red", 16)]) == ("correct", [])
    assert bf.failure_kind(two, [det("square", "red")]) == ("one class missing", ["heart"])
    same = {**two, "include": [{"class": "square", "count": 1}, {"class": "square", "count": 1}]}
    with pytest.raises(ValueError, match="share a class"):
        bf.failure_kind(same, [])


def test_the_detector_reads_drawn_scenes_as_their_kind():
    """Oracle renders through the real detector: the prompt's own scene is correct, the swapped one is swapped."""
    from miro.data.shapes.detector import detect
    from miro.eval.geneval.shapes_oracle import oracle_generate_fn

    gen = oracle_generate_fn(resolution=64)
    right = gen("a photo of a red square and a blue hexagon", 1, torch.Generator().manual_seed(0))[0]
    swapped = gen("a photo of a blue square and a red hexagon", 1, torch.Generator().manual_seed(0))[0]
    assert bf.failure_kind(RED_SQUARE_BLUE_HEXAGON, detect(right))[0] == "correct"
    assert bf.failure_kind(RED_SQUARE_BLUE_HEXAGON, detect(swapped))[0] == "colours swapped"


def test_summary_shares_and_missing_classes():
    readings = [("color_attr", "correct", []), ("color_attr", "one class missing", ["hexagon"]),
                ("two_object", "both classes missing", ["star", "hexagon"])]
    out = bf.summarise(readings)
    assert out["color_attr"] == {"images": 2, "kinds_pct": {"correct": 50.0, "one class missing": 50.0},
                                 "missing_classes": {"hexagon": 1}}
    assert out["two_object"]["missing_classes"] == {"star": 1, "hexagon": 1}


def test_arguments():
    args = bf.parse_args(["--text-scale", "5", "--reward-scale", "0"])
    assert (args.text_scale, args.reward_scale, args.images, args.seed) == (5.0, 0.0, 4, 1)
    with pytest.raises(SystemExit):
        bf.parse_args(["--images", "0"])


def test_the_oracle_end_to_end_reads_the_worlds_own_scenes_right(tmp_path):
    """main --oracle: held-out prompts from a world folder, scenes drawn for them, the summary written."""
    import json

    rows = [RED_SQUARE_BLUE_HEXAGON, {"tag": "two_object", "prompt": "a photo of a star and a heart",
                                      "include": [{"class": "star", "count": 1}, {"class": "heart", "count": 1}]},
            {"tag": "colors", "prompt": "a photo of a red circle", "include": [{"class": "circle", "count": 1, "color": "red"}]}]  # fmt: skip
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "evaluation_metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = bf.main(["--oracle", "--resolution", "64", "--data", str(tmp_path), "--images", "2", "--out", str(tmp_path / "r.json")])
    assert out["tasks"]["color_attr"] == {"images": 2, "kinds_pct": {"correct": 100.0}, "missing_classes": {}}
    assert out["tasks"]["two_object"]["images"] == 2 and set(out["tasks"]) == {"color_attr", "two_object"}
    assert json.loads((tmp_path / "r.json").read_text()) == out
    with pytest.raises(SystemExit, match="no held-out prompts"):
        bf.main(["--oracle", "--data", str(tmp_path / "missing")])
