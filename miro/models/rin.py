"""MiroRIN: the MIRO authors' text-conditioned RIN backbone, in this package (issue #17).

A reimplementation, written from a reading of ``miro-t2i`` 0.1.4 (PyPI; its top-level package is also named
``miro``, so it is never imported here) and checked against it by ``tests/models/test_rin_parity.py``
(fp32, atol 1e-5).  The state dict uses the authors' parameter names (``CADRINTextCond`` under the
checkpoint's ``network.`` prefix, ``FlowPrecond`` under ``preconditioning.``), so a checkpoint of theirs maps
onto this module by renaming only.  Facts relied on (file:class in their package):

Network (``models/networks/rin.py``: ``RINBackbone``, ``RINBlockCond``, ``CADRINTextCond``)
    * Patches: ``b c (h p1) (w p2) -> b (h w) (p1 p2 c)`` (channel fastest), ``patch_extractor`` Linear(c p^2
      -> data_dim), then ``data_ln`` (RMSNorm) and a learned ``data_pos_embedding`` [(size/p)^2, data_dim] added
      after the norm.  Output: ``map_tokens_to_patches`` = Sequential(RMSNorm, Linear(data_dim -> c p^2)) and
      the inverse rearrange.  The network returns ``(x, z)``: the patches and the final latents.
    * Time: ``time_embedder`` = ``TimeEmbedder(latents_dim // 4, expansion=4)``: random Fourier features of
      gamma (``encode_time.freqs`` = 2 pi N(0, 1), ``encode_time.phases`` = 2 pi U(0, 1), persistent buffers;
      ``cos(gamma f + phase) * sqrt(2)``), standardised over the features (mean, unbiased std), then
      ``map_time_input`` Linear(d/4 -> d), SiLU, ``map_time_output`` Linear(d -> d).  gamma is the SIGNAL level
      (0 noise, 1 data), see "Time convention".
    * Rewards ("coherence"): one ``TimeEmbedder`` per key in ``coherence_embedder["<key>_coherence"]``, plus a
      learned ``coherence_positional_embedding`` [K, d].  At inference (``eval()``) a missing key or a NaN
      value gives a ZERO embedding (``nan_to_num`` after the embedder), the position embedding is still added.
      (In ``train()`` they replace NaN values by 0.0 and multiply the embeddings by a random keep-mask; here
      dropping is the trainer's job, through ``reward_mask``, which gives that same zero embedding.)
    * Text: ``map_text_tokens`` Linear(label_dim -> d) on the (fp32-cast) text tokens; ``text_registers``
      [R, d].  The condition sequence is ``[rewards (K), registers (R), text (L)]`` with the key mask
      ``[True * (K + R), text_mask]``, mixed by ``transformers_blocks``: 2 pre-LayerNorm self-attention
      blocks (16 heads, qkv WITH bias, no QK-norm, GELU MLP x4, layer scale 0.1).  The time token is then put
      first: ``cond = [time, mixed]`` with mask ``[True, True * (K + R), text_mask]``.
    * Latents: learned ``latents`` [N, d] plus the time embedding (``concat_cond_token_to_latents=False``,
      the released models), or ``cat(latents[N - num_cond_tokens - 1], time, cond)`` (True, the legacy
      single-reward configs).
    * Latent self-conditioning (``use_self_conditioning``): ``z += ln_previous_2(prev +
      linear_previous(ln_previous_1(prev)))`` with LayerNorms (eps 1e-6, affine, the second zero-initialised)
      and a GELU MLP (``linear_1``, ``linear_2``, x ``latent_mlp_multiplier``).  Applied whenever previous
      latents are given -- and ``FlowPrecond`` always gives them (zeros when the caller has none), so the
      first sampling step sees ``ln_previous_2(0 + mlp(ln_previous_1.bias))``, not "no self-conditioning".
    * Each block (``rin_blocks.i``): ``retrieve_cond`` (latents cross-attend to ``cond`` with its key mask;
      only with ``use_cond_rin_block``), ``retriever_ca`` (latents <- patches), ``processer_sa.j`` (self-
      attention on the latents), ``writer_ca`` (patches <- latents).
    * Attention blocks (``models/networks/transformers.py``): pre-norm residual ``x + op(norm(x))`` then
      ``x + ffn(norm(x))``.  RIN blocks use RMSNorm (eps 1e-6, computed in fp32 and cast back, then times the
      weight), q/k/v projections WITHOUT bias, an output projection with bias, a QK-LayerNorm over each head
      (eps 1e-6, weight and bias), attention width ``min(dim_q, dim_kv)`` and SDPA's default 1/sqrt(head_dim)
      scale.  ``kv`` is one Linear split ``k, v = chunk(2)``; ``qkv`` split ``chunk(3)``; heads are
      ``(h d)`` head-major.  SwiGLU: hidden = int(mult * dim * 2 / 3) rounded UP to a multiple of 256,
      ``linear_packed`` -> ``x1, x2 = chunk(2)`` -> ``x1 * silu(x2)`` -> ``linear_out`` (the gate is the second
      half).  Masks only ever mask keys.
    * Constant bool "parameters" in their state dict, dropped here: ``*.attention_mask_dummy`` (every attention
      block), ``registers_coherence_mask`` and ``cond_mask`` (all True).
    * Init: xavier-uniform weights and zero biases on every Linear, trunc-normal(0.02, +-0.04) for the learned
      latents, positions, registers and reward positions, layer scale 0.1, LayerNorm/RMSNorm weights 1 except
      ``ln_previous_2`` (0).  The Fourier buffers come from the global RNG.

Preconditioning (``models/preconditioning.py``: ``FlowPrecond``)
    ``c_in = 1 / sqrt((gamma sigma_d)^2 + (1 - gamma)^2)`` (``do_normalization="noise_driven"``; 1 otherwise),
    ``c_out = sqrt(1 + sigma_d^2)``; ``F = c_out * net(c_in * y)``.  With ``do_gradnorm_reweighting`` it holds
    ``logvar_proj`` = Sequential(FourierEmbedding(logvar_channels), Linear(logvar_channels -> 1)) of gamma,
    EDM2's learned loss weighting (state keys ``preconditioning.logvar_proj.{0.freqs,0.phases,1.weight,
    1.bias}``; ``logvar_mlp_layers`` > 0 is not supported here).

Time convention (``models/loss.py``, ``models/sampler.py``, ``models/scheduler.py``)
    ``y = gamma x_0 + (1 - gamma) eps`` and the target is ``eps - x_0``; sampling goes from gamma ~ 0 to 1 with
    ``x <- x - F (gamma_next - gamma)``.  With this project's noise level ``t = 1 - gamma`` (``miro.flow``) that
    is ``x_t = (1 - t) x_0 + t eps`` and velocity ``eps - x_0``: the same network output, so ``velocity``
    takes our ``t`` and passes ``gamma = 1 - t``.

Checkpoint layout (``pipeline.py``: ``MiroPipeline.from_pretrained``)
    A folder (or a ``variant`` subfolder of it) with ``config.json`` (``network``: ``CADRINTextCond`` kwargs,
    ``preconditioning``: ``FlowPrecond`` kwargs, ``data_preprocessing``, ``postprocessing``, optional
    ``scheduler``, ``data_resolution``, ``max_text_len``, ``coherence_keys``), ``model.safetensors`` (keys
    ``network.*``, ``preconditioning.*``, ``data_preprocessing.*``, ``postprocessing.*`` without the VAE) and
    ``uncond_embedding.npy`` (the empty prompt's FLAN-T5-XL tokens, [L, 2048]).

Differences on purpose: the text tokens are cast to the weights' dtype (theirs always to fp32, which fails
on a bf16 network outside autocast); a float mask is refused (theirs would add it to the logits).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from miro.models.layers import key_padding_mask, masked_attention

#: The files of one model in the authors' layout (``miro-t2i``'s ``_PIPELINE_FILES``).
AUTHORS_FILES = ("config.json", "model.safetensors", "uncond_embedding.npy")

#: Every reward name of the authors' models, in their order (``MiroPipeline.COHERENCE_KEYS``; the released
#: model has all seven, the single-reward and leave-one-out variants a subset).
AUTHORS_COHERENCE_KEYS = (
    "clip_score",
    "aesthetic_score",
    "image_reward_score",
    "pick_a_score_score",
    "hpsv2_score",
    "vqa_score",
    "sciscore_score",
)

#: ``CADRINTextCond`` arguments that only matter in training (dropout, stochastic depth, reward dropout):
#: accepted from an authors' config and not stored.
AUTHORS_TRAINING_ONLY = (
    "compute_dropout",
    "rw_stochastic_depth",
    "compute_stochastic_depth",
    "coherence_dropout",
    "dropout_strategy",
)

#: Suffixes of the constant all-True bool "parameters" in the authors' state dict.
_AUTHORS_CONSTANT_MASKS = ("attention_mask_dummy", "registers_coherence_mask", "cond_mask")


class AuthorsCheckpointError(ValueError):
    """A folder, config or state dict is not in the authors' (``miro-t2i``) layout; says what was found."""


# --------------------------------------------------------------------------------------------------------
# Layers, as the authors' ``transformers.py`` computes them
# --------------------------------------------------------------------------------------------------------


class FP32RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back to the input dtype, then times the weight (theirs ``RMSNorm``).

    Not ``miro.models.layers.RMSNorm``: that one normalises in the input dtype (the fused kernel), which
    differs from the authors' network under bf16.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out * self.weight


class GeluMlp(nn.Module):
    """Linear, exact GELU, Linear (theirs ``FusedMLP``; keys ``linear_1``, ``linear_2``)."""

    def __init__(self, dim: int, multiplier: int = 4):
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim * multiplier)
        self.linear_2 = nn.Linear(dim * multiplier, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))


def swiglu_hidden(dim: int, multiplier: int) -> int:
    """The authors' SwiGLU width: int(multiplier * dim * 2 / 3) rounded up to a multiple of 256."""
    hidden = int(multiplier * dim * 2 / 3)
    return hidden if hidden % 256 == 0 else hidden + 256 - hidden % 256


class PackedSwiGLU(nn.Module):
    """``x1, x2 = linear_packed(x).chunk(2)``; ``linear_out(x1 * silu(x2))`` (theirs ``SwiGLU``).

    Not ``miro.models.layers.Mlp(kind="swiglu")``: that one gates with the first half and does not round the
    width up to 256.
    """

    def __init__(self, dim: int, multiplier: int = 4):
        super().__init__()
        hidden = swiglu_hidden(dim, multiplier)
        self.linear_packed = nn.Linear(dim, 2 * hidden)
        self.linear_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.linear_packed(x).chunk(2, dim=-1)
        return self.linear_out(x1 * F.silu(x2))


class RINAttention(nn.Module):
    """Multi-head (cross-)attention in the authors' layout (theirs ``CrossAttentionOp``).

    ``qkv`` (self) or ``q`` + ``kv`` (cross) projections to ``attention_dim``, an optional per-head
    LayerNorm on q and k (``q_norm``, ``k_norm``), SDPA, ``out`` back to ``dim_q``.
    """

    def __init__(
        self,
        attention_dim: int,
        num_heads: int,
        dim_q: int,
        dim_kv: int,
        self_attention: bool,
        qkv_bias: bool = False,
        qk_norm: bool = True,
    ):
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention width {attention_dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.self_attention = self_attention
        if self_attention:
            self.qkv = nn.Linear(dim_q, 3 * attention_dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim_q, attention_dim, bias=qkv_bias)
            self.kv = nn.Linear(dim_kv, 2 * attention_dim, bias=qkv_bias)
        self.out = nn.Linear(attention_dim, dim_q)
        head_dim = attention_dim // num_heads
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else None
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``mask``: [B, 1, 1, S] bool over the keys (True = attend)."""
        if self.self_attention:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q = self.q(x)
            k, v = self.kv(x if context is None else context).chunk(2, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = masked_attention(q, k, v, mask)
        b, _, n, _ = out.shape
        return self.out(out.transpose(1, 2).reshape(b, n, -1))


class RINCrossAttentionBlock(nn.Module):
    """``x += ca(norm(x), context)``; ``x += ffn(norm(x))`` with RMSNorm and SwiGLU (theirs
    ``CrossAttentionBlock`` as the RIN builds it: keys ``initial_to_ln``, ``ca``, ``middle_ln``, ``ffn``)."""

    def __init__(self, dim_q: int, dim_kv: int, num_heads: int, mlp_multiplier: int):
        super().__init__()
        self.initial_to_ln = FP32RMSNorm(dim_q)
        self.ca = RINAttention(min(dim_q, dim_kv), num_heads, dim_q, dim_kv, self_attention=False)
        self.middle_ln = FP32RMSNorm(dim_q)
        self.ffn = PackedSwiGLU(dim_q, mlp_multiplier)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.ca(self.initial_to_ln(x), context, mask)
        return x + self.ffn(self.middle_ln(x))


class RINSelfAttentionBlock(nn.Module):
    """``x += s1 * sa(norm(x))``; ``x += s2 * ffn(norm(x))`` (theirs ``SelfAttentionBlock``; keys
    ``initial_ln``, ``sa``, ``middle_ln``, ``ffn``, and ``layer_scale_1/2`` with layer scale).

    The RIN's processing layers: RMSNorm, QK-norm, no qkv bias, SwiGLU.  The condition mixer
    (``mixer=True``): LayerNorm, no QK-norm, qkv bias, GELU MLP, layer scale 0.1.
    """

    def __init__(self, dim: int, num_heads: int, mlp_multiplier: int, mixer: bool = False):
        super().__init__()
        norm = (lambda d: nn.LayerNorm(d, eps=1e-6)) if mixer else FP32RMSNorm
        self.initial_ln = norm(dim)
        self.sa = RINAttention(
            dim, num_heads, dim, dim, self_attention=True, qkv_bias=mixer, qk_norm=not mixer
        )
        self.middle_ln = norm(dim)
        self.ffn = GeluMlp(dim, mlp_multiplier) if mixer else PackedSwiGLU(dim, mlp_multiplier)
        if mixer:
            self.layer_scale_1 = nn.Parameter(torch.full((dim,), 0.1))
            self.layer_scale_2 = nn.Parameter(torch.full((dim,), 0.1))
        else:
            self.layer_scale_1 = self.layer_scale_2 = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        attn = self.sa(self.initial_ln(x), mask=mask)
        x = x + (attn if self.layer_scale_1 is None else self.layer_scale_1 * attn)
        ffn = self.ffn(self.middle_ln(x))
        return x + (ffn if self.layer_scale_2 is None else self.layer_scale_2 * ffn)


class FourierFeatures(nn.Module):
    """``cos(v f + phase) * sqrt(2)`` with f = 2 pi N(0, 1), phase = 2 pi U(0, 1) (theirs ``FourierEmbedding``;
    persistent buffers ``freqs`` and ``phases``, drawn from the global RNG)."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels))
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """[B] -> [B, C] in fp32."""
        return torch.cos(torch.outer(v.float(), self.freqs.float()) + self.phases.float()) * math.sqrt(2)


class ScalarEmbedder(nn.Module):
    """A scalar (gamma or a reward value) -> ``dim * 4`` (theirs ``TimeEmbedder(dim, expansion=4)``).

    Fourier features, standardised over the features (mean, unbiased std), Linear, SiLU, Linear.
    """

    def __init__(self, dim: int, expansion: int = 4):
        super().__init__()
        self.encode_time = FourierFeatures(dim)
        self.map_time_input = nn.Linear(dim, dim * expansion)
        self.map_time_output = nn.Linear(dim * expansion, dim * expansion)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.encode_time(v)
        h = (h - h.mean(dim=-1, keepdim=True)) / h.std(dim=-1, keepdim=True)
        h = h.to(self.map_time_input.weight.dtype)
        return self.map_time_output(F.silu(self.map_time_input(h)))


class RINBlock(nn.Module):
    """One RIN block: [condition cross-attention], read, ``num_processing_layers`` x process, write."""

    def __init__(
        self,
        data_dim: int,
        latents_dim: int,
        num_processing_layers: int,
        read_write_heads: int,
        compute_heads: int,
        latent_mlp_multiplier: int,
        data_mlp_multiplier: int,
        use_cond_rin_block: bool,
    ):
        super().__init__()
        self.retriever_ca = RINCrossAttentionBlock(
            latents_dim, data_dim, read_write_heads, latent_mlp_multiplier
        )
        self.processer_sa = nn.ModuleList(
            [
                RINSelfAttentionBlock(latents_dim, compute_heads, latent_mlp_multiplier)
                for _ in range(num_processing_layers)
            ]
        )
        self.writer_ca = RINCrossAttentionBlock(data_dim, latents_dim, read_write_heads, data_mlp_multiplier)
        self.retrieve_cond = (
            RINCrossAttentionBlock(latents_dim, latents_dim, read_write_heads, latent_mlp_multiplier)
            if use_cond_rin_block
            else None
        )

    def forward(
        self, data: torch.Tensor, latents: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.retrieve_cond is not None:
            latents = self.retrieve_cond(latents, cond, cond_mask)
        latents = self.retriever_ca(latents, data)
        for sa in self.processer_sa:
            latents = sa(latents)
        return self.writer_ca(data, latents), latents


# --------------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------------


@dataclass
class RINOutput:
    """``sample``: the network output shaped like the input (the velocity for ``velocity``); ``latents``:
    the final latents [B, N, latents_dim], the next step's self-conditioning input."""

    sample: torch.Tensor
    latents: torch.Tensor


class MiroRIN(ModelMixin, ConfigMixin):
    """The authors' text- and reward-conditioned RIN (``CADRINTextCond``) with its ``FlowPrecond``.

    Configuration names are the authors' (their ``config.json`` ``network`` entry maps 1:1, see
    ``rin_config_from_authors``); ``sigma_data``, ``normalization`` and ``logvar_channels`` are their
    ``preconditioning`` entry.  The released model (``multi_cad``): ``data_size=32, data_dim=512,
    num_input_channels=4, num_latents=256, latents_dim=1024, label_dim=2048, num_processing_layers=4,
    num_blocks=4, patch_size=2, read_write_heads=16, compute_heads=32, use_cond_rin_block=True,
    concat_cond_token_to_latents=False, use_self_conditioning=True, num_text_registers=16``, seven rewards.

    Two calls:

    * ``forward(y, gamma, text, text_mask, rewards, reward_mask, previous_latents)``: the bare network in the
      authors' convention (gamma = signal level), returns ``(patches, latents)`` as theirs does.
    * ``velocity(x_t, t, ...)``: this project's convention (t = noise level, ``miro.flow``) with their
      preconditioning applied, returns ``RINOutput(velocity, latents)``.
    """

    _supports_gradient_checkpointing = False
    _no_split_modules = ["RINBlock", "RINSelfAttentionBlock"]

    @register_to_config
    def __init__(
        self,
        data_size: int = 32,
        data_dim: int = 512,
        num_input_channels: int = 4,
        num_latents: int = 256,
        latents_dim: int = 1024,
        label_dim: int = 2048,
        num_processing_layers: int = 4,
        num_blocks: int = 4,
        patch_size: int = 2,
        num_cond_tokens: int = 77,
        read_write_heads: int = 16,
        compute_heads: int = 32,
        latent_mlp_multiplier: int = 4,
        data_mlp_multiplier: int = 4,
        use_cond_rin_block: bool = True,
        concat_cond_token_to_latents: bool = False,
        use_self_conditioning: bool = True,
        num_text_registers: int = 16,
        coherence_keys: Sequence[str] = AUTHORS_COHERENCE_KEYS,
        mixer_heads: int = 16,
        mixer_depth: int = 2,
        sigma_data: float = 0.5,
        normalization: str | None = "noise_driven",
        logvar_channels: int = 128,
    ):
        super().__init__()
        coherence_keys = list(coherence_keys)  # may be empty: the no-reward baseline (not an authors' model)
        _check(
            len(set(coherence_keys)) == len(coherence_keys), f"coherence_keys={coherence_keys}: repeated key"
        )
        _check(
            latents_dim % 4 == 0, f"latents_dim={latents_dim}: must be a multiple of 4 (the time embedder)"
        )
        _check(
            data_size % patch_size == 0, f"data_size={data_size} must be divisible by patch_size={patch_size}"
        )
        _check(
            normalization in ("noise_driven", None),
            f"normalization={normalization!r}: 'noise_driven' or null",
        )
        num_learned = num_latents - num_cond_tokens - 1 if concat_cond_token_to_latents else num_latents
        _check(
            num_learned > 0, f"num_latents={num_latents} leaves no learned latents after the condition tokens"
        )

        patch_dim = num_input_channels * patch_size * patch_size
        self.patch_extractor = nn.Linear(patch_dim, data_dim)
        self.data_pos_embedding = nn.Parameter(torch.zeros((data_size // patch_size) ** 2, data_dim))
        self.data_ln = FP32RMSNorm(data_dim)
        self.latents = nn.Parameter(torch.zeros(num_learned, latents_dim))
        self.time_embedder = ScalarEmbedder(latents_dim // 4)

        self.transformers_blocks = nn.ModuleList(
            [RINSelfAttentionBlock(latents_dim, mixer_heads, 4, mixer=True) for _ in range(mixer_depth)]
        )
        self.coherence_embedder = nn.ModuleDict(
            {f"{k}_coherence": ScalarEmbedder(latents_dim // 4) for k in coherence_keys}
        )
        self.coherence_positional_embedding = nn.Parameter(torch.zeros(len(coherence_keys), latents_dim))
        self.map_text_tokens = nn.Linear(label_dim, latents_dim)
        self.text_registers = nn.Parameter(torch.zeros(num_text_registers, latents_dim))

        if use_self_conditioning:
            self.ln_previous_1 = nn.LayerNorm(latents_dim, eps=1e-6)
            self.linear_previous = GeluMlp(latents_dim, latent_mlp_multiplier)
            self.ln_previous_2 = nn.LayerNorm(latents_dim, eps=1e-6)

        self.rin_blocks = nn.ModuleList(
            [
                RINBlock(
                    data_dim,
                    latents_dim,
                    num_processing_layers,
                    read_write_heads,
                    compute_heads,
                    latent_mlp_multiplier,
                    data_mlp_multiplier,
                    use_cond_rin_block,
                )
                for _ in range(num_blocks)
            ]
        )
        self.map_tokens_to_patches = nn.Sequential(FP32RMSNorm(data_dim), nn.Linear(data_dim, patch_dim))
        if logvar_channels:
            self.logvar_proj = nn.Sequential(FourierFeatures(logvar_channels), nn.Linear(logvar_channels, 1))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The authors' init (module docstring); ``logvar_proj`` keeps nn.Linear's default, as theirs."""
        logvar = set(self.logvar_proj.modules()) if self.config.logvar_channels else set()
        for m in self.modules():
            if isinstance(m, nn.Linear) and m not in logvar:
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (
            self.data_pos_embedding,
            self.latents,
            self.text_registers,
            self.coherence_positional_embedding,
        ):
            nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        if self.config.use_self_conditioning:
            nn.init.zeros_(self.ln_previous_2.weight)
            nn.init.zeros_(self.ln_previous_2.bias)

    # ---------------------------------------------------------------------------------------------------
    @property
    def coherence_keys(self) -> tuple[str, ...]:
        """The reward names, in the order of the ``rewards`` columns (the authors' names, no suffix)."""
        return tuple(self.config.coherence_keys)

    @property
    def num_latent_tokens(self) -> int:
        """Latent tokens per sample for a text of ``num_cond_tokens`` tokens (the self-conditioning shape)."""
        return self.config.num_latents

    def reward_matrix(
        self, rewards: torch.Tensor | Mapping[str, Any] | None, batch_size: int, device, dtype=torch.float32
    ) -> torch.Tensor:
        """[B, K] values in ``coherence_keys`` order from a tensor, or from a mapping ``{name: value or [B]}``
        keyed by reward name (``"<name>_coherence"``, the authors' batch keys, also accepted); missing keys
        and ``None`` are NaN, i.e. dropped."""
        k = len(self.coherence_keys)
        if rewards is None:
            return torch.full((batch_size, k), float("nan"), device=device, dtype=dtype)
        if isinstance(rewards, torch.Tensor):
            if rewards.shape != (batch_size, k):
                raise ValueError(
                    f"rewards: expected shape [{batch_size}, {k}] (batch, one column per key of "
                    f"{list(self.coherence_keys)}), got {list(rewards.shape)}"
                )
            return rewards.to(device=device, dtype=dtype)
        known = set(self.coherence_keys) | {f"{n}_coherence" for n in self.coherence_keys}
        unknown = sorted(set(rewards) - known)
        if unknown:
            raise ValueError(
                f"rewards: unknown keys {unknown}; this model's rewards are {list(self.coherence_keys)}"
            )
        columns = []
        for name in self.coherence_keys:
            value = rewards.get(name, rewards.get(f"{name}_coherence"))
            value = float("nan") if value is None else value
            col = torch.as_tensor(value, device=device, dtype=dtype)
            columns.append(col.expand(batch_size) if col.ndim == 0 else col.reshape(batch_size))
        return torch.stack(columns, dim=1)

    def encode_condition(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rewards: torch.Tensor | Mapping[str, Any] | None = None,
        reward_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed ``[rewards, registers, text]`` tokens [B, K + R + L, d] and their key mask [B, K + R + L]."""
        b = text.shape[0]
        dtype = self.map_text_tokens.weight.dtype
        values = self.reward_matrix(rewards, b, text.device)
        keep = ~torch.isnan(values)
        if reward_mask is not None:
            keep = keep & reward_mask.to(device=text.device, dtype=torch.bool)
        safe = torch.where(keep, values, torch.zeros_like(values))
        emb = (
            torch.stack(
                [
                    self.coherence_embedder[f"{n}_coherence"](safe[:, i])
                    for i, n in enumerate(self.coherence_keys)
                ],
                dim=1,
            )
            if self.coherence_keys
            else self.coherence_positional_embedding[None].expand(b, -1, -1)  # [B, 0, d]: no rewards
        )
        emb = torch.where(keep[:, :, None], emb, torch.zeros_like(emb))  # a dropped reward: a zero embedding
        tokens = torch.cat(
            [
                emb + self.coherence_positional_embedding[None],
                self.text_registers[None].expand(b, -1, -1).to(emb.dtype),
                self.map_text_tokens(text.to(dtype)),
            ],
            dim=1,
        )
        ones = torch.ones(
            b, emb.shape[1] + self.text_registers.shape[0], dtype=torch.bool, device=text.device
        )
        mask = torch.cat([ones, text_mask], dim=1)
        for block in self.transformers_blocks:
            tokens = block(tokens, key_padding_mask(mask))
        return tokens, mask

    def forward(
        self,
        y: torch.Tensor,
        gamma: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rewards: torch.Tensor | Mapping[str, Any] | None = None,
        reward_mask: torch.Tensor | None = None,
        previous_latents: torch.Tensor | None = None,
        condition: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The bare network, as the authors' ``CADRINTextCond(batch)`` in ``eval()``.

        ``y`` [B, C, H, W] (already scaled by c_in), ``gamma`` [B] or scalar (signal level: 1 = data),
        ``text`` [B, L, label_dim], ``text_mask`` [B, L] bool (True = a real token), ``rewards`` [B, K] in
        ``coherence_keys`` order or a mapping (``reward_matrix``; NaN or missing = dropped), ``reward_mask``
        [B, K] bool (False = dropped), ``previous_latents`` [B, N, latents_dim] or None (no self-conditioning),
        ``condition``: ``encode_condition(text, text_mask, rewards, reward_mask)`` computed beforehand (a sampler
        computes it once per run: the condition mixer depends on neither y nor gamma; the time token is put
        in front of it here), or None to compute it from ``text`` and ``rewards``.
        Returns ``(patches shaped like y, latents [B, N, latents_dim])``.
        """
        cfg = self.config
        b, c, h, w = y.shape
        p = cfg.patch_size
        if c != cfg.num_input_channels or h != cfg.data_size or w != cfg.data_size:
            raise ValueError(
                f"y: expected [B, {cfg.num_input_channels}, {cfg.data_size}, {cfg.data_size}] "
                f"(num_input_channels, data_size), got {list(y.shape)}"
            )
        if condition is None:  # with a precomputed condition the text is not read (it may be None)
            text_mask = _bool_mask(text_mask, "text_mask")
            if text.shape[:2] != text_mask.shape or text.shape[0] != b:
                raise ValueError(
                    f"text {list(text.shape)} and text_mask {list(text_mask.shape)} must be [B, L, D] / [B, L]"
                )
        dtype = self.patch_extractor.weight.dtype
        gamma = _per_sample(gamma, b, y.device)
        x = (
            y.to(dtype)
            .reshape(b, c, h // p, p, w // p, p)
            .permute(0, 2, 4, 3, 5, 1)
            .reshape(b, -1, p * p * c)
        )
        x = self.data_ln(self.patch_extractor(x)) + self.data_pos_embedding[None]

        time = self.time_embedder(gamma)[:, None]
        if condition is None:
            mixed, mixed_mask = self.encode_condition(text, text_mask, rewards, reward_mask)
        else:  # encode_condition's output, computed once for a whole sampling run (it depends on neither y nor gamma)
            mixed, mixed_mask = condition
            if mixed.shape[0] != b or mixed_mask.shape != mixed.shape[:2]:
                raise ValueError(
                    f"condition: expected encode_condition's ([{b}, S, d], [{b}, S]), got "
                    f"{list(mixed.shape)} and {list(mixed_mask.shape)}"
                )
        cond = torch.cat([time, mixed], dim=1)
        cond_mask = torch.cat([torch.ones_like(mixed_mask[:, :1]), mixed_mask], dim=1)
        latents = self.latents[None].expand(b, -1, -1)
        z = torch.cat([latents, cond], dim=1) if cfg.concat_cond_token_to_latents else latents + time
        if cfg.use_self_conditioning and previous_latents is not None:
            prev = previous_latents.to(z.dtype)
            z = z + self.ln_previous_2(prev + self.linear_previous(self.ln_previous_1(prev)))
        attend = key_padding_mask(cond_mask)
        for block in self.rin_blocks:
            x, z = block(x, z, cond, attend)
        x = self.map_tokens_to_patches(x)
        x = x.reshape(b, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)
        return x, z

    # ---------------------------------------------------------------------------------------------------
    def preconditioning_scales(self, gamma: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(c_in [B], c_out) of the authors' ``FlowPrecond`` at signal level gamma."""
        gamma = gamma.float()
        if self.config.normalization is None:
            return torch.ones_like(gamma), 1.0
        sd = self.config.sigma_data
        return 1 / torch.sqrt((gamma * sd) ** 2 + (1 - gamma) ** 2), math.sqrt(1 + sd**2)

    def zero_latents(self, batch_size: int, device, dtype=torch.float32) -> torch.Tensor:
        """The self-conditioning input of a first step (``FlowPrecond`` fills in zeros, not None)."""
        return torch.zeros(
            batch_size, self.config.num_latents, self.config.latents_dim, device=device, dtype=dtype
        )

    def precondition(
        self,
        y: torch.Tensor,
        gamma: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rewards: torch.Tensor | Mapping[str, Any] | None = None,
        reward_mask: torch.Tensor | None = None,
        previous_latents: torch.Tensor | None = None,
        condition: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' ``FlowPrecond(network, batch)``: ``c_out * net(c_in * y)``, zero previous latents
        when None; gamma is the signal level.  Returns ``(F, latents)``."""
        b = y.shape[0]
        gamma = _per_sample(gamma, b, y.device)
        c_in, c_out = self.preconditioning_scales(gamma)
        if previous_latents is None:
            previous_latents = self.zero_latents(b, y.device)
        out, z = self(
            y * c_in.view(-1, 1, 1, 1).to(y.dtype),
            gamma,
            text,
            text_mask,
            rewards,
            reward_mask,
            previous_latents,
            condition,
        )
        return out * c_out, z

    def velocity(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rewards: torch.Tensor | Mapping[str, Any] | None = None,
        reward_mask: torch.Tensor | None = None,
        previous_latents: torch.Tensor | None = None,
        condition: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> RINOutput:
        """Velocity ``eps - x_0`` at this project's noise level ``t`` (gamma = 1 - t), preconditioned.

        ``1 - t`` is computed in ``t``'s dtype before the fp32 cast, so a float64 ``t`` = 1 - gamma gives back
        the fp32 gamma exactly (an fp32 ``t`` moves gamma by up to an ulp, ~1e-5 in the outputs)."""
        t = torch.as_tensor(t, device=x_t.device)  # 1 - t in t's own dtype: a float64 t gives gamma exactly
        out, z = self.precondition(
            x_t,
            1 - (t if t.is_floating_point() else t.float()),
            text,
            text_mask,
            rewards,
            reward_mask,
            previous_latents,
            condition,
        )
        return RINOutput(out, z)

    def logvar(self, gamma: torch.Tensor) -> torch.Tensor:
        """EDM2's learned log-variance u(gamma) [B] of the authors' loss weighting (``logvar_proj``)."""
        if not self.config.logvar_channels:
            raise ValueError("this model has no logvar head (logvar_channels=0)")
        feats = self.logvar_proj[0](gamma.flatten()).to(self.logvar_proj[1].weight.dtype)
        return self.logvar_proj[1](feats).squeeze(-1)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _per_sample(value, batch_size: int, device) -> torch.Tensor:
    """A scalar or [B] time -> [B] fp32 on ``device``."""
    value = torch.as_tensor(value, device=device, dtype=torch.float32)
    if value.ndim == 0:
        return value.expand(batch_size)
    if value.shape != (batch_size,):
        raise ValueError(f"time: expected a scalar or shape [{batch_size}], got {list(value.shape)}")
    return value


def _bool_mask(mask: torch.Tensor, name: str) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point():
        raise TypeError(f"{name}: a bool (or integer 0/1) mask is expected, got {mask.dtype}")
    return mask != 0


# --------------------------------------------------------------------------------------------------------
# The authors' layout: config, state dict, folder
# --------------------------------------------------------------------------------------------------------


def rin_config_from_authors(config: Mapping[str, Any]) -> dict[str, Any]:
    """``MiroRIN`` arguments from an authors' ``config.json`` (its ``network`` and ``preconditioning``)."""
    if "network" not in config:
        raise AuthorsCheckpointError(
            f"config.json has no 'network' entry (found keys {sorted(config)}); the authors' layout has "
            "'network' (CADRINTextCond arguments) and 'preconditioning' (FlowPrecond arguments)"
        )
    net = dict(config["network"])
    net.pop("_target_", None)
    allowed = set(inspect.signature(MiroRIN.__init__).parameters) - {
        "self",
        "sigma_data",
        "normalization",
        "logvar_channels",
    }
    unknown = sorted(set(net) - allowed - set(AUTHORS_TRAINING_ONLY))
    if unknown:
        raise AuthorsCheckpointError(
            f"config.json 'network' has arguments this reimplementation does not know: {unknown} "
            f"(known: {sorted(allowed | set(AUTHORS_TRAINING_ONLY))})"
        )
    out = {k: v for k, v in net.items() if k in allowed}
    if "coherence_keys" in config and "coherence_keys" not in out:
        out["coherence_keys"] = list(config["coherence_keys"])
    pre = dict(config.get("preconditioning") or {})
    pre.pop("_target_", None)
    normalization = pre.get("do_normalization", "noise_driven")
    out["normalization"] = "noise_driven" if normalization in ("noise_driven", True) else None
    out["sigma_data"] = float(pre.get("sigma_data", 0.5))
    out["logvar_channels"] = (
        int(pre.get("logvar_channels", 128)) if pre.get("do_gradnorm_reweighting", True) else 0
    )
    if pre.get("logvar_mlp_layers", 0):
        raise AuthorsCheckpointError(
            f"preconditioning.logvar_mlp_layers={pre['logvar_mlp_layers']}: only 0 (the released models) is supported"
        )
    for key, want in (
        ("num_latents", out.get("num_latents", 256)),
        ("latents_dim", out.get("latents_dim", 1024)),
    ):
        if key in pre and pre[key] != want and out.get("use_self_conditioning", True):
            raise AuthorsCheckpointError(
                f"preconditioning.{key}={pre[key]} differs from network.{key}={want}: the self-conditioning "
                "zeros would not fit the latents"
            )
    return out


def rin_state_dict_from_authors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' ``model.safetensors`` keys -> ``MiroRIN`` keys.

    ``network.<name>`` -> ``<name>``, ``preconditioning.logvar_proj.*`` -> ``logvar_proj.*``; the constant
    all-True masks are dropped (checked to be all True); ``data_preprocessing.*`` / ``postprocessing.*`` are
    left out (``split_authors_state_dict`` returns them).
    """
    out = {}
    for key, value in state.items():
        if key.startswith("network."):
            name = key[len("network.") :]
            if name.rsplit(".", 1)[-1] in _AUTHORS_CONSTANT_MASKS:
                if value.dtype != torch.bool or not bool(value.all()):
                    raise AuthorsCheckpointError(
                        f"{key}: expected an all-True bool mask, got {value.dtype} {list(value.shape)}"
                    )
                continue
            out[name] = value
        elif key.startswith("preconditioning."):
            out[key[len("preconditioning.") :]] = value
    return out


def rin_state_dict_to_authors(model: MiroRIN) -> dict[str, torch.Tensor]:
    """``MiroRIN``'s weights in the authors' ``model.safetensors`` layout (the constant masks put back)."""
    out = {}
    for name, value in model.state_dict().items():
        prefix = "preconditioning." if name.startswith("logvar_proj.") else "network."
        out[prefix + name] = value.detach().contiguous()
    for name, module in model.named_modules():
        if isinstance(module, (RINCrossAttentionBlock, RINSelfAttentionBlock)):
            out[f"network.{name}.attention_mask_dummy"] = torch.ones(1, 1, dtype=torch.bool)
    k, r = len(model.coherence_keys), model.config.num_text_registers
    out["network.registers_coherence_mask"] = torch.ones(r + k, dtype=torch.bool)
    out["network.cond_mask"] = torch.ones(r + k + 1, dtype=torch.bool)
    return out


@dataclass
class AuthorsCheckpoint:
    """A model read from the authors' layout: the network, their full config, the empty prompt's text
    tokens, and the pipeline state that is not the network's (``data_preprocessing.*``, ``postprocessing.*``:
    the VAE latent normalisation buffers)."""

    model: MiroRIN
    config: dict[str, Any]
    uncond_embedding: torch.Tensor
    path: Path
    pipeline_state: dict[str, torch.Tensor] = field(default_factory=dict)


def resolve_authors_folder(path: str | Path, variant: str | None = None) -> Path:
    """The folder holding ``AUTHORS_FILES`` (``variant`` is a subfolder), or an ``AuthorsCheckpointError``
    that lists what the folder holds and what to pass instead."""
    root = Path(path)
    if not root.is_dir():
        raise AuthorsCheckpointError(
            f"{root}: not a folder (expected a folder in the authors' layout: {list(AUTHORS_FILES)})"
        )
    base = root / variant if variant else root
    if variant and not base.is_dir():
        variants = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
        raise AuthorsCheckpointError(f"{root}: no variant {variant!r}; variants found: {variants or 'none'}")
    missing = [name for name in AUTHORS_FILES if not (base / name).is_file()]
    if not missing:
        return base
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in base.iterdir())
    hint = ""
    variants = sorted(
        p.name for p in base.iterdir() if p.is_dir() and all((p / n).is_file() for n in AUTHORS_FILES)
    )
    if variants:
        hint = f"; it holds variants, pass variant= one of {variants}"
    elif (base / "model_index.json").is_file():
        hint = "; it is a diffusers pipeline folder (model_index.json): load it with miro.sampling.pipeline.MiroPipeline"
    elif (base / "config.json").is_file() and (base / "diffusion_pytorch_model.safetensors").is_file():
        hint = "; it is a diffusers model folder: load it with MiroRIN.from_pretrained"
    raise AuthorsCheckpointError(
        f"{base}: not in the authors' (miro-t2i) layout: missing {missing}; expected {list(AUTHORS_FILES)}, "
        f"found {found}{hint}"
    )


def load_authors_checkpoint(
    path: str | Path, variant: str | None = None, torch_dtype: torch.dtype | None = None
) -> AuthorsCheckpoint:
    """Read a local folder in the authors' layout (``config.json``, ``model.safetensors``,
    ``uncond_embedding.npy``; ``variant`` = a subfolder) into a ``MiroRIN`` (eval mode).

    Raises ``AuthorsCheckpointError`` naming what was found and what is expected when the folder, config or
    weights do not fit (missing / unexpected / mis-shaped weights are listed).
    """
    import numpy as np
    from safetensors.torch import load_file

    base = resolve_authors_folder(path, variant)
    try:
        config = json.loads((base / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise AuthorsCheckpointError(f"{base / 'config.json'}: not valid JSON ({err})") from err
    model = MiroRIN(**rin_config_from_authors(config))
    state = load_file(str(base / "model.safetensors"))
    if not any(k.startswith("network.") for k in state):
        raise AuthorsCheckpointError(
            f"{base / 'model.safetensors'}: no 'network.*' weights (first keys found: {sorted(state)[:5]}); the "
            "authors' file prefixes the network's weights with 'network.'"
        )
    mapped = rin_state_dict_from_authors(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    shapes = [
        f"{k}: {list(mapped[k].shape)} (expected {list(v.shape)})"
        for k, v in expected.items()
        if k in mapped and mapped[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise AuthorsCheckpointError(
            f"{base / 'model.safetensors'} does not fit its config.json: missing {_few(missing)}, unexpected "
            f"{_few(unexpected)}, mis-shaped {_few(shapes)}"
        )
    model.load_state_dict(mapped, strict=True)
    model.eval()
    uncond = torch.from_numpy(np.load(base / "uncond_embedding.npy").astype(np.float32))
    if torch_dtype is not None:
        cast_dtype(model, torch_dtype)
    rest = {k: v for k, v in state.items() if k.startswith(("data_preprocessing.", "postprocessing."))}
    return AuthorsCheckpoint(
        model=model, config=config, uncond_embedding=uncond, path=base, pipeline_state=rest
    )


def cast_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` cast to ``dtype`` without diffusers' ``ModelMixin.to`` warning (it warns about modules to keep
    in fp32 even when there are none; ``MiroRIN`` computes its norms and Fourier features in fp32 itself)."""
    return nn.Module.to(model, dtype=dtype)


def _few(items: list[str], n: int = 6) -> str:
    if not items:
        return "none"
    return str(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")
