"""Caption parsing (round trip over thousands of generated captions) and the graded alignment score."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from miro.data.shapes.alignment import alignment_score, caption_alignment, parse_caption
from miro.data.shapes.captions import (
    clause,
    counting_metadata,
    free_prompt,
    geneval_prompt,
    metadata,
    position_metadata,
)
from miro.data.shapes.config import (
    CaptionConfig,
    DegradationsConfig,
    DegradationSpec,
    SceneConfig,
    ShapesConfig,
)
from miro.data.shapes.world import ShapesWorld

CLEAN = DegradationsConfig(**{k: DegradationSpec(prob=0.0) for k in ("clutter", "blur", "low_contrast", "color_cast", "noise", "jpeg")})


def test_parse_recovers_the_generators_intent_for_thousands_of_captions():
    world = ShapesWorld(ShapesConfig(out="x", resolution=64, seed=3, captions=CaptionConfig(wrong=0.3, synonyms=0.4)))
    kinds, phrasings, tags = set(), set(), set()
    for i in range(3000):
        d = world.draft(i)
        assert parse_caption(d.meta["prompt"]) == d.meta, d.meta["prompt"]
        kinds.add(d.kind)
        phrasings.add(d.phrasing)
        tags.add(d.meta["tag"])
    assert kinds == {"correct", "wrong_count", "wrong_color", "wrong_class", "wrong_relation"}
    assert phrasings == {"geneval", "free"}
    assert tags == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}


@pytest.mark.parametrize(
    "text, tag, include, exclude",
    [
        ("a photo of an orange hexagon", "colors", [clause("hexagon", 1, "orange")], None),
        ("Three green triangles on a plain background.", "counting", [clause("triangle", 3, "green")], [clause("triangle", 4)]),
        ("there is a blue star above an orange hexagon", "position",
         [clause("hexagon", 1, "orange"), clause("star", 1, "blue", ("above", 0))], None),
        ("a star to the left of a rhombus", "position", [clause("diamond"), clause("star", 1, None, ("left of", 0))], None),
        ("a disc together with a plus sign", "two_object", [clause("circle"), clause("cross")], None),
        ("an image of exactly 2 boxes", "counting", [clause("square", 2)], [clause("square", 3)]),
        ("a photo of a red heart and a white star", "color_attr", [clause("heart", 1, "red"), clause("star", 1, "white")], None),
    ],
)
def test_parse_examples(text, tag, include, exclude):
    expected = metadata(tag, include, exclude, prompt=text)
    assert parse_caption(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "a photo of a dog", "a photo of a stars", "a photo of two star", "an star", "a orange hexagon",
     "a star left of", "a star and", "a photo of five stars", "three red", None, "a star next to a circle"],
)
def test_unparseable_captions(text):
    assert parse_caption(text) is None


def test_parse_returns_independent_copies():
    a = parse_caption("a star above a circle")
    a["include"][1]["position"][0] = "below"
    assert parse_caption("a star above a circle")["include"][1]["position"][0] == "above"


def test_geneval_phrasing_matches_official_prompts():
    # exact sentences of GenEval's create_prompts.py for each task shape (with shapes-world nouns)
    assert geneval_prompt(metadata("single_object", [clause("star")])) == "a photo of a star"
    assert geneval_prompt(metadata("two_object", [clause("star"), clause("circle")])) == "a photo of a star and a circle"
    assert geneval_prompt(counting_metadata("cross", 3)) == "a photo of three crosses"
    assert geneval_prompt(metadata("colors", [clause("heart", 1, "orange")])) == "a photo of an orange heart"
    assert geneval_prompt(position_metadata(clause("star"), "right of", clause("circle"))) == "a photo of a star right of a circle"
    assert geneval_prompt(metadata("color_attr", [clause("star", 1, "red"), clause("circle", 1, "blue")])) == (
        "a photo of a red star and a blue circle")


def test_free_prompts_vary():
    rng = np.random.default_rng(0)
    meta = position_metadata(clause("star", 1, "blue"), "above", clause("hexagon", 1, "orange"))
    texts = {free_prompt(meta, rng, 0.5) for _ in range(200)}
    assert len(texts) > 30


def det(cls, color, box, score=0.99):
    return {"class": cls, "score": score, "box": box, "mask": None, "color": color}


def test_alignment_score_partial_credit():
    star_red = det("star", "red", [0, 20, 10, 30])
    circle_blue = det("circle", "blue", [40, 20, 50, 30])
    attr = metadata("color_attr", [clause("star", 1, "red"), clause("circle", 1, "blue")])
    assert alignment_score(attr, [star_red, circle_blue]) == 1.0
    swapped = metadata("color_attr", [clause("star", 1, "blue"), clause("circle", 1, "red")])
    assert alignment_score(swapped, [star_red, circle_blue]) == 0.5  # both present, no colour right
    assert alignment_score(metadata("single_object", [clause("heart")]), [star_red]) == 0.0
    left = position_metadata(clause("star"), "left of", clause("circle"))
    right = position_metadata(clause("star"), "right of", clause("circle"))
    assert alignment_score(left, [star_red, circle_blue]) == 1.0
    assert alignment_score(right, [star_red, circle_blue]) == 0.75  # target 1, star: count 1 and relation 0
    assert alignment_score(right, [star_red]) == pytest.approx((0 + 0.5) / 2)  # no target: relation 0
    three = [det("star", "red", [12 * i, 0, 12 * i + 10, 10]) for i in range(3)]
    assert alignment_score(counting_metadata("star", 3), three) == 1.0
    assert alignment_score(counting_metadata("star", 2), three) == pytest.approx(2 / 3)  # exact count asked
    assert alignment_score(counting_metadata("star", 4), three) == pytest.approx(3 / 4)
    # a colour is found among more objects than asked: the red one counts
    blue_first = [det("star", "blue", [0, 0, 10, 10], 0.99), det("star", "red", [20, 0, 30, 10], 0.95)]
    assert alignment_score(metadata("colors", [clause("star", 1, "red")]), blue_first) == 1.0


def test_alignment_score_uses_genevals_filter():
    weak = det("star", "red", [0, 0, 10, 10], score=0.3)
    assert alignment_score(metadata("single_object", [clause("star")]), [weak]) == 0.0
    counted = [det("star", "red", [12 * i, 0, 12 * i + 10, 10], 0.8) for i in range(2)]
    assert alignment_score(counting_metadata("star", 2), counted) == 0.0  # counting threshold 0.9


def test_caption_alignment_on_rendered_images():
    world = ShapesWorld(ShapesConfig(out="x", resolution=64, seed=5, degradations=CLEAN, captions=CaptionConfig(wrong=0.5)))
    by_kind: dict[str, list[float]] = {}
    for i in range(120):
        s = world.sample(i)
        img = Image.open(io.BytesIO(s.image))
        by_kind.setdefault(s.record["caption_kind"], []).append(caption_alignment(img, s.caption))
    correct = np.mean(by_kind.pop("correct"))
    wrong = np.mean([v for vs in by_kind.values() for v in vs])
    assert correct > 0.97 and wrong < 0.6, (correct, wrong)
    assert math.isnan(caption_alignment(img, "a photo of a dog"))


def test_caption_alignment_scores_swapped_colours_below_the_true_binding():
    world = ShapesWorld(ShapesConfig(out="x", resolution=64, seed=5, degradations=CLEAN, scene=SceneConfig(
        tasks={"color_attr": 1.0}), captions=CaptionConfig(wrong=0.5, wrong_kinds={"swapped_colors": 1.0})))
    by_kind: dict[str, list[float]] = {}
    for i in range(60):
        s = world.sample(i)
        by_kind.setdefault(s.record["caption_kind"], []).append(caption_alignment(Image.open(io.BytesIO(s.image)), s.caption))
    assert len(by_kind["swapped_colors"]) > 15
    assert np.mean(by_kind["correct"]) > 0.97 and np.mean(by_kind["swapped_colors"]) < 0.6, by_kind
