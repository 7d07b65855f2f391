from contextlib import nullcontext

import pytest
import torch
from safetensors.torch import load_file

from miro.flow import LinearPath, velocity_loss
from miro.models import MiroTransformer
from tests.models.helpers import REWARDS, inputs, randomize_, tiny_model


@pytest.fixture(scope="module")
def model():
    return randomize_(tiny_model()).eval()


# ---------------------------------------------------------------- shapes, dtypes, init
@pytest.mark.parametrize(
    "channels,size,patch", [(3, 8, 2), (4, 8, 2), (3, 12, 4), (16, 4, 1)]
)
def test_output_shaped_like_input(channels, size, patch):
    m = randomize_(tiny_model(in_channels=channels, sample_size=size, patch_size=patch))
    x, t, text, tm, r, rm, dt = inputs(m)
    out = m(x, t, text, tm, r, rm, dt)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_other_resolutions_and_non_square(model):
    x, t, text, tm, r, rm, _ = inputs(model)
    for h, w in [(16, 16), (8, 12), (4, 10)]:
        xx = torch.randn(4, 3, h, w)
        assert model(xx, t, text, tm, r, rm).shape == xx.shape


def test_separate_out_channels():
    m = randomize_(tiny_model(out_channels=6))
    x, t, text, tm, r, rm, _ = inputs(m)
    assert m(x, t, text, tm, r, rm).shape == (4, 6, 8, 8)


def test_zero_init_output_is_exactly_zero():
    m = tiny_model()
    x, t, text, tm, r, rm, _ = inputs(m)
    assert torch.equal(m(x, t, text, tm, r, rm), torch.zeros_like(x))


def test_patchify_matches_strided_conv(model):
    x = torch.randn(2, 3, 8, 8)
    w = model.patch_embed.weight.view(model.config.width, 3, 2, 2)
    conv = torch.nn.functional.conv2d(x, w, model.patch_embed.bias, stride=2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model.patch_embed(model.patchify(x)), conv, rtol=1e-5, atol=1e-5)
    tokens = torch.randn(2, 16, 3 * 4)
    assert torch.equal(model.patchify(model.unpatchify(tokens, 8, 8)), tokens)


def test_bfloat16_autocast_on_cpu(model):
    x, t, text, tm, r, rm, _ = inputs(model)
    ref = model(x, t, text, tm, r, rm)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, text, tm, r, rm)
    assert out.dtype == x.dtype and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, t, text, tm, r, rm).float().square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(list(model.parameters())) and all(torch.isfinite(g).all() for g in grads)
    assert all(g.dtype == torch.float32 for g in grads)
    model.zero_grad()


def test_bfloat16_weights():
    m = randomize_(tiny_model()).to(torch.bfloat16)
    x, t, text, tm, r, rm, _ = inputs(m)
    out = m(x.bfloat16(), t, text, tm, r, rm)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


# ---------------------------------------------------------------- save / load
def test_save_load_round_trip_is_bit_identical(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = MiroTransformer.from_pretrained(tmp_path).eval()
    assert loaded.reward_names == REWARDS
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    saved = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved[name], tensor), name
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x, t, text, tm, r, rm, dt = inputs(model)
    assert torch.equal(loaded(x, t, text, tm, r, rm, dt), model(x, t, text, tm, r, rm, dt))


# ---------------------------------------------------------------- reward conditioning semantics
def test_masked_reward_uses_its_null_token(model):
    _, _, _, _, r, rm, _ = inputs(model)
    rm[:, 1] = False
    emb = model.reward_embedder
    tokens = emb(r, rm)
    assert torch.equal(tokens[:, 1], (emb.null[1] + emb.pos[1]).expand(4, -1))
    assert not torch.allclose(tokens[:, 0], (emb.null[0] + emb.pos[0]).expand(4, -1))
    # each reward has its own embedder: the same value gives different tokens for different rewards
    same = emb(torch.full((1, 3), 0.5), torch.ones(1, 3, dtype=torch.bool))[0] - emb.pos
    assert not torch.allclose(same[0], same[1])


def test_reward_value_matters_only_when_unmasked(model):
    x, t, text, tm, r, rm, _ = inputs(model)
    r2 = r.clone()
    r2[:, 0] = 1 - r[:, 0]
    base = model(x, t, text, tm, r, rm)
    changed = model(x, t, text, tm, r2, rm)
    assert ((changed - base).flatten(1).abs().amax(1) > 1e-4).all()
    rm[:, 0] = False
    r2[:, 0] = float("nan")  # ignored under a False mask
    torch.testing.assert_close(model(x, t, text, tm, r2, rm), model(x, t, text, tm, r, rm), rtol=0, atol=0)


def test_per_sample_reward_mask(model):
    x, t, text, tm, r, rm, _ = inputs(model)
    rm2 = rm.clone()
    rm2[2, :] = False
    a, b = model(x, t, text, tm, r, rm), model(x, t, text, tm, r, rm2)
    assert torch.allclose(a[[0, 1, 3]], b[[0, 1, 3]], atol=1e-6)
    assert not torch.allclose(a[2], b[2], atol=1e-4)


def test_rewards_none_means_all_rewards_null(model):
    x, t, text, tm, r, _, _ = inputs(model)
    all_null = torch.zeros_like(r, dtype=torch.bool)
    torch.testing.assert_close(model(x, t, text, tm), model(x, t, text, tm, r, all_null), rtol=0, atol=0)


# ---------------------------------------------------------------- text conditioning semantics
def test_text_dropout_ignores_text_and_is_per_sample(model):
    x, t, text, tm, r, rm, dt = inputs(model)
    dt[1] = True
    other_text = torch.randn_like(text)
    a = model(x, t, text, tm, r, rm, dt)
    b = model(x, t, other_text, tm, r, rm, dt)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-6)
    assert ((a - b)[[0, 2, 3]].flatten(1).abs().amax(1) > 1e-4).all()
    # dropped text == a prompt with every token masked (both use the learned null text token)
    empty = tm.clone()
    empty[1] = False
    torch.testing.assert_close(model(x, t, other_text, empty, r, rm)[1], a[1], rtol=0, atol=1e-6)


def test_fully_masked_text_never_nan():
    m = randomize_(tiny_model(reward_names=[], num_registers=0, cond_refiner_depth=0))
    x, t, text, tm, _, _, _ = inputs(m)
    tm[:] = False
    text[:] = float("nan")  # padding content is never read
    out = m(x, t, text, tm)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


@pytest.mark.parametrize("conv", [False, True])  # True: the shipped recipe's conv U-shape reading the pooled prompt
def test_padding_does_not_change_the_output(model, conv):
    """Padded text tokens are never read: the training loop pads every batch to one length for CUDA graphs."""
    if conv:
        model = randomize_(tiny_model(conv_channels=8, conv_levels=2, conv_pooled_text=True,
                                      conv_scale_shift=True)).eval()  # fmt: skip
    x, t, text, tm, r, rm, _ = inputs(model)
    longer = torch.cat([text, torch.randn(4, 3, text.shape[2])], dim=1)
    longer_mask = torch.cat([tm, torch.zeros(4, 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(x, t, longer, longer_mask, r, rm), model(x, t, text, tm, r, rm),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- baseline
def test_baseline_has_no_reward_parameters_and_rejects_rewards():
    m = randomize_(tiny_model(reward_names=[]))
    assert m.num_rewards == 0 and m.reward_embedder is None
    assert not [n for n in m.state_dict() if "reward" in n]
    x, t, text, tm, _, _, _ = inputs(m)
    out = m(x, t, text, tm)
    torch.testing.assert_close(m(x, t, text, tm, torch.zeros(4, 0), torch.zeros(4, 0, dtype=torch.bool)), out)
    with pytest.raises(ValueError, match="baseline"):
        m(x, t, text, tm, torch.rand(4, 2))
    rewarded = tiny_model()
    assert sum(p.numel() for p in rewarded.parameters()) > sum(p.numel() for p in tiny_model(reward_names=[]).parameters())


# ---------------------------------------------------------------- input errors
@pytest.mark.parametrize(
    "change,match",
    [
        (lambda a: a.update(x=torch.randn(4, 3, 8)), r"x must be \[B, C, H, W\]"),
        (lambda a: a.update(x=torch.randn(4, 4, 8, 8)), "in_channels=3"),
        (lambda a: a.update(x=torch.randn(4, 3, 9, 8)), "patch_size=2"),
        (lambda a: a.update(t=torch.rand(3)), r"t must have shape \[B\]"),
        (lambda a: a.update(t=torch.full((4,), 1.5)), r"t must lie in \[0, 1\]"),
        (lambda a: a.update(text=torch.randn(4, 5, 7)), "text_dim=12"),
        (lambda a: a.update(text_mask=torch.ones(4, 5)), "text_mask must be a bool"),
        (lambda a: a.update(rewards=torch.rand(4, 2)), r"rewards must be \[B=4, R=3\]"),
        (lambda a: a.update(rewards=torch.full((4, 3), 1.2)), r"rewards must lie in \[0, 1\]"),
        (lambda a: a.update(rewards=torch.full((4, 3), float("nan"))), r"rewards must lie in \[0, 1\]"),
        (lambda a: a.update(reward_mask=torch.ones(4, 3)), "reward_mask must be a bool"),
        (lambda a: a.update(drop_text=torch.zeros(4)), "drop_text must be a bool"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, change, match):
    x, t, text, tm, r, rm, dt = inputs(model)
    args = dict(x=x, t=t, text=text, text_mask=tm, rewards=r, reward_mask=rm, drop_text=dt)
    change(args)
    with pytest.raises(ValueError, match=match):
        model(**args)


def test_value_checks_never_sync_an_accelerator_unless_asked():
    """t and rewards are range-checked where that is free (CPU tensors); off the host the forward reads no value
    back (a meta tensor stands for an accelerator: reading it raises), unless ``check_values=True`` (debugging)."""
    m = tiny_model()
    x, t, text, tm, r, rm, dt = inputs(m)
    r = torch.full_like(r, 2.0)  # out of range
    with pytest.raises(ValueError, match=r"rewards must lie in \[0, 1\]"):
        m(x, t, text, tm, r, rm, dt)
    m.check_values = False
    m(x, t, text, tm, r, rm, dt)  # no check at all
    meta = tiny_model().to("meta")
    args = [a.to("meta") for a in (x, t, text, tm, r, rm, dt)]
    assert meta(*args).shape == x.shape  # no host read on the forward
    meta.check_values = True
    with pytest.raises(RuntimeError, match="meta"):
        meta(*args)  # the debug check reads the values back


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(width=30, num_heads=4), "divisible by num_heads"),
        (dict(sample_size=9), "multiple of patch_size"),
        (dict(reward_names=["a", "a"]), "distinct"),
        (dict(mlp_type="relu"), "mlp_type"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kwargs)


# ---------------------------------------------------------------- training behaviour
# the plain DiT, the conv stem and head, and a two-level conv U-shape
CONV_VARIANTS = [{}, {"conv_channels": 8}, {"conv_channels": 8, "conv_levels": 2}]
CONV_IDS = ["plain", "conv", "conv_levels2"]


@pytest.mark.parametrize("conv", CONV_VARIANTS, ids=CONV_IDS)
def test_gradient_checkpointing_gives_identical_gradients(conv):
    m = randomize_(tiny_model(**conv))
    x, t, text, tm, r, rm, dt = inputs(m)
    dt[3] = True

    def grads():
        m.zero_grad()
        m(x, t, text, tm, r, rm, dt).square().mean().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    plain = grads()
    m.enable_gradient_checkpointing()
    assert m.is_gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(m.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def _fit_two_targets(reward_names, steps=150, **model_kwargs):
    """16 samples at t = 1 (x_t is pure noise, shared by pairs): only the reward tells target A from B."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = MiroTransformer(in_channels=3, sample_size=8, patch_size=2, width=64, depth=2, num_heads=4, text_dim=16,
                        reward_names=reward_names, reward_fourier_dim=32, **model_kwargs)
    a, b = torch.randn(3, 8, 8, generator=g), torch.randn(3, 8, 8, generator=g)
    pairs = 8
    noise = torch.randn(pairs, 3, 8, 8, generator=g).repeat(2, 1, 1, 1)
    t = torch.ones(2 * pairs)
    x0 = torch.cat([a.expand(pairs, -1, -1, -1), b.expand(pairs, -1, -1, -1)])
    rewards = torch.cat([torch.zeros(pairs, 1), torch.ones(pairs, 1)]) if reward_names else None
    text = torch.randn(1, 4, 16, generator=g).expand(2 * pairs, -1, -1)
    tm = torch.ones(2 * pairs, 4, dtype=torch.bool)
    s = LinearPath().sample(x0, t, noise)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = velocity_loss(m(s.x_t, t, text, tm, rewards), s.target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    floor = ((a - b) ** 2).mean().item() / 4  # best loss without knowing which target: predict the mean
    return losses, floor


@pytest.mark.parametrize("conv", CONV_VARIANTS, ids=CONV_IDS)
def test_tiny_model_fits_two_reward_conditioned_targets(conv):
    losses, floor = _fit_two_targets(["q"], **conv)
    assert losses[-1] < losses[0] / 10
    assert losses[-1] < floor / 10, (losses[-1], floor)
    # the baseline cannot tell the pairs apart: it stays at the unconditional floor
    base_losses, _ = _fit_two_targets([], **conv)
    assert min(base_losses) > 0.9 * floor


@pytest.mark.parametrize("conv", CONV_VARIANTS, ids=CONV_IDS)
def test_traces_as_one_graph_for_torch_compile(conv):
    """MIRO trains with torch.compile(fullgraph=True): the forward must trace without graph breaks."""
    m = randomize_(tiny_model(**conv))
    args = inputs(m)
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(*args), m(*args), rtol=1e-5, atol=1e-6)


def test_pooled_text_reaches_every_block_without_cross_attention():
    """With every cross-attention silenced, the prompt still steers the output through the pooled path;
    a dropped (or fully masked) prompt gives the pooled path's "no text" value; without ``pooled_text``
    the condition carries no pooled term."""
    m = randomize_(tiny_model())
    with torch.no_grad():
        for block in m.blocks:
            block.cross_attn.to_out.weight.zero_()
            block.cross_attn.to_out.bias.zero_()
    x, t, text, tm, r, rm, dt = inputs(m)
    a, b = m(x, t, text, tm, r, rm, dt), m(x, t, torch.randn_like(text), tm, r, rm, dt)
    assert ((a - b).flatten(1).abs().amax(1) > 1e-4).all()
    dt[:] = True
    torch.testing.assert_close(m(x, t, text, tm, r, rm, dt), m(x, t, torch.randn_like(text), tm, r, rm, dt), rtol=0, atol=1e-6)
    cond = m.encode_condition(text, tm, r, rm, dt)
    torch.testing.assert_close(cond["pooled"], m.pooled_text_proj(torch.zeros(1, m.config.text_dim)).expand(len(x), -1))
    assert tiny_model(pooled_text=False).encode_condition(text, tm, r, rm)["pooled"] is None


def test_forward_is_velocity_on_the_encoded_condition(model):
    x, t, text, tm, r, rm, dt = inputs(model)
    torch.testing.assert_close(model(x, t, text, tm, r, rm, dt), model.velocity(x, t, **model.encode_condition(text, tm, r, rm, dt)))


# ---------------------------------------------------------------- conv stem and head (conv_channels)
@pytest.mark.parametrize("levels", [1, 2])
def test_conv_stem_and_head_shapes_init_and_round_trip(tmp_path, levels):
    """The conv variants keep the call contract: any multiple of the spatial stride, separate out channels, an
    exactly zero output at init (zero last convs), and a bit-identical save / load through config.json."""
    m = tiny_model(conv_channels=8, conv_levels=levels, out_channels=6)
    assert m.spatial_stride == 2 * 2 ** (levels - 1)
    x, t, text, tm, r, rm, dt = inputs(m)
    assert torch.equal(m(x, t, text, tm, r, rm, dt), torch.zeros(4, 6, 8, 8))
    randomize_(m).eval()
    for h, w in [(8, 8), (8, 12)]:
        out = m(torch.randn(4, 3, h, w), t, text, tm, r, rm)
        assert out.shape == (4, 6, h, w) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"multiple of patch_size=2 x 2\^\(conv_levels - 1\) = 4") if levels == 2 else nullcontext():
        m(torch.randn(4, 3, 6, 6), t, text, tm, r, rm)
    m.save_pretrained(tmp_path)
    loaded = MiroTransformer.from_pretrained(tmp_path).eval()
    assert (loaded.config.conv_channels, loaded.config.conv_levels) == (8, levels)
    assert torch.equal(loaded(x, t, text, tm, r, rm, dt), m(x, t, text, tm, r, rm, dt))


def test_conv_head_reads_both_the_blocks_and_the_stem():
    """The head sees the transformer's output and, through the long skip, the stem's features: silencing
    either changes the output; the blocks still receive the stem's features, not the raw pixels."""
    m = randomize_(tiny_model(conv_channels=8)).eval()
    x, t, text, tm, r, rm, _ = inputs(m)
    ref = m(x, t, text, tm, r, rm)
    assert m.patch_embed.in_features == 8 * 2 * 2 and m.proj_out.out_features == 8 * 2 * 2
    with torch.no_grad():
        m.proj_out.weight.zero_()
        m.proj_out.bias.zero_()
        m.modulation_out.weight.zero_()
        m.modulation_out.bias.zero_()
    no_blocks = m(x, t, text, tm, r, rm)
    assert (no_blocks - ref).abs().max() > 1e-3
    # the long skip: with the blocks silenced the output still depends on x, through the stem's features
    assert (no_blocks - m(torch.randn_like(x), t, text, tm, r, rm)).abs().max() > 1e-3
    # with the transformer's output silenced the prompt no longer matters (the stem sees the time only)
    torch.testing.assert_close(no_blocks, m(x, t, torch.randn_like(text), tm, r, rm), rtol=0, atol=0)


@pytest.mark.parametrize("value", [12, -8, 2.0])
def test_conv_channels_must_be_a_multiple_of_eight(value):
    with pytest.raises(ValueError, match="conv_channels=.*multiple of 8"):
        tiny_model(conv_channels=value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(conv_channels=8, conv_levels=0), "conv_levels=0: must be an integer >= 1"),
    (dict(conv_levels=2), "conv_levels=2: must be 1 without conv stem"),
    (dict(conv_pooled_text=True), "conv_pooled_text=True: needs the conv stem"),
    (dict(conv_scale_shift=True), "conv_scale_shift=True: needs the conv stem"),
    (dict(conv_cross_attention=True), "conv_cross_attention=True: needs the conv stem"),
    (dict(conv_channels=8, conv_pooled_text=True, pooled_text=False), "conv_pooled_text=True: .*pooled_text=False"),
    (dict(conv_channels=8, conv_levels=3, sample_size=12),
     r"sample_size=12: must be a multiple of patch_size=2 x 2\^\(conv_levels - 1\) = 8"),
    (dict(conv_pixel_unshuffle=2), "conv_pixel_unshuffle=2: must be 1 without conv stem"),
    (dict(conv_channels=8, conv_pixel_unshuffle=0), "conv_pixel_unshuffle=0: must be an integer >= 1"),
    (dict(conv_channels=8, conv_pixel_unshuffle=2, sample_size=10),
     "sample_size=10: must be a multiple of patch_size=2 x conv_pixel_unshuffle=2 = 4"),
])
def test_bad_conv_options_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kwargs)


def test_conv_levels_go_down_and_back_up_with_a_skip_per_level():
    """Two levels: the tokens are patches of the half-resolution features (2C channels), each level's
    features reach its way up (silencing the deeper skip's source changes the output), and the transformer
    sees a quarter of the tokens of one level at the same patch size."""
    m = randomize_(tiny_model(conv_channels=8, conv_levels=2)).eval()
    assert m.patch_embed.in_features == 16 * 2 * 2 and m.proj_out.out_features == 16 * 2 * 2
    x, t, text, tm, r, rm, _ = inputs(m)
    seen = []
    hook = m.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    ref = m(x, t, text, tm, r, rm)
    hook.remove()
    assert seen == [torch.Size([4, 2 * 2, 32])]  # 8 px -> 4 px level -> patch 2 -> 2 x 2 tokens
    with torch.no_grad():  # silence the transformer's output: the deeper features now only reach the output
        m.proj_out.weight.zero_()  # through their own skip into the up block
        m.proj_out.bias.zero_()
    silenced = m(x, t, text, tm, r, rm)
    assert (silenced - ref).abs().max() > 1e-3
    with torch.no_grad():
        m.conv_down_blocks[0].conv2.weight.mul_(0.5)
    assert (m(x, t, text, tm, r, rm) - silenced).abs().max() > 1e-3


@pytest.mark.parametrize("levels", [1, 2])
def test_conv_pooled_text_lets_the_prompt_reach_the_conv_blocks(levels):
    """With the transformer's output silenced, the prompt still changes the output through the conv blocks'
    condition when conv_pooled_text is on (and only then); a dropped prompt gives the "no text" value.
    (16 channels: with 8, GroupNorm's 8 groups hold one channel each and remove any per-channel offset.)"""
    outputs = {}
    for on in (False, True):
        m = randomize_(tiny_model(conv_channels=16, conv_levels=levels, conv_pooled_text=on)).eval()
        with torch.no_grad():
            m.proj_out.weight.zero_()
            m.proj_out.bias.zero_()
        x, t, text, tm, r, rm, dt = inputs(m)
        outputs[on] = (m(x, t, text, tm, r, rm) - m(x, t, torch.randn_like(text), tm, r, rm)).abs().max()
        dt[:] = True
        torch.testing.assert_close(m(x, t, text, tm, r, rm, dt), m(x, t, torch.randn_like(text), tm, r, rm, dt),
                                   rtol=0, atol=1e-6)
    assert outputs[False] == 0 and outputs[True] > 1e-3


def test_conv_scale_shift_multiplies_where_an_offset_is_normalised_away():
    """ADM's adaptive GroupNorm against the DDPM offset, in closed form: with one channel per group (8 channels,
    8 groups) the second GroupNorm removes any per-channel offset, so the offset block's output does not
    depend on its condition at all, while the scale-shift block gives norm(h) * (1 + scale) + shift exactly."""
    from miro.models.layers import ConvBlock

    torch.manual_seed(0)
    x, e1, e2 = torch.randn(2, 8, 6, 6), torch.randn(2, 16), torch.randn(2, 16)
    offset = ConvBlock(8, 8, 16).eval()
    scaled = ConvBlock(8, 8, 16, scale_shift=True).eval()
    for block in (offset, scaled):
        torch.nn.init.normal_(block.conv2.weight, std=0.1)  # not the zero init: the residual branch is live
    with torch.no_grad():
        torch.testing.assert_close(offset(x, e1), offset(x, e2), rtol=0, atol=1e-5)
        assert (scaled(x, e1) - scaled(x, e2)).abs().max() > 1e-2
        h = scaled.conv1(torch.nn.functional.silu(scaled.norm1(x)))
        scale, shift = scaled.emb(e1)[:, :, None, None].chunk(2, dim=1)
        expected = x + scaled.conv2(torch.nn.functional.silu(scaled.norm2(h) * (1 + scale) + shift))
        torch.testing.assert_close(scaled(x, e1), expected, rtol=0, atol=1e-6)


def test_conv_scale_shift_round_trips_through_save_pretrained(tmp_path):
    m = randomize_(tiny_model(conv_channels=16, conv_levels=2, conv_pooled_text=True, conv_scale_shift=True)).eval()
    assert m.conv_stem.emb.out_features == 2 * 16 and m.conv_down_blocks[0].emb.out_features == 2 * 32
    m.save_pretrained(tmp_path)
    loaded = type(m).from_pretrained(tmp_path).eval()
    assert loaded.config.conv_scale_shift is True
    x, t, text, tm, r, rm, _ = inputs(m)
    torch.testing.assert_close(loaded(x, t, text, tm, r, rm), m(x, t, text, tm, r, rm), rtol=0, atol=0)


def test_conv_pixel_unshuffle_runs_every_conv_level_at_half_size(tmp_path):
    """s = 2 folds 2 x 2 pixels into 12 channels: the stem sees an 8 px input as 4 px with 12 channels, the
    tokens are patches of that, the output is unfolded back to full size, and it survives save / load."""
    m = randomize_(tiny_model(conv_channels=8, conv_pixel_unshuffle=2, out_channels=6)).eval()
    assert m.spatial_stride == 2 * 2 and m.conv_in.in_channels == 3 * 4 and m.conv_out.out_channels == 6 * 4
    x, t, text, tm, r, rm, _ = inputs(m)
    seen = []
    hook = m.conv_stem.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    out = m(x, t, text, tm, r, rm)
    hook.remove()
    assert seen == [torch.Size([4, 8, 4, 4])] and out.shape == (4, 6, 8, 8)
    # the fold is torch's pixel_unshuffle: the stem's input is exactly the conv of the folded pixels
    folded = torch.nn.functional.pixel_unshuffle(x, 2)
    assert folded.shape == (4, 12, 4, 4) and torch.equal(torch.nn.functional.pixel_shuffle(folded, 2), x)
    with pytest.raises(ValueError, match=r"multiple of patch_size=2 x conv_pixel_unshuffle=2 = 4"):
        m(torch.randn(4, 3, 6, 6), t, text, tm, r, rm)
    m.save_pretrained(tmp_path)
    loaded = type(m).from_pretrained(tmp_path).eval()
    assert loaded.config.conv_pixel_unshuffle == 2
    torch.testing.assert_close(loaded(x, t, text, tm, r, rm), out, rtol=0, atol=0)


def test_conv_pixel_unshuffle_output_pixels_come_from_their_own_folded_channel():
    """Unfolding puts folded channel c * 4 + 2 * dy + dx at pixel (2i + dy, 2j + dx): zero every output
    conv weight except the one of channel 0 * 4 + 1 (dy = 0, dx = 1) and only odd columns of even rows move."""
    m = randomize_(tiny_model(conv_channels=8, conv_pixel_unshuffle=2)).eval()
    x, t, text, tm, r, rm, _ = inputs(m)
    with torch.no_grad():
        keep = torch.zeros_like(m.conv_out.weight)
        keep[1] = 1
        m.conv_out.weight.mul_(keep)
        m.conv_out.bias.zero_()
    out = m(x, t, text, tm, r, rm)
    moved = out.abs() > 0
    assert moved[:, 0, 0::2, 1::2].all()
    assert not moved[:, 1:].any() and not moved[:, 0, 1::2].any() and not moved[:, 0, :, 0::2].any()


def test_conv_cross_attention_starts_as_the_identity_and_reads_the_prompt_tokens(tmp_path):
    m = tiny_model(conv_channels=16, conv_levels=2, conv_pooled_text=True, conv_cross_attention=True)
    x = torch.randn(2, 32, 4, 4)
    cond = torch.randn(2, 5, 32)
    kpm = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    assert torch.equal(m.conv_down_attn(x, cond, kpm), x) and torch.equal(m.conv_up_attn(x, cond, kpm), x)
    randomize_(m).eval()
    # each location reads the tokens: changing one unmasked token changes the output, a masked one does not
    other = cond.clone()
    other[:, 3] += 1.0
    assert not torch.allclose(m.conv_down_attn(x, cond, kpm), m.conv_down_attn(x, other, kpm))
    kpm[:, :, :, 3] = False
    torch.testing.assert_close(m.conv_down_attn(x, cond, kpm), m.conv_down_attn(x, other, kpm))
    # the full model: the gradient of the output reaches both attentions through the text
    args = inputs(m)
    m(*args).square().mean().backward()
    assert m.conv_down_attn.cond_proj.weight.grad.abs().sum() > 0 and m.conv_up_attn.cond_proj.weight.grad.abs().sum() > 0
    m.save_pretrained(tmp_path / "m")
    loaded = MiroTransformer.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args), m.eval()(*args))
    assert loaded.config.conv_cross_attention is True
