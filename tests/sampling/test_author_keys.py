"""Sampling takes the MIRO authors' seven reward keys wherever it takes a reward name, through the contract."""

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from miro.contracts.rewards import AUTHOR_KEYS
from miro.models.config import AutoencoderConfig, TextEncoderConfig
from miro.sampling.pipeline import MiroPipeline
from miro.sampling.settings import SamplingSettings
from miro.sampling.sliders import reward_sweep
from tests.sampling.conftest import tiny_transformer

# theirs -> ours, written out from reference/miro.md section 1 (not read from the contract under test)
THEIRS = {"aesthetic_score": "aesthetic", "image_reward_score": "imagereward", "pick_a_score_score": "pickscore",
          "hpsv2_score": "hpsv2", "vqa_score": "vqascore", "sciscore_score": "sciscore", "clip_score": "jina_clip"}
SEVEN = ["jina_clip", "aesthetic", "imagereward", "pickscore", "hpsv2", "vqascore", "sciscore"]  # their order


@pytest.fixture(scope="module")
def seven_pipe(text_encoder):
    """A tiny model conditioned on the authors' seven rewards under our names (as load_authors_checkpoint maps them)."""
    pipe = MiroPipeline(transformer=tiny_transformer(reward_names=SEVEN, seed=3), scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
                        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
                        autoencoder_config=AutoencoderConfig(kind="identity"), num_bins=8, text_encoder=text_encoder,
                        recommended_reward_targets={"clip_score": 0.75, "vqa_score": 0.5})  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call(pipe, **kw):
    return pipe(["a red circle"], num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="pt", **kw)


def test_the_contract_maps_exactly_the_seven():
    assert AUTHOR_KEYS == THEIRS


def test_pipeline_targets_negatives_and_weights_take_their_keys(seven_pipe):
    assert seven_pipe.recommended_reward_targets == {"jina_clip": 0.75, "vqascore": 0.5}
    values = {t: round(0.1 + 0.1 * i, 2) for i, t in enumerate(THEIRS)}
    weights = {t: 1.0 + i for i, t in enumerate(THEIRS)}
    negatives = {"image_reward_score": 0.25, "sciscore_score": None}
    theirs = _call(seven_pipe, reward_targets=values, negative_reward_targets=negatives, reward_guidance_weights=weights,
                   text_guidance_scale=2.0, reward_guidance_scale=3.0)  # fmt: skip
    ours = _call(seven_pipe, reward_targets={THEIRS[k]: v for k, v in values.items()},
                 negative_reward_targets={"imagereward": 0.25, "sciscore": None},
                 reward_guidance_weights={THEIRS[k]: v for k, v in weights.items()}, text_guidance_scale=2.0,
                 reward_guidance_scale=3.0)  # fmt: skip
    assert torch.equal(theirs, ours)
    other = _call(seven_pipe, reward_targets={THEIRS[k]: v for k, v in values.items()}, text_guidance_scale=2.0,
                  reward_guidance_scale=3.0)  # without the negatives and weights: another image, so they took effect
    assert (other - ours).abs().max() > 1e-3
    out = seven_pipe(["a red circle"], num_inference_steps=2, reward_targets={"clip_score": 0.2}, output_type="pt",
                     return_dict=True)  # their clip_score is jina_clip in a model that has no OpenAI clip_score
    assert out.reward_targets[0]["jina_clip"] == pytest.approx(0.2)


def test_settings_and_sliders_take_their_keys(seven_pipe):
    settings = SamplingSettings(steps=2, reward_targets={"hpsv2_score": 0.3}, reward_guidance_weights={"vqa_score": 2.0})
    a = seven_pipe(["a star"], generator=torch.Generator().manual_seed(1), output_type="pt", settings=settings)
    b = seven_pipe(["a star"], generator=torch.Generator().manual_seed(1), output_type="pt",
                   settings=SamplingSettings(steps=2, reward_targets={"hpsv2": 0.3}, reward_guidance_weights={"vqascore": 2.0}))
    assert torch.equal(a, b)
    sweep = reward_sweep(seven_pipe, "a star", "pick_a_score_score", targets=[0.0, 1.0], seeds=[2],
                         fixed_targets={"sciscore_score": 0.5}, num_inference_steps=2)  # fmt: skip
    assert sweep.reward == "pickscore" and sweep.fixed_targets["sciscore"] == 0.5
    ours = reward_sweep(seven_pipe, "a star", "pickscore", targets=[0.0, 1.0], seeds=[2], fixed_targets={"sciscore": 0.5},
                        num_inference_steps=2)  # fmt: skip
    for x, y in zip(sweep.images, ours.images):
        assert np.array_equal(np.asarray(x[0]), np.asarray(y[0]))
    with pytest.raises(ValueError, match=r"gives reward 'pickscore' twice"):
        seven_pipe(["a star"], num_inference_steps=2, reward_targets={"pickscore": 0.1, "pick_a_score_score": 0.2})
