"""Analytic FLOP count of MiroTransformer, model FLOP utilisation (MFU) and a matmul peak probe.

FLOPs count matmuls only (2 per multiply-accumulate), attention included (QK^T and AV over every key,
masked or not, as the kernels compute them); norms, activations and softmax are left out, as in
nanoGPT's and PaLM's MFU.  Training = forward + backward = 3 x forward (4 x with gradient checkpointing,
which repeats the forward, but MFU conventionally still counts 3 x: recomputation is overhead).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from miro.models.transformer import spatial_stride
from miro.models.ttt import MLP_EXPANSION


def _linear(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def _conv3x3(pixels: int, c_in: int, c_out: int) -> int:
    return 2 * pixels * 9 * c_in * c_out


def _conv_block(pixels: int, c_in: int, c_out: int, emb: int) -> int:
    """``layers.ConvBlock``: two 3x3 convs, the time projection and the 1x1 skip when the width changes."""
    skip = _linear(pixels, c_in, c_out) if c_in != c_out else 0
    return _conv3x3(pixels, c_in, c_out) + _conv3x3(pixels, c_out, c_out) + _linear(1, emb, c_out) + skip


def _attention(queries: int, keys: int, dim: int) -> int:
    return 4 * queries * keys * dim  # QK^T and AV


def _conv_cross(pixels: int, channels: int, cond_dim: int, keys: int) -> int:
    """``layers.ConvCrossAttention`` at ``pixels`` locations of ``channels`` over ``keys`` condition tokens."""
    return (_linear(keys, cond_dim, channels) + _linear(pixels, channels, channels) + _linear(keys, channels, 2 * channels)
            + _attention(pixels, keys, channels) + _linear(pixels, channels, channels))  # fmt: skip


def ttt_dual_flops(tokens: int, head_dim: int, heads: int, mini_batch: int, inner: str) -> int:
    """Matmul FLOPs of one scan of the TTT dual form (``miro.models.ttt.ttt_dual``) over ``tokens`` tokens, all
    heads: the inner loop only (the q/k/v, eta and output projections are counted by the caller).

    Per head and per mini-batch of L tokens (d = head dim; h = 4d, TTT-MLP's hidden width), the dual form's
    matmuls, read off the code (testtime.md 4.1's dual form and its two-layer expansion):

    - TTT-Linear: Q K^T (2 L^2 d); Z = K W and Q W (2 x 2 L d^2); (E * (Q K^T + 1)) G (2 L^2 d); the W update
      (e * K)^T G (2 L d^2):  6 L d^2 + 4 L^2 d.
    - TTT-MLP: Q K^T (2 L^2 d); K W1, X2 W2, G2 W2^T, Q W1, X2q W2 and the W1, W2 updates (7 x 2 L d h);
      (E * (Q K^T + 1)) G1 (2 L^2 h), X2q X2^T (2 L^2 h), (E * (X2q X2^T + 1)) G2 (2 L^2 d):
      14 L d h + 4 L^2 (d + h).

    The bias updates (sum_j e_j g_j) are elementwise products and sums, not matmuls, and are not counted.

    The mini-batches are N // b of b tokens and, when b does not divide N, one shorter of N mod b tokens; the
    last mini-batch's weight update (linear: 2 L d^2; mlp: 4 L d h) is not computed, as nothing reads it.  Per
    token (b | N, N >> b) TTT-Linear costs H (6 d^2 + 4 b d) = 6 D d + 4 b D against softmax attention's 4 N D:
    linear in N, where attention is quadratic.
    """
    d, h = head_dim, MLP_EXPANSION * head_dim

    def per_mini_batch(length: int) -> int:
        if inner == "linear":
            return 6 * length * d * d + 4 * length**2 * d
        return 14 * length * d * h + 4 * length**2 * (d + h)

    def update(length: int) -> int:
        return 2 * length * d * d if inner == "linear" else 4 * length * d * h

    full, rest = divmod(tokens, mini_batch)
    last = rest or (mini_batch if full else 0)
    return heads * (full * per_mini_batch(mini_batch) + per_mini_batch(rest) - update(last))


def _ttt_mixer(tokens: int, width: int, heads: int, mini_batch: int, scans: int, inner: str) -> int:
    """``miro.models.ttt.TTTMixer``: the fused q/k/v and the eta projections once, then per scan the dual form
    and the output projection."""
    inner_loop = ttt_dual_flops(tokens, width // heads, heads, mini_batch, inner)
    per_scan = inner_loop + _linear(tokens, width, width)
    return _linear(tokens, width, 3 * width) + _linear(tokens, width, heads) + scans * per_scan


def _mlp_hidden(width: int, mlp_ratio: float, mlp_type: str) -> tuple[int, int]:
    """(fc1 output width, fc2 input width), as ``layers.Mlp`` builds them."""
    hidden = int(width * mlp_ratio)
    if mlp_type == "swiglu":
        hidden = int(2 * hidden / 3)
        return 2 * hidden, hidden
    return hidden, hidden


def flops_breakdown(config: Mapping[str, Any], height: int, width: int, text_len: int) -> dict[str, int]:
    """Forward FLOPs per sample of each part, for an input of ``height`` x ``width`` and ``text_len`` tokens."""
    c = config
    w, p = c["width"], c["patch_size"]
    out_channels = c.get("out_channels") or c["in_channels"]
    conv = c.get("conv_channels") or 0
    levels = [conv * 2**i for i in range(c.get("conv_levels", 1))] if conv else []
    token_channels_in, token_channels_out = (levels[-1], levels[-1]) if conv else (c["in_channels"], out_channels)
    stride = spatial_stride(c)
    n = (height // stride) * (width // stride)
    unshuffle = (c.get("conv_pixel_unshuffle") or 1) if conv else 1
    pixels = (height // unshuffle) * (width // unshuffle)  # the conv levels' locations at full (folded) size
    fold = unshuffle**2  # conv_in reads, and conv_out writes, the folded channels
    # level i + 1 (at 1/2^(i+1) of the pixels): down conv + ConvBlock, and on the way up ConvBlock + up conv
    deeper = [(pixels // 4 ** (i + 1), a, b) for i, (a, b) in enumerate(zip(levels[:-1], levels[1:]))]
    r = len(c["reward_names"])
    s = r + c["num_registers"] + 1 + text_len  # the condition set: rewards, registers, null text, text
    fc1, fc2 = _mlp_hidden(w, c["mlp_ratio"], c["mlp_type"])

    def mlp(tokens: int) -> int:
        return _linear(tokens, w, fc1) + _linear(tokens, fc2, w)

    def self_attention(tokens: int) -> int:
        return _linear(tokens, w, 3 * w) + _attention(tokens, tokens, w) + _linear(tokens, w, w)

    mixer = c.get("token_mixer", "attention")  # configs from before the option: self-attention
    mixing = self_attention(n) if mixer.startswith("attention") else 0
    if "ttt" in mixer:
        scans = len(c.get("ttt_scan_orders", "raster+raster_rev").split("+"))
        inner = "mlp" if mixer.endswith("ttt_mlp") else "linear"
        mixing += _ttt_mixer(n, w, c["num_heads"], c.get("ttt_mini_batch", 16), scans, inner)
    block = (
        _linear(1, w, 6 * w)  # adaLN modulation
        + mixing  # self-attention and / or the TTT layer
        + _linear(n, w, w) + _linear(s, w, 2 * w) + _attention(n, s, w) + _linear(n, w, w)  # cross-attention
        + mlp(n)
    )
    return {
        "conv_stem": (_conv3x3(pixels, c["in_channels"] * fold, conv) + _conv_block(pixels, conv, conv, w)) if conv else 0,
        "conv_down": sum(_conv3x3(px, a, b) + _conv_block(px, b, b, w) for px, a, b in deeper),
        "patch_embed": _linear(n, token_channels_in * p * p, w),
        "time_embed": _linear(1, c["time_frequency_dim"], w) + _linear(1, w, w),
        "reward_embed": r * (_linear(1, c["reward_fourier_dim"], w) + _linear(1, w, w)),
        "text_proj": _linear(text_len, c["text_dim"], w),
        "pooled_text": (_linear(1, c["text_dim"], w) + _linear(1, w, w)) if c.get("pooled_text") else 0,
        "cond_refiner": c["cond_refiner_depth"] * (self_attention(s) + mlp(s)),
        "blocks": c["depth"] * block,
        "final": _linear(1, w, 2 * w) + _linear(n, w, p * p * token_channels_out),
        "conv_up": sum(_conv_block(px, 2 * b, b, w) + _conv3x3(4 * px, b, a) for px, a, b in deeper),
        "conv_head": (_conv_block(pixels, 2 * conv, conv, w) + _conv3x3(pixels, conv, out_channels * fold)) if conv else 0,
        # conv_cross_attention: twice (down and up) at the deepest level: the condition's projection to its
        # channels, q, k/v, attention and the output projection
        "conv_cross_attention": 2 * _conv_cross(pixels // 4 ** (len(levels) - 1), levels[-1], w, s)
        if conv and c.get("conv_cross_attention") else 0,
    }


def forward_flops(config: Mapping[str, Any], height: int, width: int, text_len: int) -> int:
    return sum(flops_breakdown(config, height, width, text_len).values())


def training_flops(config: Mapping[str, Any], height: int, width: int, text_len: int) -> int:
    """Forward + backward FLOPs per sample (3 x forward)."""
    return 3 * forward_flops(config, height, width, text_len)


def estimate_mfu(
    model: torch.nn.Module,
    batch: int,
    seconds: float,
    peak_flops: float,
    text_len: int,
    image_size: int | tuple[int, int] | None = None,
) -> float:
    """Fraction of ``peak_flops`` achieved by training on ``batch`` samples in ``seconds`` (nanoGPT's MFU).

    ``image_size`` is the spatial size of the model input (pixels or latents); default ``config.sample_size``.
    """
    size = image_size if image_size is not None else model.config.sample_size
    h, w = (size, size) if isinstance(size, int) else size
    achieved = training_flops(model.config, h, w, text_len) * batch / seconds
    return achieved / peak_flops


def measure_matmul_flops(
    size: int = 1024, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    seconds: float = 1.0, repeats: int = 3,
) -> float:
    """The best FLOP/s of square ``size`` x ``size`` matmuls over ``repeats`` timed runs of ~``seconds``/repeats.

    Used as the achievable peak on the CPU, where no datasheet number applies (the thread count in effect
    is the one measured: set ``torch.set_num_threads`` as for training).
    """
    device = torch.device(device)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    out = torch.empty(size, size, dtype=dtype, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b, out=out)  # warm-up
    sync()
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    sync()
    one = max(time.perf_counter() - start, 1e-6)
    iters = max(1, int(seconds / repeats / one))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, b, out=out)
        sync()
        best = max(best, 2 * size**3 * iters / (time.perf_counter() - start))
    return best


def math_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """``F.scaled_dot_product_attention`` as explicit matmuls (no dropout / causal), which FlopCounterMode sees."""
    if dropout_p or is_causal:
        raise NotImplementedError("math_attention covers the non-causal, dropout-free case only")
    scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return scores.softmax(-1) @ v


def counted_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that ``FlopCounterMode`` counts while running ``fn``, with SDPA swapped for ``math_attention``
    (torch does not count its CPU SDPA kernels).  Any model that calls ``F.scaled_dot_product_attention``
    (ours, diffusers') is counted by the same rule."""
    from torch.utils.flop_counter import FlopCounterMode

    sdpa = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = math_attention
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        F.scaled_dot_product_attention = sdpa
    return counter.get_total_flops()


def counted_training_flops(model: torch.nn.Module, height: int, width: int, text_len: int, passes: int = 3) -> int:
    """Training FLOPs per sample of a model that follows the project's call contract, counted by ``counted_flops``
    on a one-sample forward at these sizes and cached on the model per shape: ``passes`` forwards' worth (3: the
    forward and its backward at twice the forward)."""
    key = (height, width, text_len, passes)
    cache = model.__dict__.setdefault("_flops_cache", {})
    if key not in cache:
        cfg = model.config
        p = next(model.parameters())
        x = torch.zeros(1, cfg.in_channels, height, width, device=p.device, dtype=p.dtype)
        text = torch.zeros(1, text_len, cfg.text_dim, device=p.device, dtype=p.dtype)
        mask = torch.ones(1, text_len, dtype=torch.bool, device=p.device)
        rewards = torch.zeros(1, model.num_rewards, device=p.device)
        t = torch.full((1,), 0.5, device=p.device)
        with torch.no_grad():
            forward = counted_flops(lambda: model(x, t, text, mask, rewards if model.num_rewards else None,
                                                  (rewards > 0) if model.num_rewards else None))
        cache[key] = forward * passes
    return cache[key]
