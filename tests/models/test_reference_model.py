"""The shipped reference pipeline (models/shapes_reference) loads offline and follows the colour and the class of
its prompt.

Tests on a real trained model that fail if text conditioning breaks: the same seeds rendered for "a red circle"
and "a blue circle", then for "a red circle" and "a red square", read by the shapes detector.  Chance for a named
colour is about 1 in 10, for a named class 1 in 8.
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


def found(pipe, prompt: str, key: str) -> list[set[str]]:
    """The detector's ``key`` ("color" or "class") of every object in each of the seeds' images for ``prompt``."""
    images = pipe([prompt] * len(SEEDS), reward_targets=CLEAN_TARGETS, guidance_scale=0.0, text_guidance_scale=3.0,
                  reward_guidance_scale=1.0, num_inference_steps=25,
                  generator=[torch.Generator().manual_seed(s) for s in SEEDS])
    return [{d[key] for d in detect(image)} for image in images]


def test_it_is_the_demo_recipe_with_weight_free_rewards(pipe):
    assert pipe.reward_names == ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]
    assert pipe.num_bins == 64 and pipe.default_image_size == 32
    assert type(pipe.transformer).__name__ == "MiroUNet"  # model.backbone: unet (tiny_sd_unet)
    assert sum(p.numel() for p in pipe.transformer.parameters()) < 5_000_000


@pytest.mark.parametrize("key, words", [("color", ("red", "blue")), ("class", ("circle", "square"))])
def test_the_prompts_colour_and_class_move_the_detectors_reading(pipe, key, words):
    """Two prompts that differ in one word, the same seeds: each word is read in at least half of its own
    prompt's images and at most one of the other's."""
    prompts = {"color": "a photo of a {} circle", "class": "a photo of a red {}"}[key]
    seen = {w: found(pipe, prompts.format(w), key) for w in words}
    for word in words:
        counts = {f"{p} prompt": sum(word in f for f in seen[p]) for p in words}
        other = next(p for p in words if p != word)
        assert counts[f"{word} prompt"] >= 4 and counts[f"{other} prompt"] <= 1, (word, counts)
