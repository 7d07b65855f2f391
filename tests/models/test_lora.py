"""LoRA adapters through peft (miro.models.lora): exact round trips, merge, reset, the one trainable set, errors."""

from __future__ import annotations

import json

import pytest
import torch

from miro.flow import LinearPath
from miro.models.lora import (
    LORA_WEIGHTS,
    TARGETS,
    LoraSpec,
    adapter_names,
    add_lora,
    load_lora,
    lora_folder,
    lora_parameters,
    lora_state,
    merge_lora,
    remove_lora,
    reset_lora,
    restore_lora,
    save_lora,
    spec_of,
    unmerge_lora,
)  # fmt: skip
from miro.utils.config import ConfigError
from tests.models.helpers import inputs, randomize_, tiny_model
from tests.sampling.conftest import text_encoder  # noqa: F401


def _out(model, args):
    with torch.no_grad():
        return model(*args)


def _perturb_lora(model, name="default", seed=1):
    """peft starts B at 0 (the adapter is a no-op); give every adapter matrix a random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model, name):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


@pytest.fixture
def model():
    return randomize_(tiny_model()).eval()


def test_a_fresh_adapter_changes_nothing_and_is_the_only_trainable_part(model):
    args = inputs(model)
    base = _out(model, args)
    params = add_lora(model, LoraSpec(rank=4, alpha=8, targets="attention_mlp"))
    assert torch.equal(_out(model, args), base)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in params}
    # rank 4 on every block's qkv (32->96), out (32->32), cross q (32->32), kv (32->64), out (32->32), fc1 (32->128)
    # and fc2 (128->32): 4 * (in + out) per layer, 2 blocks
    per_block = 4 * ((32 + 96) + (32 + 32) + (32 + 32) + (32 + 64) + (32 + 32) + (32 + 128) + (128 + 32))
    assert sum(p.numel() for p in params) == 2 * per_block
    assert adapter_names(model) == ["default"]


def test_save_load_round_trip_is_bit_exact_and_keeps_rank_and_alpha(model, tmp_path):
    args = inputs(model)
    add_lora(model, LoraSpec(rank=3, alpha=12.0, targets="attention"), name="ttt")
    _perturb_lora(model, "ttt")
    adapted = _out(model, args)
    path = save_lora(model, tmp_path / "ad", "ttt", extra={"prompt": "a red circle"})
    assert path.name == LORA_WEIGHTS
    meta = json.loads((tmp_path / "ad" / "lora.json").read_text())
    assert meta["rank"] == 3 and meta["alpha"] == 12.0 and meta["prompt"] == "a red circle"

    fresh = randomize_(tiny_model()).eval()
    load_lora(fresh, tmp_path / "ad", "ttt")
    assert torch.equal(_out(fresh, args), adapted)
    assert spec_of(fresh, "ttt") == LoraSpec(rank=3, alpha=12.0, targets="attention")


def test_the_scale_is_alpha_over_rank(model):
    """Doubling alpha doubles the adapter's contribution (closed form of peft's scaling alpha / r)."""
    args = inputs(model)
    base = _out(model, args)
    add_lora(model, LoraSpec(rank=2, alpha=2.0, targets="attention"), name="a")
    _perturb_lora(model, "a")
    state = lora_state(model, "a")
    small = _out(model, args) - base
    remove_lora(model, "a")
    add_lora(model, LoraSpec(rank=2, alpha=4.0, targets="attention"), name="a")
    restore_lora(model, state)
    # the update is linear in the scale only to first order through the network, so compare a single layer
    layer = model.blocks[0].attn.to_out
    x = torch.randn(3, 32)
    delta = layer(x) - layer.base_layer(x)
    a, b = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    torch.testing.assert_close(delta, 2.0 * (x @ a.T @ b.T), rtol=1e-5, atol=1e-6)
    assert small.abs().max() > 0


def test_merge_and_unmerge_match_the_unmerged_adapter(model):
    args = inputs(model)
    base = _out(model, args)
    add_lora(model, LoraSpec(rank=4, targets="all"))
    _perturb_lora(model)
    adapted = _out(model, args)
    merge_lora(model)
    torch.testing.assert_close(_out(model, args), adapted, rtol=1e-5, atol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(_out(model, args), adapted, rtol=1e-5, atol=1e-5)
    model.disable_adapters()
    torch.testing.assert_close(_out(model, args), base, rtol=1e-5, atol=1e-5)


def test_all_targets_reach_the_conv_blocks_of_a_unet():
    model = randomize_(
        tiny_model(conv_channels=8, conv_levels=2, conv_pooled_text=True, conv_scale_shift=True)
    ).eval()
    add_lora(model, LoraSpec(rank=2, targets="all"))
    names = {n for n, _ in model.named_parameters() if ".lora_A." in n}
    assert any(n.startswith("conv_stem.conv1") for n in names)
    assert any(n.startswith("conv_up_blocks.0.conv2") for n in names)
    assert any(n.startswith("blocks.1.modulation") for n in names)


def test_reset_returns_the_base_model_with_the_same_parameter_objects(model):
    args = inputs(model)
    base = _out(model, args)
    params = add_lora(model, LoraSpec(rank=4))
    _perturb_lora(model)
    assert not torch.equal(_out(model, args), base)
    reset_lora(model)
    assert torch.equal(_out(model, args), base)
    assert [id(p) for p in lora_parameters(model)] == [id(p) for p in params]
    remove_lora(model)
    assert adapter_names(model) == [] and torch.equal(_out(model, args), base)
    # the last adapter's removal gives back the module tree, the keys and which parameters train
    assert set(model.state_dict()) == set(randomize_(tiny_model()).state_dict())
    assert all(p.requires_grad for p in model.parameters())


def test_an_adapter_trained_on_one_image_lowers_its_loss(model):
    """The flow-matching loss of one image at fixed (t, noise) falls when only the adapter is trained."""
    args = inputs(model, batch=1)
    x0, _, text, mask, rewards, reward_mask, _ = args
    path = LinearPath()
    t = torch.full((8,), 0.5)
    noise = torch.randn(8, *x0.shape[1:], generator=torch.Generator().manual_seed(3))
    batch = [a.expand(8, *a.shape[1:]) for a in (x0, text, mask, rewards, reward_mask)]
    s = path.sample(batch[0], t, noise)

    def loss():
        return (model(s.x_t, t, batch[1], batch[2], batch[3], batch[4]) - s.target).pow(2).mean()

    params = add_lora(model, LoraSpec(rank=4, alpha=4))
    model.train()
    opt = torch.optim.Adam(params, lr=1e-2)
    with torch.no_grad():
        before = loss().item()
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.7 * before


def test_the_pipeline_saves_and_loads_adapters(text_encoder, tmp_path):  # noqa: F811
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.models.config import AutoencoderConfig, TextEncoderConfig
    from miro.sampling.pipeline import MiroPipeline
    from tests.sampling.conftest import tiny_transformer

    transformer = tiny_transformer()
    pipe = MiroPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
        autoencoder_config=AutoencoderConfig(kind="identity"),
        text_encoder=text_encoder,
    )
    pipe.set_progress_bar_config(disable=True)

    def draw():
        return pipe(
            "a red circle",
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )

    base = draw()
    add_lora(transformer, LoraSpec(rank=2), name="cohort")
    _perturb_lora(transformer, "cohort")
    adapted = draw()
    assert not torch.equal(base, adapted)
    folder = lora_folder(tmp_path / "pipe", "cohort")
    pipe.save_lora(folder, "cohort")
    pipe.unload_lora("cohort")
    assert torch.equal(draw(), base)
    pipe.load_lora(folder, "cohort")
    assert torch.equal(draw(), adapted)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "lora.rank"),
        ({"alpha": 0}, "lora.alpha"),
        ({"dropout": 1.0}, "lora.dropout"),
        ({"targets": "blocks.(("}, "neither a preset"),
    ],
)
def test_bad_specs_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LoraSpec(**kwargs)


def test_bad_uses_get_clear_errors(model, tmp_path):
    with pytest.raises(ConfigError, match="matches no module"):
        add_lora(model, LoraSpec(targets=r"nothing\.here"))
    add_lora(model, LoraSpec(rank=2))
    with pytest.raises(ValueError, match="already has a LoRA adapter named 'default'"):
        add_lora(model, LoraSpec(rank=2))
    with pytest.raises(ValueError, match="no LoRA adapter named 'other'"):
        reset_lora(model, "other")
    with pytest.raises(FileNotFoundError, match=LORA_WEIGHTS):
        load_lora(randomize_(tiny_model()), tmp_path / "missing")
    with pytest.raises(ValueError, match="plain folder name"):
        lora_folder(tmp_path, "../escape")
    # an adapter written for a deeper model does not half-load into a shallower one
    deep = randomize_(tiny_model(depth=3))
    add_lora(deep, LoraSpec(rank=2))
    save_lora(deep, tmp_path / "deep")
    with pytest.raises(ValueError, match="do not exist here"):
        load_lora(randomize_(tiny_model()), tmp_path / "deep")
    # a truncated file
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / LORA_WEIGHTS).write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_lora(randomize_(tiny_model()), tmp_path / "bad")


def test_presets_are_regexes_that_compile():
    import re

    for pattern in TARGETS.values():
        re.compile(pattern)


def test_a_seeded_reset_is_reproducible_and_a_no_op_until_trained(model):
    args = inputs(model)
    base = _out(model, args)
    add_lora(model, LoraSpec(rank=4))
    reset_lora(model, seed=5)
    first = lora_state(model)
    _perturb_lora(model)
    reset_lora(model, seed=5)
    assert all(torch.equal(first[k], v) for k, v in lora_state(model).items())
    assert torch.equal(_out(model, args), base)
    a = [v for k, v in first.items() if "lora_A" in k]
    assert all(v.abs().sum() > 0 for v in a)
