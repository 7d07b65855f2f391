"""MiroUNet: diffusers' U-Net on the project's condition set, behind the project's model call."""

import pytest
import torch

from miro.models.config import ModelConfig, UNetConfig, build_model, load_preset
from miro.models.unet import MiroUNet
from miro.utils.config import ConfigError, to_typed

REWARDS = ["sharpness", "contrast"]
SMALL = dict(in_channels=3, sample_size=16, text_dim=8, reward_names=REWARDS, block_out_channels=(8, 16),
             attention_head_dim=4, norm_num_groups=4, cond_width=16, cond_heads=2, reward_fourier_dim=8)


def small(seed=0, **kw) -> MiroUNet:
    torch.manual_seed(seed)
    model = MiroUNet(**{**SMALL, **kw}).eval()
    with torch.no_grad():  # every weight away from its init, so no zero-initialised layer hides a condition
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def inputs(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, 16, 16, generator=g), torch.rand(b, generator=g), torch.randn(b, 5, 8, generator=g),
            torch.ones(b, 5, dtype=torch.bool), torch.rand(b, 2, generator=g))


@torch.no_grad()
def test_the_velocity_reads_the_text_the_rewards_and_t_and_a_dropped_prompt_is_the_null_condition():
    model = small()
    x, t, text, mask, rewards = inputs()
    out = model(x, t, text, mask, rewards)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (model(x, t, torch.randn_like(text), mask, rewards) - out).abs().max() > 1e-3
    assert (model(x, t, text, mask, 1 - rewards) - out).abs().max() > 1e-3
    assert (model(x, t.flip(0), text, mask, rewards) - out).abs().max() > 1e-3
    drop = torch.tensor([True, False, True])
    a = model(x, t, text, mask, rewards, drop_text=drop)
    b = model(x, t, torch.randn_like(text), mask, rewards, drop_text=drop)
    torch.testing.assert_close(a[drop], b[drop])
    # a reward left out of the mask is not read, whatever value it holds
    known = torch.tensor([[True, False]] * 3)
    torch.testing.assert_close(model(x, t, text, mask, rewards, known),
                               model(x, t, text, mask, rewards.index_fill(1, torch.tensor([1]), 0.9), known))


@torch.no_grad()
def test_the_condition_is_computed_once_and_reused():
    model = small()
    x, t, text, mask, rewards = inputs()
    cond = model.encode_condition(text, mask, rewards)
    torch.testing.assert_close(model.velocity(x, t, **cond), model(x, t, text, mask, rewards))


def test_save_and_load_round_trip_bit_exactly(tmp_path):
    model = small(seed=3)
    model.save_pretrained(tmp_path / "unet")
    again = MiroUNet.from_pretrained(tmp_path / "unet").eval()
    x, t, text, mask, rewards = inputs()
    with torch.no_grad():
        assert torch.equal(again(x, t, text, mask, rewards), model(x, t, text, mask, rewards))
    assert again.config.block_out_channels == [8, 16] and again.reward_names == REWARDS


def test_bad_sizes_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"norm_num_groups=4: must be an integer >= 1 dividing every entry"):
        MiroUNet(**{**SMALL, "block_out_channels": (8, 18)})
    with pytest.raises(ValueError, match=r"block_out_channels=\[8\]: must be two or more"):
        MiroUNet(**{**SMALL, "block_out_channels": [8]})
    with pytest.raises(ValueError, match=r"sample_size=17: must be a multiple of 2\^\(levels - 1\) = 2"):
        MiroUNet(**{**SMALL, "sample_size": 17})
    model = small()
    x, t, text, mask, rewards = inputs()
    with pytest.raises(ValueError, match=r"x spatial size 15x15 must be a multiple of 2\^\(len\(block_out_channels\) - 1\) = 2"):
        model(x[:, :, :15, :15], t, text, mask, rewards)
    with pytest.raises(ValueError, match="rewards must lie in"):
        model(x, t, text, mask, rewards + 2)
    with pytest.raises(ConfigError, match=r"model.unet.cond_width=15: must be divisible by cond_heads=2"):
        to_typed({"backbone": "unet", "unet": {"cond_width": 15, "cond_heads": 2}}, ModelConfig)


def test_the_preset_builds_the_unet_with_its_stride():
    cfg = load_preset("tiny_sd_unet")
    assert cfg.backbone == "unet" and cfg.spatial_stride == 4 and isinstance(cfg.unet, UNetConfig)
    model = build_model(cfg, reward_names=REWARDS, text_dim=384, in_channels=3, sample_size=32)
    assert isinstance(model, MiroUNet) and model.reward_names == REWARDS and model.spatial_stride == 4
    assert 4.5e6 < sum(p.numel() for p in model.parameters()) < 4.8e6  # docs/text_conditioning.md section 22's size


def test_training_flops_are_the_counted_forward_times_three():
    from miro.models.flops import counted_flops

    model = small()
    x, t, text, mask, rewards = inputs(b=1)
    forward = counted_flops(lambda: model(x, t, text, mask, rewards, rewards > -1))
    assert forward > 0 and model.training_flops(16, 16, 5) == 3 * forward


@pytest.mark.parametrize("preset,kinds", [("attention", {"to_q", "to_k", "to_v", "0"}),
                                          ("attention_mlp", {"to_q", "to_k", "to_v", "0", "proj", "2"}),
                                          ("all", {"to_q", "to_k", "to_v", "0", "proj", "2", "conv1", "conv2", "time_emb_proj"})])
def test_lora_presets_reach_the_unet_blocks_and_a_fresh_adapter_changes_nothing(preset, kinds, tmp_path):
    from miro.models.lora import LoraSpec, add_lora, load_lora, save_lora

    model = small()
    x, t, text, mask, rewards = inputs()
    with torch.no_grad():
        before = model(x, t, text, mask, rewards)
    add_lora(model, LoraSpec(rank=2, alpha=4, targets=preset), name="a")
    adapted = {n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted and {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in adapted} == kinds
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, text, mask, rewards), before)  # B = 0: the output is unchanged
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
        changed = model(x, t, text, mask, rewards)
    assert (changed - before).abs().max() > 1e-4
    save_lora(model, tmp_path / "lora", "a")
    again = small()
    load_lora(again, tmp_path / "lora", "a")
    with torch.no_grad():
        assert torch.equal(again.eval()(x, t, text, mask, rewards), changed)


@torch.no_grad()
def test_rewards_through_the_time_embedding_leave_the_cross_attended_set_to_the_text():
    tokens, time = small(reward_path="tokens"), small(reward_path="time")
    x, t, text, mask, rewards = inputs()
    # the cross-attended set: [rewards (2), null text (1), text (5)] against the text path alone, as the baseline's
    assert tokens.encode_condition(text, mask, rewards)["cond"].shape[1] == 8
    cond = time.encode_condition(text, mask, rewards)
    assert cond["cond"].shape[1] == 6
    baseline = small(reward_names=[])
    assert baseline.encode_condition(text, mask)["cond"].shape[1] == 6
    # the rewards move the pooled vector (so the time embedding), and through it the velocity
    other = time.encode_condition(text, mask, 1 - rewards)
    torch.testing.assert_close(other["cond"], cond["cond"])
    assert (other["pooled"] - cond["pooled"]).abs().max() > 1e-3
    out = time(x, t, text, mask, rewards)
    assert (time(x, t, text, mask, 1 - rewards) - out).abs().max() > 1e-3
    # a masked reward is not read; the null condition of a dropped prompt still holds
    known = torch.tensor([[True, False]] * 3)
    torch.testing.assert_close(time(x, t, text, mask, rewards, known),
                               time(x, t, text, mask, rewards.index_fill(1, torch.tensor([1]), 0.9), known))
    drop = torch.tensor([True, False, True])
    torch.testing.assert_close(time(x, t, text, mask, rewards, drop_text=drop)[drop],
                               time(x, t, torch.randn_like(text), mask, rewards, drop_text=drop)[drop])


def test_a_fresh_time_path_starts_as_no_reward_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = MiroUNet(**{**SMALL, "reward_path": "time"}).eval()
    x, t, text, mask, rewards = inputs()
    with torch.no_grad():  # zero-initialised: the rewards do not move a fresh model, as the pooled text does not
        torch.testing.assert_close(model(x, t, text, mask, rewards), model(x, t, text, mask, 1 - rewards))
    model = small(seed=4, reward_path="time")
    model.save_pretrained(tmp_path / "unet")
    again = MiroUNet.from_pretrained(tmp_path / "unet").eval()
    assert again.config.reward_path == "time" and again.reward_time_proj is not None
    with torch.no_grad():
        assert torch.equal(again(x, t, text, mask, rewards), model(x, t, text, mask, rewards))
    # without the pooled prompt the class embedding exists for the rewards alone
    assert small(reward_path="time", pooled_text=False).unet.class_embedding is not None
    assert small(reward_path="tokens", pooled_text=False).unet.class_embedding is None


def test_a_bad_reward_path_is_a_clear_error():
    with pytest.raises(ValueError, match=r"reward_path='cross': must be one of \['tokens', 'time'\]"):
        MiroUNet(**{**SMALL, "reward_path": "cross"})
    with pytest.raises(ConfigError, match=r"model.unet.reward_path='cross': must be one of"):
        to_typed({"backbone": "unet", "unet": {"reward_path": "cross"}}, ModelConfig)
    cfg = to_typed({"backbone": "unet", "unet": {"reward_path": "time"}}, ModelConfig)
    model = build_model(cfg, reward_names=REWARDS, text_dim=8, in_channels=3, sample_size=16)
    assert model.config.reward_path == "time"


def test_the_frozen_text_path_starts_closed_trains_its_gate_only_and_round_trips(tmp_path):
    """``frozen_text_path``: with its gate at zero the model is the one without it (same weights); the random map
    is a buffer (no gradient, not a parameter), the gate takes gradient and, once open, the map's projection reaches
    the velocity; the map is saved with the weights.  A non-bool value is refused."""
    x, t, text, mask, rewards = inputs()
    plain = small(seed=3)
    model = MiroUNet(**{**SMALL, "frozen_text_path": True}).eval()
    assert model.load_state_dict(plain.state_dict(), strict=False).missing_keys == ["frozen_text_gate", "frozen_text_map"]
    assert "frozen_text_map" not in dict(model.named_parameters()) and model.frozen_text_map.shape == (8, 16)
    torch.testing.assert_close(model(x, t, text, mask, rewards), plain(x, t, text, mask, rewards), rtol=0, atol=0)
    model(x, t, text, mask, rewards).square().mean().backward()
    assert model.frozen_text_gate.grad.abs().sum() > 0
    with torch.no_grad():
        model.frozen_text_gate.fill_(1.0)
        opened = model(x, t, text, mask, rewards)
        assert (opened - plain(x, t, text, mask, rewards)).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "unet")
    again = MiroUNet.from_pretrained(tmp_path / "unet").eval()
    assert torch.equal(again.frozen_text_map, model.frozen_text_map)
    with torch.no_grad():
        assert torch.equal(again(x, t, text, mask, rewards), opened)
    with pytest.raises(ValueError, match=r"frozen_text_path='yes': must be true or false"):
        MiroUNet(**{**SMALL, "frozen_text_path": "yes"})


@pytest.mark.parametrize("reward_path", ["tokens", "time"])
@torch.no_grad()
def test_padded_text_tokens_are_never_read(reward_path):
    """A compiled training run pads every batch's text to one length; masked padding must not move the velocity."""
    model = small(reward_path=reward_path)
    x, t, text, mask, r = inputs()
    mask[0, 3:] = False  # one prompt shorter than the batch
    longer = torch.cat([text, torch.randn(3, 4, 8)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    # float tolerance: the longer sequence changes the kernels' summation order (2e-6 on an EPYC); a read of the
    # random padding moves the output by orders of magnitude more
    torch.testing.assert_close(model(x, t, longer, longer_mask, r), model(x, t, text, mask, r), rtol=1e-4, atol=1e-5)
