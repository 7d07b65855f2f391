import pytest
import torch

from miro.sampling.settings import SamplingSettings
from miro.testtime.render import Renderer, derived_seed, to_pil
from miro.utils.config import ConfigError
from tests.testtime.conftest import SETTINGS


def test_candidate_zero_is_the_pipelines_sample_bit_for_bit(tiny_pipe, renderer):
    for settings in (SETTINGS, SamplingSettings(steps=2, reward_targets={"aesthetic": 0.25, "pickscore": None},
                                                text_guidance_scale=2.0, sampler="heun")):  # fmt: skip
        r = Renderer(tiny_pipe, settings)
        got, rows = r.render("a red circle", r.noise(5), r.default)
        want = tiny_pipe(
            "a red circle", generator=torch.Generator().manual_seed(5), output_type="pt", settings=settings
        )
        assert torch.equal(got, want)
        assert rows == r.one_sample_nfe() == tiny_pipe("a red circle", settings=settings, return_dict=True,
                                                       output_type="pt").nfe  # fmt: skip
    assert to_pil(got)[0].size == (8, 8)


def test_the_stochastic_sampler_is_refused(tiny_pipe):
    """A candidate must be a function of its initial noise (noise search moves it, ReNO differentiates it)."""
    with pytest.raises(ConfigError, match="settings.sampler='sde': test-time search needs"):
        Renderer(tiny_pipe, SETTINGS.updated(sampler="sde"))


def test_rows_with_different_conditions_render_as_they_would_alone(renderer):
    a = renderer.default.replace(s_plus={"aesthetic": 0.0}, w=3.0)
    b = renderer.default.replace(s_minus={"sharpness": 1.0})
    noise = torch.cat([renderer.noise(0), renderer.noise(0, 1), renderer.noise(0, 2)])
    both, rows = renderer.render("a star", noise, [a, b, a])
    assert rows == 3 * renderer.one_sample_nfe()  # two guidance groups: rows [0, 2] and [1]
    for i, c in enumerate([a, b, a]):
        alone, _ = renderer.render("a star", noise[i : i + 1], c)
        torch.testing.assert_close(both[i : i + 1], alone, atol=1e-5, rtol=0)


def test_noise_streams_are_seeded_and_independent(renderer):
    assert torch.equal(renderer.noise(1, 2), renderer.noise(1, 2))
    draws = [renderer.noise(1, j) for j in range(3)] + [
        renderer.noise(1, 0, "neighbour"),
        renderer.noise(2, 1),
    ]
    assert all(not torch.equal(x, y) for i, x in enumerate(draws) for y in draws[i + 1 :])
    assert len({derived_seed(s, 0, j) for s in range(5) for j in range(5)}) == 25
    assert renderer.noise(0).shape == (1, 3, 8, 8) and renderer.noise_dim == 192


def test_differentiable_decode_gives_the_same_images_with_a_gradient(renderer):
    z = renderer.noise(0).requires_grad_(True)
    with torch.enable_grad():
        conds = renderer.conditions("a red circle", [renderer.default])
        img = renderer.decode(renderer.sample(z, conds, renderer.guidance()), differentiable=True)
        (g,) = torch.autograd.grad(img.mean(), z)
    plain, _ = renderer.render("a red circle", renderer.noise(0), renderer.default)
    torch.testing.assert_close(img.detach(), plain, atol=1e-6, rtol=0)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_a_conditions_scale_is_the_text_scale_when_guidance_is_decoupled(tiny_pipe):
    """With decoupled guidance the joint scale is unused: w stands for the text scale (else condition search over
    w would move nothing), the default condition keeps the settings' scales, and another w changes the image."""
    joint = Renderer(tiny_pipe, SETTINGS.updated(guidance_scale=4.0))
    assert joint.scale_field == "guidance_scale" and joint.default.guidance_scale == 4.0
    g = joint.guidance(joint.default.replace(w=2.0))
    assert g.text_scale == 2.0 and set(g.reward_scales) == {2.0}
    r = Renderer(tiny_pipe, SETTINGS.updated(guidance_scale=7.0, text_guidance_scale=3.0, reward_guidance_scale=1.0))
    assert r.scale_field == "text_guidance_scale" and r.default.guidance_scale == 3.0
    assert r.guidance() == r.settings.guidance(r.names)
    g = r.guidance(r.default.replace(w=5.0))
    assert g.text_scale == 5.0 and set(g.reward_scales) == {1.0}
    a, _ = r.render("a red circle", r.noise(0), r.default)
    b, _ = r.render("a red circle", r.noise(0), r.default.replace(w=5.0))
    assert (a - b).abs().max() > 1e-3
