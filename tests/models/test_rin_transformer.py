"""MiroRINTransformer: the authors' RIN behind the package's model contract (``model.backbone: rin``)."""

from __future__ import annotations

import pytest
import torch

from miro.flow import flow_sigmas
from miro.models.config import ModelConfig, RINConfig, build_model, load_preset
from miro.models.flops import counted_flops
from miro.models.rin_transformer import MiroRINTransformer
from miro.sampling.guidance import Guidance
from miro.sampling.sampler import Conditions, guided_velocity, sample
from miro.utils.config import ConfigError, to_typed

SMALL = dict(patch_size=4, data_dim=16, num_latents=6, latents_dim=24, num_blocks=1, num_processing_layers=1,
             read_write_heads=2, compute_heads=2, mixer_heads=2, mixer_depth=1, num_text_registers=2)
REWARDS = ["sharpness", "contrast"]


def small(reward_names=REWARDS, seed=0, live_self_conditioning=True, **overrides) -> MiroRINTransformer:
    torch.manual_seed(seed)
    model = MiroRINTransformer(reward_names=reward_names, text_dim=8, in_channels=3, sample_size=16,
                               **{**SMALL, **overrides}).eval()
    if live_self_conditioning and model.self_conditioning:  # zero-initialised: give it an effect to test
        with torch.no_grad():
            model.rin.ln_previous_2.weight.normal_(0, 0.5)
    return model


def inputs(b=3, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, 16, 16, generator=g)
    t = torch.rand(b, generator=g)
    text = torch.randn(b, length, 8, generator=g)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, 3:] = False
    rewards = torch.rand(b, 2, generator=g)
    return x, t, text, mask, rewards, torch.ones(b, 2, dtype=torch.bool)


def test_velocity_is_the_authors_preconditioned_rin_at_gamma_one_minus_t():
    model = small()
    x, t, text, mask, rewards, rmask = inputs()
    v = model(x, t, text, mask, rewards, rmask)
    gamma = 1 - t
    c_in = 1 / torch.sqrt((gamma * 0.5) ** 2 + (1 - gamma) ** 2)
    out, _ = model.rin(x * c_in[:, None, None, None], gamma, text, mask, rewards, rmask, model.rin.zero_latents(3, "cpu"))
    torch.testing.assert_close(v, out * (1 + 0.5**2) ** 0.5, atol=1e-5, rtol=1e-5)
    # the split call a sampler uses (condition once per run) gives the same
    cond = model.encode_condition(text, mask, rewards, rmask)
    torch.testing.assert_close(model.velocity(x, t, **cond), v, atol=0, rtol=0)


def test_dropped_text_is_the_learned_null_token_and_a_masked_reward_is_never_read():
    model = small()
    x, t, text, mask, rewards, rmask = inputs()
    drop = torch.tensor([False, True, False])
    v = model(x, t, text, mask, rewards, rmask, drop_text=drop)
    other = text.clone()
    other[1] = torch.randn_like(other[1])
    assert torch.equal(model(x, t, other, mask, rewards, rmask, drop_text=drop)[1], v[1])  # text of a dropped row unused
    assert not torch.allclose(model(x, t, other, mask, rewards, rmask)[1], v[1])
    with torch.no_grad():
        model.null_text.add_(1.0)
    changed = model(x, t, text, mask, rewards, rmask, drop_text=drop)
    assert not torch.allclose(changed[1], v[1]) and torch.equal(changed[0], v[0])
    masked = rmask.clone()
    masked[2, 0] = False
    a = model(x, t, text, mask, rewards, masked)
    rewards2 = rewards.clone()
    rewards2[2, 0] = 0.123
    assert torch.equal(model(x, t, text, mask, rewards2, masked), a)
    assert not torch.allclose(a[2], model(x, t, text, mask, rewards, rmask)[2])


def test_padding_does_not_change_the_output():
    """Padded text tokens are never read: the training loop pads every batch to one length for CUDA graphs."""
    model = small()
    x, t, text, mask, rewards, reward_mask = inputs()
    longer = torch.cat([text, torch.randn(3, 4, 8)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, longer, longer_mask, rewards, reward_mask),
                                   model(x, t, text, mask, rewards, reward_mask), rtol=1e-5, atol=1e-6)


def test_self_conditioning_latents_in_and_out():
    model = small()
    x, t, text, mask, rewards, rmask = inputs()
    v0, z = model(x, t, text, mask, rewards, rmask, return_latents=True)
    assert z.shape == (3, 6, 24)
    assert torch.equal(model(x, t, text, mask, rewards, rmask, previous_latents=torch.zeros_like(z)), v0)
    assert not torch.allclose(model(x, t, text, mask, rewards, rmask, previous_latents=z), v0)
    fresh = small(live_self_conditioning=False)  # the authors' init: the latent MLP ends in a zero LayerNorm
    assert torch.equal(fresh(x, t, text, mask, rewards, rmask, previous_latents=z),
                       fresh(x, t, text, mask, rewards, rmask))
    assert not small(use_self_conditioning=False).self_conditioning


def test_no_reward_baseline_ignores_rewards():
    model = small(reward_names=[])
    x, t, text, mask, rewards, rmask = inputs()
    v = model(x, t, text, mask)
    assert v.shape == x.shape and torch.isfinite(v).all()
    assert torch.equal(model(x, t, text, mask, rewards[:, :0], rmask[:, :0]), v)


def test_bad_inputs_name_the_argument():
    model = small()
    x, t, text, mask, rewards, rmask = inputs()
    with pytest.raises(ValueError, match=r"x: expected \[B, 3, 16, 16\]"):
        model(torch.randn(3, 3, 32, 32), t, text, mask, rewards, rmask)
    with pytest.raises(ValueError, match=r"text: expected \[3, L, 8\]"):
        model(x, t, text[..., :4], mask, rewards, rmask)
    with pytest.raises(ValueError, match=r"rewards: expected \[3, 2\]"):
        model(x, t, text, mask, rewards[:, :1], rmask)


@pytest.mark.parametrize("values,message", [
    ({"latents_dim": 30}, "model.rin.latents_dim=30: must be a multiple of 4"),
    ({"latents_dim": 24, "compute_heads": 5}, "model.rin.compute_heads=5: must divide latents_dim=24"),
    ({"num_blocks": 0}, "model.rin.num_blocks=0: must be an int >= 1"),
    ({"normalization": "edm"}, "model.rin.normalization='edm'"),
    ({"sigma_data": 0.0}, "model.rin.sigma_data=0.0: must be > 0"),
])
def test_config_errors_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        to_typed({"backbone": "rin", "rin": values}, ModelConfig)
    with pytest.raises(ConfigError, match="model.backbone='vit': must be one of"):
        to_typed({"backbone": "vit"}, ModelConfig)


def test_preset_builds_the_rin_and_the_stride_follows_its_patch():
    cfg = load_preset("tiny_rin")
    assert cfg.backbone == "rin" and cfg.spatial_stride == cfg.rin.patch_size == 4
    model = build_model(cfg, reward_names=REWARDS, text_dim=8, in_channels=3, sample_size=32)
    assert isinstance(model, MiroRINTransformer) and model.reward_names == REWARDS
    assert model.config.sample_size == 32 and model.spatial_stride == 4
    assert ModelConfig().spatial_stride == 2  # the DiT's


@pytest.mark.parametrize("selfcond", [True, False])
def test_training_flops_are_the_counted_forward_times_four_with_self_conditioning(selfcond):
    model = small(use_self_conditioning=selfcond)
    x, t, text, mask, rewards, rmask = inputs(b=1)
    forward = counted_flops(lambda: model(x, t, text, mask, rewards, rmask))
    assert forward > 0 and model.training_flops(16, 16, 5) == forward * (4 if selfcond else 3)


def plain_guided_loop(model, noise, conds, guidance, sigmas):
    """Euler with the guidance branches evaluated one by one, each fed its own previous latents."""
    x, latents = noise.clone(), {}
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        v = torch.zeros_like(x)
        for branch in guidance.branches(guidance.active(float(t))):
            inp = conds.branch(branch)
            key = (branch.text, branch.positive)
            out, latents[key] = model(x, t.expand(x.shape[0]), **inp, previous_latents=latents.get(key),
                                      return_latents=True)
            v = v + branch.coef * out
        x = x + (t_next - t) * v
    return x


@pytest.mark.parametrize("interval", [(0.0, 1.0), (0.3, 0.8)])
def test_sampler_carries_each_branch_latents_to_the_next_step(interval):
    model = small()
    x, _, text, mask, rewards, rmask = inputs(b=2, seed=3)
    conds = Conditions(text[:2], mask[:2], rewards, rmask, torch.zeros_like(rewards), rmask.clone())
    guidance = Guidance(text_scale=2.0, reward_scales=(1.0, 1.0), interval=interval)
    sigmas = flow_sigmas(6)
    with torch.no_grad():
        expected = plain_guided_loop(model, x, conds, guidance, sigmas)
        for batch_branches in (True, False):
            got = sample(model, x, conds, guidance, sigmas, batch_branches=batch_branches)
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
        # without carrying the latents the result differs (the test can fail)
        stateless = guided_velocity(model, conds, guidance)
        y = x.clone()
        for t, t_next in zip(sigmas[:-1], sigmas[1:]):
            stateless_v = stateless(y, t.expand(2))
            stateless = guided_velocity(model, conds, guidance)  # a fresh function: no latents
            y = y + (t_next - t) * stateless_v
        assert not torch.allclose(y, expected, atol=1e-3)


def test_pipeline_round_trip_samples_the_same_images(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.models.autoencoders import IdentityAutoencoder
    from miro.sampling.pipeline import MiroPipeline
    from tests.train.tiny import TinyTextEncoder

    model = small()
    from miro.models.config import AutoencoderConfig, TextEncoderConfig

    pipe = MiroPipeline(transformer=model, scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=TinyTextEncoder(),
                        autoencoder=IdentityAutoencoder(), autoencoder_config=AutoencoderConfig(),
                        text_encoder_config=TextEncoderConfig(max_length=TinyTextEncoder().max_length))
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = MiroPipeline.from_pretrained(tmp_path / "pipe", text_encoder=TinyTextEncoder())
    assert type(loaded.transformer) is MiroRINTransformer and loaded.reward_names == REWARDS
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.transformer.state_dict()[k], v), k
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0, output_type="np", reward_targets={"contrast": 0.7})
    a = pipe(["a red circle", "two squares"], generator=torch.Generator().manual_seed(0), **kwargs)
    b = loaded(["a red circle", "two squares"], generator=torch.Generator().manual_seed(0), **kwargs)
    assert a.shape == (2, 16, 16, 3) and (a == b).all()
    with pytest.raises(ValueError, match="height=32 and width=32: this RIN samples 16 x 16 only"):
        loaded(["a red circle"], height=32, width=32, num_inference_steps=1)
    assert RINConfig().patch_size == MiroRINTransformer().config.patch_size


# one RIN block of the small model: the condition, read and write cross-attentions (q, kv, out each) and one
# processing self-attention (qkv, out) = 11 projections; their 4 SwiGLU MLPs = 8 linears; "all" adds the one-layer
# condition mixer (qkv, out, and its 2 MLP linears)
@pytest.mark.parametrize("targets,expected", [("attention", 11), ("attention_mlp", 19), ("all", 23)])
def test_lora_presets_reach_the_rin_and_round_trip(tmp_path, targets, expected):
    """The package's LoRA (peft) on the RIN: the presets match its attention (and MLP) projections, a fresh
    adapter changes nothing, and save / load gives the adapted output back bit for bit."""
    from miro.models.lora import LoraSpec, add_lora, load_lora, lora_parameters, save_lora

    model = small()
    args = inputs()
    base = model(*args)
    add_lora(model, LoraSpec(rank=2, alpha=4.0, targets=targets))
    assert len([n for n, m in model.named_modules() if hasattr(m, "lora_A")]) == expected
    assert torch.equal(model(*args), base)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(0, 0.05)
    adapted = model(*args)
    assert not torch.allclose(adapted, base)
    save_lora(model, tmp_path / "ad")
    fresh = small()
    load_lora(fresh, tmp_path / "ad")
    assert torch.equal(fresh(*args), adapted)
