import pytest
import torch
import torch.nn.functional as F

from miro.models.flops import (
    counted_flops,
    estimate_mfu,
    flops_breakdown,
    forward_flops,
    math_attention,
    measure_matmul_flops,
    training_flops,
)
from tests.models.helpers import inputs, randomize_, tiny_model


@pytest.mark.parametrize("overrides", [
    {},
    dict(reward_names=[], num_registers=0, cond_refiner_depth=0),
    dict(mlp_type="swiglu", patch_size=1, out_channels=6, cond_refiner_depth=2),
    dict(conv_channels=8, out_channels=6),
    dict(conv_channels=8, conv_levels=3, patch_size=1, out_channels=6),
    dict(conv_channels=8, conv_levels=2, conv_pixel_unshuffle=2, patch_size=1, out_channels=6),
    dict(conv_channels=16, conv_levels=2, patch_size=1, conv_cross_attention=True),
])
def test_analytic_flops_match_flop_counter(monkeypatch, overrides):
    m = randomize_(tiny_model(**overrides))
    x, t, text, tm, r, rm, _ = inputs(m, batch=2, size=8, text_len=7)
    if not m.num_rewards:
        r = rm = None
    ref = m(x, t, text, tm, r, rm)
    monkeypatch.setattr(F, "scaled_dot_product_attention", math_attention)
    torch.testing.assert_close(m(x, t, text, tm, r, rm), ref, rtol=1e-4, atol=1e-5)  # the same function
    monkeypatch.undo()
    counted = counted_flops(lambda: m(x, t, text, tm, r, rm))
    expected = 2 * forward_flops(m.config, 8, 8, 7)
    assert abs(counted - expected) <= 0.05 * expected, (counted, expected)
    counted = counted_flops(lambda: m(x, t, text, tm, r, rm).square().mean().backward())
    total = 2 * training_flops(m.config, 8, 8, 7)
    assert abs(counted - total) <= 0.05 * total, (counted, total)


def test_flops_scale_as_expected():
    cfg = dict(tiny_model().config)
    base = flops_breakdown(cfg, 8, 8, 7)
    wider = flops_breakdown(cfg, 16, 16, 7)
    assert wider["patch_embed"] == 4 * base["patch_embed"] and wider["final"] > base["final"]
    assert wider["text_proj"] == base["text_proj"] and wider["cond_refiner"] == base["cond_refiner"]
    assert training_flops(cfg, 8, 8, 7) == 3 * forward_flops(cfg, 8, 8, 7)


def test_dit_s2_matches_the_paper():
    """DiT-S/2 at 256 px: 6.06 GMACs per forward (DiT paper, Table 4; its 'Gflops' are MACs). Our
    blocks add cross-attention, so count DiT's own parts: patch, self-attention, MLP, modulation, final."""
    cfg = dict(in_channels=4, out_channels=8, patch_size=2, width=384, depth=12, mlp_ratio=4.0, mlp_type="gelu",
               reward_names=[], num_registers=0, cond_refiner_depth=0, text_dim=1, time_frequency_dim=256,
               reward_fourier_dim=256)
    parts = flops_breakdown(cfg, 32, 32, 0)
    n, w = 256, 384
    cross = 12 * (2 * n * w * w * 2 + 2 * 1 * w * 2 * w + 4 * n * 1 * w)  # our cross-attention to 1 null token
    dit_macs = (parts["patch_embed"] + parts["blocks"] - cross + parts["final"] + parts["time_embed"]) / 2
    assert abs(dit_macs / 1e9 - 6.06) < 0.02, dit_macs / 1e9


def test_mfu_and_peak():
    m = tiny_model()
    flops = training_flops(m.config, 8, 8, 5)
    assert estimate_mfu(m, batch=10, seconds=2.0, peak_flops=flops * 10, text_len=5) == pytest.approx(0.5)
    assert estimate_mfu(m, 10, 2.0, flops * 10, text_len=5, image_size=(8, 8)) == pytest.approx(0.5)
    peak = measure_matmul_flops(size=256, seconds=0.2)
    assert 1e8 < peak < 1e14


def test_the_conv_cross_attention_term_is_what_it_adds():
    """The counted FLOPs of a model with conv_cross_attention minus those without equal its analytic term."""
    kw = dict(conv_channels=16, conv_levels=2, patch_size=1)
    with_attn, without = randomize_(tiny_model(conv_cross_attention=True, **kw)), randomize_(tiny_model(**kw))
    x, t, text, tm, r, rm, _ = inputs(with_attn, batch=2, size=8, text_len=7)
    added = counted_flops(lambda: with_attn(x, t, text, tm, r, rm)) - counted_flops(lambda: without(x, t, text, tm, r, rm))
    term = 2 * flops_breakdown(with_attn.config, 8, 8, 7)["conv_cross_attention"]
    assert term > 0 and abs(added - term) <= 0.02 * term, (added, term)
