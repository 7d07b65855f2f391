"""TTT token mixers (miro/models/ttt.py) and the ``token_mixer`` option of MiroTransformer."""

import json
import math

import pytest
import torch

from miro.models import MiroTransformer
from miro.models.config import ModelConfig
from miro.models.flops import counted_flops, flops_breakdown, forward_flops, training_flops
from miro.models.transformer import TOKEN_MIXERS
from miro.models.ttt import (
    TTTMLP,
    TTTLinear,
    TTTMixer,
    gelu,
    gelu_grad,
    inner_grad,
    inner_loss,
    ln_l2_grad,
    ttt_scan,
)
from miro.utils.config import ConfigError, to_typed
from tests.models.helpers import inputs, randomize_, tiny_model


def _params(kind: str, heads: int, d: int, g: torch.Generator, dtype=torch.float32, std: float = 0.5):
    h = 4 * d if kind == "mlp" else d
    shapes = [(heads, d, h), (heads, h)] + ([(heads, h, d), (heads, d)] if kind == "mlp" else [])
    return tuple(std * torch.randn(s, generator=g, dtype=dtype) for s in shapes)


def _scan_inputs(kind: str, batch=2, heads=2, n=20, d=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q, k, target = (torch.randn(batch, heads, n, d, generator=g, dtype=dtype) for _ in range(3))
    eta = 0.5 * torch.rand(batch, heads, n, generator=g, dtype=dtype)  # large: the updates change the output
    gamma = 1 + 0.3 * torch.randn(heads, 1, d, generator=g, dtype=dtype)
    beta = 0.3 * torch.randn(heads, 1, d, generator=g, dtype=dtype)
    return _params(kind, heads, d, g, dtype), q, k, target, eta, gamma, beta


# ---------------------------------------------------------------- dual form == per-token primal
@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
@pytest.mark.parametrize("mini_batch", [1, 4, 7, 20, 32])  # 7 does not divide 20; 32 > N: one mini-batch
def test_dual_equals_primal(kind, causal, mini_batch):
    params, q, k, target, eta, gamma, beta = _scan_inputs(kind)
    args = (kind, params, q, k, target)
    dual = ttt_scan(*args, eta, gamma, beta, mini_batch, causal, "dual")
    primal = ttt_scan(*args, eta, gamma, beta, mini_batch, causal, "primal")
    torch.testing.assert_close(dual, primal, rtol=1e-5, atol=1e-5)
    # the comparison is not vacuous: the inner updates move the output well beyond the tolerance
    frozen = ttt_scan(*args, torch.zeros_like(eta), gamma, beta, mini_batch, causal, "dual")
    assert (dual - frozen).abs().max() > 1e-2


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
def test_mixer_dual_equals_primal_outputs_and_gradients(cls, causal):
    """The whole mixer (projections, four scans over a 3 x 4 grid, mini-batch 5 with a shorter last one):
    outputs and every parameter's gradient agree between the two implementations."""
    torch.manual_seed(0)
    mixer = randomize_(
        cls(16, 2, mini_batch=5, causal=causal, scan_orders="raster+raster_rev+col+col_rev", base_lr=4.0)
    )
    x = torch.randn(2, 12, 16)

    def run(impl):
        mixer.implementation = impl
        mixer.zero_grad()
        out = mixer(x, grid=(3, 4))
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in mixer.named_parameters()}

    (out_d, grads_d), (out_p, grads_p) = run("dual"), run("primal")
    torch.testing.assert_close(out_d, out_p, rtol=1e-5, atol=1e-5)
    for name in grads_d:
        # gradients reach ~100 here, where one fp32 ulp is ~8e-6: the absolute tolerance scales with them
        atol = 1e-6 * grads_p[name].abs().max().item()
        torch.testing.assert_close(grads_d[name], grads_p[name], rtol=1e-4, atol=atol, msg=name)


# ---------------------------------------------------------------- the hand-written inner gradient
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_inner_grad_equals_autograd(kind):
    params, _, k, target, _, gamma, beta = _scan_inputs(kind, n=5, dtype=torch.float64)
    params = tuple(p.expand(2, *p.shape).clone().requires_grad_() for p in params)  # per sample, as in a scan
    loss = inner_loss(kind, params, k, target, gamma, beta, eps=1e-6)
    assert loss.shape == (2, 2)
    expected = torch.autograd.grad(loss.sum(), params)
    got = inner_grad(kind, [p.detach() for p in params], k, target, gamma, beta, eps=1e-6)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and in fp32, as the mixers run it
    got32 = inner_grad(
        kind,
        [p.detach().float() for p in params],
        k.float(),
        target.float(),
        gamma.float(),
        beta.float(),
        eps=1e-6,
    )
    for a, b in zip(got32, expected):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-5)


def test_ln_l2_and_gelu_derivatives_equal_autograd():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    target, gamma, beta = (torch.randn(4, 6, dtype=torch.float64, generator=g) for _ in range(3))
    ln = torch.nn.functional.layer_norm(z, (6,), eps=1e-3) * gamma + beta
    (expected,) = torch.autograd.grad(0.5 * (ln - target).square().sum(), z)
    torch.testing.assert_close(
        ln_l2_grad(z.detach(), target, gamma, beta, 1e-3), expected, rtol=1e-10, atol=1e-12
    )
    u = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(gelu(u).sum(), u)
    torch.testing.assert_close(gelu_grad(u.detach()), expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- a worked example by hand
def test_causal_ttt_linear_worked_example_by_hand():
    """Causal TTT-Linear, mini-batch 1 (plain online gradient descent), one head, d = 2, three tokens.

    For d = 2 the inner LayerNorm has a closed form: with delta = (z1 - z2) / 2 and s = sqrt(delta^2 + eps),
    LN(z) = (g1 delta / s + b1, -g2 delta / s + b2), so with r = LN(z) - t the loss 1/2 |r|^2 has
    dl/d delta = (r1 g1 - r2 g2) eps / s^3 and dl/dz = (dl/d delta / 2, -dl/d delta / 2).  Each token
    updates W -= eta k^T (dl/dz), b -= eta dl/dz, and is read out with its own update: y = q + LN(q W + b).
    """
    eps = 0.25
    W = [[0.5, -0.5], [0.25, 0.0]]
    b = [0.1, -0.1]
    gam, bet = [1.0, 2.0], [0.0, 0.5]
    eta = [0.5, 1.0, 0.25]
    K = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    Q = [[0.0, 1.0], [1.0, -1.0], [0.5, 0.5]]
    T = [[1.0, -1.0], [-1.0, 1.0], [0.5, 0.0]]

    def affine(u, W, b):
        return [u[0] * W[0][j] + u[1] * W[1][j] + b[j] for j in range(2)]

    def ln(z):
        delta = (z[0] - z[1]) / 2
        s = math.sqrt(delta * delta + eps)
        return [gam[0] * delta / s + bet[0], -gam[1] * delta / s + bet[1]], delta, s

    expected = []
    for i in range(3):
        z = affine(K[i], W, b)
        y, delta, s = ln(z)
        r = [y[0] - T[i][0], y[1] - T[i][1]]
        dl = (r[0] * gam[0] - r[1] * gam[1]) * eps / s**3
        g = [dl / 2, -dl / 2]
        if i == 0:  # token 0 by hand: z = (0.6, -0.6), delta = 0.6, s = sqrt(0.61), g = (-0.041689, 0.041689)
            assert z == pytest.approx([0.6, -0.6]) and g == pytest.approx([-0.0416890185, 0.0416890185])
        W = [[W[a][c] - eta[i] * K[i][a] * g[c] for c in range(2)] for a in range(2)]
        b = [b[c] - eta[i] * g[c] for c in range(2)]
        yq, _, _ = ln(affine(Q[i], W, b))
        expected.append([Q[i][0] + yq[0], Q[i][1] + yq[1]])
    assert expected[0] == pytest.approx([0.4412370878, 0.6175258243])
    assert expected[2] == pytest.approx([-0.4926922832, 2.9853845664])

    t = lambda rows: torch.tensor(rows, dtype=torch.float64)[None, None]  # noqa: E731  [1, 1, 3, 2]
    params = (
        torch.tensor([[[0.5, -0.5], [0.25, 0.0]]], dtype=torch.float64),
        torch.tensor([[0.1, -0.1]], dtype=torch.float64),
    )
    gamma, beta = torch.tensor([[gam]], dtype=torch.float64), torch.tensor([[bet]], dtype=torch.float64)
    for impl in ("primal", "dual"):
        out = ttt_scan(
            "linear",
            params,
            t(Q),
            t(K),
            t(T),
            torch.tensor([[eta]], dtype=torch.float64),
            gamma,
            beta,
            mini_batch=1,
            causal=True,
            implementation=impl,
            eps=eps,
        )
        torch.testing.assert_close(
            out[0, 0], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12
        )


# ---------------------------------------------------------------- mixer behaviour
@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
def test_gradients_reach_every_parameter(cls, causal):
    torch.manual_seed(0)
    mixer = cls(16, 2, mini_batch=4, causal=causal, scan_orders="raster+col")
    x = torch.randn(2, 12, 16, requires_grad=True)
    mixer(x, grid=(3, 4)).square().sum().backward()
    names = {n for n, _ in mixer.named_parameters()}
    assert {"w1", "b1", "ln_weight", "ln_bias", "gates", "to_lr.weight", "to_lr.bias"} <= names
    assert ({"w2", "b2"} <= names) == (cls is TTTMLP)
    for name, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name
    assert x.grad.abs().max() > 0


def test_fresh_mixer_is_gated_small_and_gates_are_per_scan():
    torch.manual_seed(0)
    mixer = TTTLinear(16, 2, scan_orders="raster+raster_rev")
    assert mixer.gates.shape == (2, 16) and torch.all(mixer.gates == 0.1)
    x = torch.randn(2, 12, 16)
    out = mixer(x)
    with torch.no_grad():
        mixer.gates.fill_(10.0)  # tanh -> 1: the ungated sum of the two scans
        ungated = mixer(x)
        assert torch.allclose(out, math.tanh(0.1) * ungated, rtol=1e-4, atol=1e-6)
        mixer.gates[1].zero_()  # only the raster scan is left
        single = TTTLinear(16, 2, scan_orders="raster")
        single.load_state_dict({k: v[:1] if k == "gates" else v for k, v in mixer.state_dict().items()})
        torch.testing.assert_close(mixer(x), single(x))


def test_scan_orders_permute_and_permute_back():
    """A reversed scan equals the raster scan of the reversed tokens, reversed back; a column scan equals the
    raster scan of the transposed grid; every scan shares the weights."""
    torch.manual_seed(0)
    base = randomize_(TTTMLP(16, 2, mini_batch=3, scan_orders="raster"))
    x = torch.randn(2, 12, 16)  # a 3 x 4 grid
    transposed = x.view(2, 3, 4, 16).transpose(1, 2).reshape(2, 12, 16)
    untranspose = lambda y: y.view(2, 4, 3, 16).transpose(1, 2).reshape(2, 12, 16)  # noqa: E731
    expected = {
        "raster_rev": base(x.flip(1)).flip(1),
        "col": untranspose(base(transposed)),
        "col_rev": untranspose(base(transposed.flip(1)).flip(1)),
    }
    for order, want in expected.items():
        mixer = TTTMLP(16, 2, mini_batch=3, scan_orders=order)
        mixer.load_state_dict(base.state_dict())
        torch.testing.assert_close(mixer(x, grid=(3, 4)), want, rtol=1e-5, atol=1e-6, msg=order)
    with pytest.raises(ValueError, match="needs the token grid"):
        TTTLinear(16, 2, scan_orders="col")(x)


def test_noncausal_is_permutation_equivariant_within_one_mini_batch_and_causal_is_causal():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    perm = torch.randperm(12)
    whole = randomize_(TTTLinear(16, 2, mini_batch=12, scan_orders="raster"))
    torch.testing.assert_close(whole(x[:, perm]), whole(x)[:, perm], rtol=1e-5, atol=1e-6)
    causal = randomize_(TTTLinear(16, 2, mini_batch=4, causal=True, scan_orders="raster"))
    y = x.clone()
    y[:, 6] += 1.0
    diff = (causal(y) - causal(x)).abs().amax((0, 2))
    assert torch.all(diff[:6] == 0) and torch.all(diff[6:] > 0)


def test_bfloat16_autocast_and_weights():
    """Under bf16 autocast the inner loop keeps fp32 statistics: the output stays close to fp32's, gradients
    are fp32 and finite; a bf16 model runs too."""
    torch.manual_seed(0)
    mixer = randomize_(TTTMLP(32, 2, mini_batch=4))
    x = torch.randn(2, 16, 32)
    ref = mixer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views = mixer.views(x)
        gamma, beta = mixer.ln_weight[:, None], mixer.ln_bias[:, None]
        inner = ttt_scan("mlp", mixer.inner_weights(), *views, gamma, beta, mini_batch=4)
        out = mixer(x)
        out.float().square().mean().backward()
    assert all(v.dtype == torch.float32 for v in views) and inner.dtype == torch.float32  # fp32 statistics
    assert torch.isfinite(out).all() and (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in mixer.parameters())
    half = mixer.to(torch.bfloat16)
    y = half(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(inner="rnn"), "inner='rnn'"),
        (dict(mini_batch=0), "mini_batch=0"),
        (dict(scan_orders="raster+zigzag"), "scan_orders='raster\\+zigzag'"),
        (dict(scan_orders=("raster", "raster")), "distinct"),
        (dict(implementation="fast"), "implementation='fast'"),
    ],
)
def test_bad_mixer_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TTTMixer(16, 2, **kwargs)


# ---------------------------------------------------------------- the token_mixer option of MiroTransformer
@pytest.mark.parametrize("mixer", TOKEN_MIXERS)
def test_model_with_each_token_mixer_trains_and_round_trips(mixer, tmp_path):
    m = randomize_(tiny_model(token_mixer=mixer, ttt_mini_batch=3, ttt_scan_orders="raster+col_rev"))
    assert m.config.token_mixer == mixer
    x, t, text, tm, r, rm, dt = inputs(m)
    out = m(x, t, text, tm, r, rm, dt)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    has = lambda part: any(n.startswith("blocks.") and part in n for n in m.state_dict())  # noqa: E731
    assert has(".attn.") == mixer.startswith("attention") and has(".ttt.") == ("ttt" in mixer)
    assert has(".norm_ttt.") == ("+" in mixer)
    m.eval()
    m.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["token_mixer"], saved["ttt_mini_batch"], saved["ttt_scan_orders"]) == (
        mixer,
        3,
        "raster+col_rev",
    )
    loaded = MiroTransformer.from_pretrained(tmp_path).eval()
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(m.config)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, text, tm, r, rm, dt), m(x, t, text, tm, r, rm, dt))


def test_default_is_attention_and_old_configs_load_unchanged(tmp_path):
    """The default model has no TTT parameters, and a config.json written before the option existed (no
    token_mixer / ttt_* keys) loads as self-attention with identical outputs."""
    m = randomize_(tiny_model()).eval()
    assert m.config.token_mixer == "attention" and not any("ttt" in n for n in m.state_dict())
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for key in ("token_mixer", "ttt_mini_batch", "ttt_scan_orders"):
        cfg.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = MiroTransformer.from_pretrained(tmp_path).eval()
    assert loaded.config.token_mixer == "attention"
    args = inputs(m)
    with torch.no_grad():
        assert torch.equal(loaded(*args), m(*args))


def test_ttt_model_gradient_checkpointing_gives_identical_gradients():
    m = randomize_(tiny_model(token_mixer="attention+ttt_mlp", ttt_mini_batch=5))
    args = inputs(m)

    def grads():
        m.zero_grad()
        m(*args).square().mean().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    plain = grads()
    m.enable_gradient_checkpointing()
    for name, grad in grads().items():
        torch.testing.assert_close(grad, plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_fresh_ttt_model_starts_at_zero_and_mixer_init():
    """The DiT init still zeroes the output; the TTT layers keep their own init (not the xavier pass)."""
    m = tiny_model(token_mixer="ttt_linear")
    x, t, text, tm, r, rm, _ = inputs(m)
    assert torch.equal(m(x, t, text, tm, r, rm), torch.zeros_like(x))
    ttt = m.blocks[0].ttt
    assert torch.all(ttt.gates == 0.1) and torch.all(ttt.to_lr.bias == 0) and ttt.to_lr.weight.std() < 0.04
    assert torch.all(ttt.ln_weight == 1) and ttt.w1.std() < 0.04


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"token_mixer": "mamba"},
            "token_mixer='mamba': must be one of ['attention', 'ttt_linear', 'ttt_mlp', "
            "'attention+ttt_linear', 'attention+ttt_mlp']",
        ),
        ({"ttt_mini_batch": 0}, "ttt_mini_batch=0: must be an integer >= 1"),
        ({"ttt_mini_batch": 2.5}, "ttt_mini_batch=2.5: must be an integer >= 1"),
        (
            {"ttt_scan_orders": "raster+diagonal"},
            "ttt_scan_orders='raster+diagonal': must be one or more distinct scan orders joined by '+'",
        ),
        ({"ttt_scan_orders": ""}, "ttt_scan_orders='': must be one or more"),
    ],
)
def test_bad_token_mixer_options_name_the_key(kwargs, message):
    with pytest.raises(ConfigError) as err:
        tiny_model(**kwargs)
    assert str(err.value).startswith(message)
    with pytest.raises(ConfigError) as err:
        to_typed(kwargs, ModelConfig)
    ((key, value),) = kwargs.items()
    if isinstance(value, float):  # OmegaConf's type check comes first: it names the key and the value too
        assert key in str(err.value) and str(value) in str(err.value)
    else:
        assert str(err.value).startswith("model." + message)


# ---------------------------------------------------------------- FLOPs
def test_ttt_flops_match_a_hand_count():
    """width 32, 2 heads (d = 16), 8 x 8 input at patch 2 (N = 16 tokens), mini-batch 3 (five of 3 tokens and
    a last one of 1), two scans, TTT-Linear in place of self-attention.

    Dual form per head and scan: mini-batch of L tokens = 6 L d^2 + 4 L^2 d (the bias update is elementwise)
        L = 3: 4608 + 576 = 5184;   L = 1: 1536 + 64 = 1600
        minus the last mini-batch's unread update 2 L d^2 (L = 1): 512
        5 x 5184 + 1600 - 512 = 27008, x 2 heads = 54016
    Projections: q/k/v 2 N D 3D = 98304, eta 2 N D H = 2048, output per scan 2 N D D = 32768.
    Mixer: 98304 + 2048 + 2 x (54016 + 32768) = 273920, in place of self-attention's
    98304 + 4 N^2 D (32768) + 32768 = 163840.
    """
    attn = tiny_model(depth=1)
    ttt = tiny_model(depth=1, token_mixer="ttt_linear", ttt_mini_batch=3)
    delta = flops_breakdown(ttt.config, 8, 8, 5)["blocks"] - flops_breakdown(attn.config, 8, 8, 5)["blocks"]
    assert delta == 273920 - 163840
    hybrid = tiny_model(depth=1, token_mixer="attention+ttt_linear", ttt_mini_batch=3)
    assert (
        flops_breakdown(hybrid.config, 8, 8, 5)["blocks"] - flops_breakdown(attn.config, 8, 8, 5)["blocks"]
        == 273920
    )


@pytest.mark.parametrize("mixer", ["ttt_linear", "ttt_mlp", "attention+ttt_mlp"])
@pytest.mark.parametrize("mini_batch,orders", [(16, "raster+raster_rev"), (5, "raster+col+col_rev")])
def test_ttt_flops_match_the_flop_counter(mixer, mini_batch, orders):
    """Every matmul the dual form runs is in the formula (FlopCounterMode sees them all): the forward count is
    equal; forward + backward is 3 x forward within 5% as for the attention model."""
    m = randomize_(
        tiny_model(token_mixer=mixer, ttt_mini_batch=mini_batch, ttt_scan_orders=orders, sample_size=12)
    )
    x, t, text, tm, r, rm, _ = inputs(m, batch=2, text_len=7)  # 12 x 12 at patch 2: 36 tokens
    assert counted_flops(lambda: m(x, t, text, tm, r, rm)) == 2 * forward_flops(m.config, 12, 12, 7)
    counted = counted_flops(lambda: m(x, t, text, tm, r, rm).square().mean().backward())
    total = 2 * training_flops(m.config, 12, 12, 7)
    assert abs(counted - total) <= 0.05 * total, (counted, total)


def test_ttt_model_traces_as_one_graph_for_torch_compile():
    m = randomize_(
        tiny_model(token_mixer="attention+ttt_linear", ttt_mini_batch=5, ttt_scan_orders="raster+col")
    )
    args = inputs(m)
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(*args), m(*args), rtol=1e-5, atol=1e-6)
