"""The one sampling-settings schema: its checks, and that the pipeline resolves and returns it."""

import numpy as np
import pytest
import torch

from miro.flow.solvers import METHODS
from miro.sampling.guidance import Guidance
from miro.sampling.settings import SamplingSettings
from miro.utils.config import ConfigError, to_typed


def test_defaults_are_the_authors_pipeline():
    s = SamplingSettings()
    assert (s.guidance_scale, s.steps, s.sampler, s.guidance_interval) == (7.0, 50, "euler", [0.0, 1.0])
    assert s.reward_targets == {} and s.negative_reward_targets == {} and s.reward_guidance_weights == {}
    assert s.guidance(["a", "b"]) == Guidance.joint(7.0, 2)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"steps": 0}, r"settings.steps=0: must be >= 1"),
        ({"sampler": "rk4"}, r"settings.sampler='rk4': must be one of " + repr(list(METHODS)).replace("[", r"\[").replace("]", r"\]")),
        ({"guidance_scale": float("nan")}, r"settings.guidance_scale=nan: must be a finite number"),
        ({"text_guidance_scale": float("inf")}, r"settings.text_guidance_scale=inf"),
        ({"reward_guidance_weights": {"aesthetic": float("nan")}}, r"settings.reward_guidance_weights.aesthetic=nan"),
        ({"guidance_interval": [0.5, 0.2]}, r"settings.guidance_interval=\[0.5, 0.2\]: must be \[t_lo, t_hi\] with 0 <= t_lo <= t_hi <= 1"),
        ({"guidance_interval": [0.1]}, r"settings.guidance_interval=\[0.1\]"),
        ({"reward_targets": {"aesthetic": 1.5}}, r"settings.reward_targets.aesthetic=1.5: must be in \[0, 1\]"),
        ({"negative_reward_targets": {"sharpness": -0.1}}, r"settings.negative_reward_targets.sharpness=-0.1"),
        ({"reward_targets": {"aesthetic": True}}, r"settings.reward_targets.aesthetic=True"),
        ({"reward_targets": [0.5]}, r"settings.reward_targets=\[0.5\]: must be a mapping"),
        ({"height": 0}, r"settings.height=0: must be a positive number of pixels"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        SamplingSettings(**kw)


def test_typed_from_yaml_values():
    s = to_typed({"reward_targets": {"aesthetic": 0.5, "pickscore": None}, "steps": 3, "sampler": "heun"}, SamplingSettings)
    assert s.reward_targets == {"aesthetic": 0.5, "pickscore": None} and s.steps == 3 and s.sampler == "heun"
    with pytest.raises(ConfigError, match="steps"):
        to_typed({"steps": "many"}, SamplingSettings)


def test_updated_takes_the_pipeline_names():
    s = SamplingSettings(guidance_scale=2.0).updated(num_inference_steps=4, sampler="heun")
    assert (s.steps, s.sampler, s.guidance_scale) == (4, "heun", 2.0)
    with pytest.raises(TypeError, match="not sampling settings"):
        s.updated(num_images=3)
    with pytest.raises(ConfigError, match="settings.steps=0"):
        s.updated(steps=0)


def test_pipeline_accepts_the_settings_like_its_keyword_arguments(tiny_pipe):
    kw = dict(reward_targets={"aesthetic": 0.25}, negative_reward_targets={"pickscore": None}, guidance_scale=2.0,
              text_guidance_scale=1.0, reward_guidance_weights={"sharpness": 0.5}, guidance_interval=(0.1, 0.9),
              num_inference_steps=3, sampler="heun")
    settings = SamplingSettings(reward_targets={"aesthetic": 0.25}, negative_reward_targets={"pickscore": None},
                                guidance_scale=2.0, text_guidance_scale=1.0, reward_guidance_weights={"sharpness": 0.5},
                                guidance_interval=[0.1, 0.9], steps=3, sampler="heun")
    by_kwargs = tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="pt", **kw)
    by_settings = tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="pt", settings=settings)
    torch.testing.assert_close(by_kwargs, by_settings, rtol=0, atol=0)
    # a keyword argument overrides the settings' field
    other = tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="pt", settings=settings,
                      num_inference_steps=2)
    direct = tiny_pipe("a red circle", generator=torch.Generator().manual_seed(0), output_type="pt",
                       **{**kw, "num_inference_steps": 2})
    torch.testing.assert_close(other, direct, rtol=0, atol=0)


def test_pipeline_returns_what_it_resolved(tiny_pipe):
    from miro.sampling.sampler import total_nfe

    settings = SamplingSettings(reward_targets={"aesthetic_score": 0.5, "pickscore": None}, text_guidance_scale=2.0,
                                reward_guidance_weights={"pick_a_score_score": 1.0}, steps=2)
    out = tiny_pipe(["a", "b"], num_images_per_prompt=2, settings=settings, output_type="np", return_dict=True)
    assert out.images.shape[0] == 4 and len(out.reward_targets) == 4 and len(out.negative_reward_targets) == 4
    assert out.reward_targets[0] == {"sharpness": 1.0, "aesthetic": 0.5, "pickscore": None}
    assert out.negative_reward_targets[3] == {"sharpness": 0.0, "aesthetic": 0.0, "pickscore": 0.0}
    assert out.guidance == Guidance(2.0, (7.0, 7.0, 1.0), (0.0, 1.0))
    tiny_pipe.scheduler.set_timesteps(2)
    assert out.nfe == total_nfe(out.guidance, tiny_pipe.scheduler.sigmas) and out.settings == settings
    # per-prompt targets (a list) are the call's own: resolved per image, prompt-major
    out = tiny_pipe(["a", "b"], num_images_per_prompt=2, settings=settings, output_type="np", return_dict=True,
                    reward_targets=[{"sharpness": 0.0}, {"sharpness": 0.75}])
    assert [t["sharpness"] for t in out.reward_targets] == [0.0, 0.0, 0.75, 0.75]
    assert np.isfinite(out.images).all()
