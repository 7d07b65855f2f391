"""Transformer building blocks: attention with QK-norm, MLPs and the adaLN modulation helper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

MLP_TYPES = ("gelu", "swiglu")
# every SDPA backend but cuDNN's (flash takes no mask, so a masked call lands on memory-efficient attention)
_NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x * (1 + scale) + shift, with shift/scale [B, 1, D] broadcast over tokens."""
    return torch.addcmul(shift, x, 1 + scale)


def key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, S] bool (True = attend) -> the [B, 1, 1, S] layout SDPA broadcasts over heads and queries."""
    return mask[:, None, None, :]


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` that keeps a masked call off the cuDNN backend when gradients flow.

    cuDNN's SDPA backward returns NaN gradients for some masked shapes on Hopper GPUs (pytorch/pytorch#196678:
    torch >= 2.11, bf16/fp16, an explicit ``attn_mask``), and torch picks cuDNN first there for half-precision
    inputs.  The reference recipe under bf16 autocast on an H200 skipped 3,477 of its first 4,500 steps for a
    non-finite gradient, and none in fp32 (docs/benchmarks/gpu.md); the memory-efficient kernel takes the
    same masks.  Inference keeps the default choice (the forward is correct), the CPU is unaffected."""
    if mask is not None and q.is_cuda and torch.is_grad_enabled():
        with sdpa_kernel(_NO_CUDNN):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class RMSNorm(nn.RMSNorm):
    """RMSNorm whose weight follows the input dtype under autocast, so the fused kernel is used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


class Attention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``.

    Self-attention (one fused qkv projection) when ``cross=False``; cross-attention from ``x`` to a
    ``context`` of the same width otherwise.  QK-norm (RMSNorm over each head, Dehghani et al. 2023;
    also in MIRO and SD3) keeps attention logits bounded, which matters in bf16 and at high learning rates.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, cross: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.cross = cross
        if cross:
            self.to_q = nn.Linear(dim, dim)
            self.to_kv = nn.Linear(dim, 2 * dim)
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim)
        self.norm_q = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``mask``: [B, 1, 1, S] bool over the keys (True = attend); every row needs one True key."""
        b, n, d = x.shape
        h, hd = self.num_heads, self.head_dim
        # QK-norm runs on the [B, N, H, hd] projection layout, before the heads are moved forward
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self.to_q(x).view(b, n, h, hd)
            k, v = self.to_kv(context).view(b, context.shape[1], 2, h, hd).unbind(2)
        else:
            q, k, v = self.to_qkv(x).view(b, n, 3, h, hd).unbind(2)
        q, k = self.norm_q(q).transpose(1, 2), self.norm_k(k).transpose(1, 2)
        out = masked_attention(q, k, v.transpose(1, 2), mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Feed-forward: GELU (tanh approximation, as DiT) or SwiGLU (hidden scaled by 2/3 to keep the size)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, kind: str = "gelu"):
        super().__init__()
        if kind not in MLP_TYPES:
            raise ValueError(f"mlp_type={kind!r}: must be one of {list(MLP_TYPES)}")
        self.kind = kind
        hidden = int(dim * mlp_ratio)
        if kind == "swiglu":
            hidden = int(2 * hidden / 3)
            self.fc1 = nn.Linear(dim, 2 * hidden)
        else:
            self.fc1 = nn.Linear(dim, hidden)
        self.hidden = hidden
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        if self.kind == "swiglu":
            a, g = h.chunk(2, dim=-1)
            h = F.silu(a) * g
        else:
            h = F.gelu(h, approximate="tanh")
        return self.fc2(h)


class ConvBlock(nn.Module):
    """Pre-norm residual 3x3 conv block at full resolution conditioned on an embedding (a DDPM / ADM ResBlock).

    ``emb`` is the activated condition embedding [B, emb_dim].  ``scale_shift=False`` adds a projection of it
    to the features between the convs (DDPM), before the second GroupNorm, which removes each group's mean of
    that offset.  ``scale_shift=True`` is ADM's adaptive GroupNorm: the projection gives a per-channel scale and
    shift applied after the second GroupNorm, ``norm(h) * (1 + scale) + shift``, so the condition multiplies
    features (selects channels per prompt) instead of only offsetting them.  The second conv starts at zero,
    so the block starts as its (1x1-projected) skip path.  GroupNorm uses 8 groups: channels must be
    multiples of 8.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, scale_shift: bool = False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(8, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, (2 if scale_shift else 1) * out_channels)
        self.norm2 = nn.GroupNorm(8, out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(emb)[:, :, None, None].to(h.dtype)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        return self.skip(x) + self.conv2(F.silu(h))


class ConvCrossAttention(nn.Module):
    """Cross-attention from a conv level's pixels to the condition set (reward tokens and the prompt's tokens).

    Why: the conv blocks otherwise see the prompt only as one pooled vector (``conv_pooled_text``), which carries
    its colour well and its class words poorly (docs/text_conditioning.md, sections 11-12); attention lets each
    location read the token it needs, as a UNet's cross-attention at low resolution does (LDM, ADM-text).
    Pre-GroupNorm residual; the condition (width ``cond_dim``) is projected to the level's channels; heads of
    ``head_dim`` channels; the output projection starts at zero, so the block starts as the identity.
    """

    def __init__(self, channels: int, cond_dim: int, head_dim: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels, eps=1e-6)
        self.cond_proj = nn.Linear(cond_dim, channels)
        self.attn = Attention(channels, max(1, channels // head_dim), qk_norm=False, cross=True)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.attn.to_out.weight)
        nn.init.zeros_(self.attn.to_out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [B, C, H, W], ``cond`` [B, S, cond_dim], ``mask`` [B, 1, 1, S] bool over the keys."""
        b, c, h, w = x.shape
        q = self.norm(x).flatten(2).transpose(1, 2)
        out = self.attn(q, self.cond_proj(cond.to(q.dtype)), mask)
        return x + out.transpose(1, 2).reshape(b, c, h, w)
