"""The shipped reference pipeline (models/shapes_reference) loads offline and follows the colour of its prompt.

A test on a real trained model that fails if text conditioning breaks: the same seeds rendered for "a red
circle" and "a blue circle", read by the shapes detector.  Chance for a named colour is about 1 in 10.
"""

from pathlib import Path

import pytest
import torch

from miro.data.shapes.detector import detect
from miro.demo.config import CLEAN_TARGETS
from miro.sampling.pipeline import MiroPipeline

FOLDER = Path(__file__).resolve().parents[2] / "models" / "shapes_reference"
SEEDS = range(8)


@pytest.fixture(scope="module")
def pipe():
    pipe = MiroPipeline.from_pretrained(FOLDER)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def colours_found(pipe, prompt: str) -> list[set[str]]:
    images = pipe([prompt] * len(SEEDS), reward_targets=CLEAN_TARGETS, guidance_scale=0.0, text_guidance_scale=3.0,
                  reward_guidance_scale=1.0, num_inference_steps=25,
                  generator=[torch.Generator().manual_seed(s) for s in SEEDS])
    return [{d["color"] for d in detect(image)} for image in images]


def test_it_is_the_demo_recipe_with_weight_free_rewards(pipe):
    assert pipe.reward_names == ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
    assert pipe.num_bins == 64 and pipe.default_image_size == 32
    assert sum(p.numel() for p in pipe.transformer.parameters()) < 3_000_000


def test_the_prompt_colour_moves_the_detectors_reading(pipe):
    red, blue = colours_found(pipe, "a photo of a red circle"), colours_found(pipe, "a photo of a blue circle")
    red_in = {"red prompt": sum("red" in f for f in red), "blue prompt": sum("red" in f for f in blue)}
    blue_in = {"red prompt": sum("blue" in f for f in red), "blue prompt": sum("blue" in f for f in blue)}
    assert red_in["red prompt"] >= 4 and red_in["blue prompt"] <= 1, red_in
    assert blue_in["blue prompt"] >= 4 and blue_in["red prompt"] <= 1, blue_in
