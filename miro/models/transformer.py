"""MiroTransformer: a DiT with cross-attention to a condition set of one token per reward plus the text.

The call contract (docs/contracts.md, "Model call")::

    velocity = model(x, t, text, text_mask, rewards=None, reward_mask=None, drop_text=None)

Time follows ``miro.flow``: t in [0, 1] is the noise level (t = 0 data, t = 1 noise) and the output is the
velocity eps - x_0.  Architecture and conditioning semantics are described in docs/models.md.
"""

from __future__ import annotations

import functools
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from miro.models.embeddings import RewardEmbedder, TimestepEmbedder, sincos_2d
from miro.models.layers import (
    MLP_TYPES,
    Attention,
    ConvBlock,
    ConvCrossAttention,
    Mlp,
    key_padding_mask,
    modulate,
)
from miro.models.ttt import SCAN_ORDERS, TTTMixer
from miro.utils.config import require, require_choice

#: The token mixer of the image tokens in every block: self-attention, a TTT layer in its place, or
#: self-attention followed by a gated TTT layer (the hybrid; testtime.md 4.3, TTT-Video's placement).
TOKEN_MIXERS = ("attention", "ttt_linear", "ttt_mlp", "attention+ttt_linear", "attention+ttt_mlp")


class MiroBlock(nn.Module):
    """adaLN-Zero self-attention, cross-attention to the condition set, adaLN-Zero MLP.

    The self-attention and MLP branches are modulated and gated by the time embedding (DiT's adaLN-Zero:
    gates start at zero, so every block starts as the identity on its self-attention/MLP path).  The
    cross-attention branch is a plain pre-LayerNorm residual, as in PixArt-alpha.

    ``token_mixer`` "ttt_linear" / "ttt_mlp" puts a non-causal TTT layer (``miro.models.ttt``) where
    self-attention was (same adaLN modulation and gate); "attention+ttt_*" keeps self-attention and adds
    ``x += TTT(LN(x))`` after it, with its own pre-LayerNorm and the TTT layer's own tanh gates.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        mlp_type: str,
        qk_norm: bool,
        token_mixer: str = "attention",
        ttt_mini_batch: int = 16,
        ttt_scan_orders: str = "raster+raster_rev",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = (
            Attention(dim, num_heads, qk_norm=qk_norm) if token_mixer.startswith("attention") else None
        )
        self.ttt = None
        if "ttt" in token_mixer:
            inner = "mlp" if token_mixer.endswith("ttt_mlp") else "linear"
            self.ttt = TTTMixer(
                dim, num_heads, inner=inner, mini_batch=ttt_mini_batch, scan_orders=ttt_scan_orders
            )
            if self.attn is not None:
                self.norm_ttt = nn.LayerNorm(dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = Attention(dim, num_heads, qk_norm=qk_norm, cross=True)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio, mlp_type)
        self.modulation = nn.Linear(dim, 6 * dim)

    def forward(
        self,
        x: torch.Tensor,
        c_act: torch.Tensor,
        cond: torch.Tensor,
        cond_mask: torch.Tensor,
        grid: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """``grid``: the image tokens' (rows, columns), for the TTT layer's column scans."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c_act).unsqueeze(1).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1 * (self.attn(h) if self.attn is not None else self.ttt(h, grid))
        if self.attn is not None and self.ttt is not None:
            x = x + self.ttt(self.norm_ttt(x), grid)
        x = x + self.cross_attn(self.norm2(x), cond, cond_mask)
        return x + gate2 * self.mlp(modulate(self.norm3(x), shift2, scale2))


class ConditionBlock(nn.Module):
    """Pre-LN self-attention + MLP over the condition set (MIRO's 2-layer text/reward mixer)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, mlp_type: str, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio, mlp_type)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.mlp(self.norm2(x))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    return None if not value else value not in ("0", "false", "no", "off")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _valid_scan_orders(value) -> bool:
    parts = value.split("+") if isinstance(value, str) else []
    return bool(parts) and len(set(parts)) == len(parts) and all(p in SCAN_ORDERS for p in parts)


def spatial_stride(config: Mapping[str, Any]) -> int:
    """Input pixels per token side: ``patch_size`` times the conv levels' downsampling (2^(conv_levels - 1)
    with a conv stem) times the stem's ``conv_pixel_unshuffle``."""
    conv = bool(config.get("conv_channels"))
    levels = config.get("conv_levels", 1) if conv else 1
    unshuffle = config.get("conv_pixel_unshuffle", 1) if conv else 1
    return config["patch_size"] * 2 ** (levels - 1) * unshuffle


def stride_factors(config: Mapping[str, Any], prefix: str = "", values: bool = True) -> str:
    """The keys whose product is ``spatial_stride``, for error messages: "patch_size=2 x 2^(conv_levels - 1)"
    (``values=False``: the key names alone)."""
    conv = bool(config.get("conv_channels"))

    def key(name: str) -> str:
        return prefix + name + (f"={config.get(name, 1)}" if values else "")

    factors = [key("patch_size")]
    if conv and config.get("conv_levels", 1) > 1:
        factors.append(f"2^({prefix}conv_levels - 1)")
    if conv and config.get("conv_pixel_unshuffle", 1) > 1:
        factors.append(key("conv_pixel_unshuffle"))
    return " x ".join(factors)


def check_arguments(args: Mapping[str, Any], prefix: str = "") -> None:
    """The one check of MiroTransformer's arguments; raises ``ConfigError`` ("<prefix><key>=<value>: <allowed>").

    Only the keys present in ``args`` are checked (a config leaves the derived sizes out until they are known);
    ``prefix`` names where they come from (``"model."`` for the hydra config).
    """

    def check(key: str, ok, allowed: str) -> None:
        if key in args:
            require(bool(ok(args[key])), prefix + key, args[key], allowed)

    def at_least(key: str, low: int) -> None:
        check(key, lambda v: _is_int(v) and v >= low, f"must be an integer >= {low}")

    for key in ("in_channels", "sample_size", "patch_size", "depth", "num_heads", "text_dim"):
        at_least(key, 1)
    for key in ("num_registers", "cond_refiner_depth"):
        at_least(key, 0)
    check("conv_channels", lambda v: _is_int(v) and v >= 0 and v % 8 == 0,
          "must be 0 (no conv stem/head) or a positive multiple of 8 (GroupNorm's 8 groups)")
    at_least("conv_levels", 1)
    conv, pooled = args.get("conv_channels"), args.get("pooled_text")
    has_conv = _is_int(conv) and conv > 0
    check("conv_levels", lambda v: v == 1 or has_conv,
          f"must be 1 without conv stem (conv_channels={conv}); more levels need conv_channels > 0")
    check("conv_pooled_text", lambda v: not v or (has_conv and pooled is True),
          f"needs the conv stem (conv_channels={conv}) and pooled_text=true (pooled_text={pooled})")
    check("conv_scale_shift", lambda v: not v or has_conv, f"needs the conv stem (conv_channels={conv})")
    check("conv_cross_attention", lambda v: not v or has_conv, f"needs the conv stem (conv_channels={conv})")
    at_least("conv_pixel_unshuffle", 1)
    check("conv_pixel_unshuffle", lambda v: v == 1 or has_conv,
          f"must be 1 without conv stem (conv_channels={conv}); folding pixels into channels needs conv_channels > 0")
    at_least("time_frequency_dim", 2)
    if "token_mixer" in args:
        require_choice(prefix + "token_mixer", args["token_mixer"], TOKEN_MIXERS)
    at_least("ttt_mini_batch", 1)
    check(
        "ttt_scan_orders",
        _valid_scan_orders,
        f"must be one or more distinct scan orders joined by '+', each one of {list(SCAN_ORDERS)} "
        "(e.g. 'raster+raster_rev')",
    )
    check("out_channels", lambda v: v is None or (_is_int(v) and v >= 1), "must be an integer >= 1 or null (= in_channels)")
    heads = args.get("num_heads")
    check("width", lambda v: _is_int(v) and v > 0 and (not _is_int(heads) or heads < 1 or v % heads == 0),
          f"must be divisible by num_heads={heads}")
    check("width", lambda v: v % 4 == 0, "must be a multiple of 4 (2D sin-cos positions)")
    check("mlp_ratio", lambda v: isinstance(v, numbers.Real) and v > 0, "must be > 0")
    if "mlp_type" in args:
        require_choice(prefix + "mlp_type", args["mlp_type"], MLP_TYPES)
    check("reward_names", lambda v: not isinstance(v, str) and len(set(v)) == len(v) and all(isinstance(n, str) and n for n in v),
          "must be distinct non-empty names ([] = the no-reward baseline)")
    check("reward_fourier_dim", lambda v: _is_int(v) and v >= 2 and v % 2 == 0, "must be an even integer >= 2")
    check("reward_fourier_scale", lambda v: isinstance(v, numbers.Real) and v > 0, "must be > 0")
    sizes = {k: args.get(k, 1) for k in ("patch_size", "conv_levels", "conv_pixel_unshuffle")}
    if "patch_size" in args and all(_is_int(v) and v >= 1 for v in sizes.values()):
        geometry = {**sizes, "conv_channels": conv if has_conv else 0}
        stride = spatial_stride(geometry)
        total = f" = {stride}" if stride != sizes["patch_size"] else ""
        check("sample_size", lambda v: v % stride == 0, f"must be a multiple of {stride_factors(geometry)}{total}")


#: Where the reward embeddings enter (``ConditionSetMixin._build_condition_set``): cross-attended tokens, or the
#: time embedding.
REWARD_PATHS = ("tokens", "time")


class ConditionSetMixin:
    """The condition set of the backbones that read the prompt and the rewards through cross-attention
    (``MiroTransformer``, ``MiroUNet``): one token per reward, the registers, a null-text slot and the projected
    text tokens, refined by ``cond_refiner_depth`` self-attention blocks, plus the pooled prompt for the time
    embedding; the input checks of the model call (docs/contracts.md, "Model call").  The host sets
    ``reward_names`` and calls ``_build_condition_set`` in its ``__init__``, and defines ``spatial_stride`` and
    ``_stride_text``."""

    #: When ``forward`` checks that t and the rewards lie in [0, 1]: None (the default) = when they are on the
    #: CPU, where the check reads host memory; True = on every device (debugging: one host sync per call on an
    #: accelerator, which stalls the training loop); False = never.  The environment variable
    #: ``MIRO_CHECK_VALUES=1`` (or ``0``) sets the default.  Training data is checked where it is produced, on the
    #: CPU (the data pipeline rejects a bucket outside 0..num_bins-1), and the sampler builds t and the targets.
    check_values: bool | None = _env_flag("MIRO_CHECK_VALUES")

    def _build_condition_set(self, width: int, text_dim: int, reward_names: list[str], reward_fourier_dim: int,
                             reward_fourier_scale: float, num_registers: int, cond_refiner_depth: int, num_heads: int,
                             mlp_ratio: float, mlp_type: str, qk_norm: bool, pooled_text: bool,
                             reward_path: str = "tokens", frozen_text_path: bool = False) -> None:
        """The modules of the condition set, ``width`` wide (registered in this order: it fixes the init draws).

        ``reward_path`` says where the reward embeddings go: ``"tokens"`` (MIRO's: one token per reward in the
        cross-attended set, mixed with the text by the refiner) or ``"time"`` (their sum, through a zero-initialised
        linear map, added to the pooled vector that the host adds to its time embedding, as SDXL's refiner reads its
        aesthetic score; the cross-attended set then holds the text alone, as the no-reward baseline's).

        ``frozen_text_path``: a second projection of the encoder's tokens, a fixed random Gaussian map (a buffer,
        drawn at construction and saved with the weights), added to the trained projection through a per-channel
        gate that starts at zero (so a warm start computes what the saved model did).  Why: the trained projection
        keeps what the loss has used so far and drops the rest; in the shapes reference it drops which noun each
        colour word belongs to, which the encoder's tokens carry and a random map of the same width keeps
        (``binding_probe``, docs/text_conditioning.md section 37)."""
        self.text_norm = nn.RMSNorm(text_dim, eps=1e-6)
        self.text_proj = nn.Linear(text_dim, width)
        if frozen_text_path:
            self.register_buffer("frozen_text_map", torch.randn(text_dim, width) / text_dim**0.5)
            self.frozen_text_gate = nn.Parameter(torch.zeros(width))
        else:
            self.frozen_text_map = self.frozen_text_gate = None
        self.null_text = nn.Parameter(torch.zeros(1, 1, width))
        self.pooled_text_proj = (
            nn.Sequential(nn.Linear(text_dim, width), nn.SiLU(), nn.Linear(width, width)) if pooled_text else None
        )
        self.reward_embedder = (
            RewardEmbedder(len(reward_names), width, reward_fourier_dim, reward_fourier_scale) if reward_names else None
        )
        self.reward_path = reward_path
        self.reward_time_proj = nn.Linear(width, width) if reward_names and reward_path == "time" else None
        self.registers = nn.Parameter(torch.zeros(1, num_registers, width)) if num_registers else None
        self.cond_blocks = nn.ModuleList(
            ConditionBlock(width, num_heads, mlp_ratio, mlp_type, qk_norm) for _ in range(cond_refiner_depth)
        )

    @property
    def num_rewards(self) -> int:
        return len(self.reward_names)

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, x, t, text, text_mask, rewards, reward_mask, drop_text) -> None:
        cfg = self.config
        _require(x.dim() == 4, f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        _require(c == cfg.in_channels, f"x has {c} channels, the model expects in_channels={cfg.in_channels}")
        stride = self.spatial_stride
        _require(h % stride == 0 and w % stride == 0,
                 f"x spatial size {h}x{w} must be a multiple of {self._stride_text()}")
        _require(t.shape == (b,), f"t must have shape [B]=[{b}], got {tuple(t.shape)}")
        _require(text.dim() == 3 and text.shape[0] == b and text.shape[2] == cfg.text_dim,
                 f"text must be [B={b}, L, text_dim={cfg.text_dim}], got {tuple(text.shape)}")
        _require(text_mask.shape == text.shape[:2] and text_mask.dtype == torch.bool,
                 f"text_mask must be a bool tensor of shape {tuple(text.shape[:2])}, got {text_mask.dtype} {tuple(text_mask.shape)}")
        if drop_text is not None:
            _require(drop_text.shape == (b,) and drop_text.dtype == torch.bool,
                     f"drop_text must be a bool tensor of shape [{b}], got {drop_text.dtype} {tuple(drop_text.shape)}")
        r = self.num_rewards
        if r == 0:
            _require(rewards is None or rewards.numel() == 0,
                     "this is the no-reward baseline (reward_names=[]); pass rewards=None")
            _require(reward_mask is None or reward_mask.numel() == 0,
                     "this is the no-reward baseline (reward_names=[]); pass reward_mask=None")
            return
        if rewards is not None:
            _require(rewards.shape == (b, r),
                     f"rewards must be [B={b}, R={r}] in the order {self.reward_names}, got {tuple(rewards.shape)}")
            _require(rewards.is_floating_point(), f"rewards must be floating point, got {rewards.dtype}")
        if reward_mask is not None:
            _require(reward_mask.shape == (b, r) and reward_mask.dtype == torch.bool,
                     f"reward_mask must be a bool tensor of shape [{b}, {r}], got {reward_mask.dtype} {tuple(reward_mask.shape)}")
            _require(rewards is not None, "reward_mask given without rewards")

    def _check_values(self, t: torch.Tensor, rewards: torch.Tensor | None, reward_mask: torch.Tensor | None) -> None:
        """Range checks of t and the rewards, as ``check_values`` asks (never under torch.compile)."""
        if torch.compiler.is_compiling() or self.check_values is False:
            return
        on_cpu = t.device.type == "cpu" and (rewards is None or rewards.device.type == "cpu")
        if not (on_cpu or self.check_values):
            return  # no host sync per forward on an accelerator
        bad_t = (t < 0) | (t > 1) | torch.isnan(t)
        checks = [bad_t.any()]
        if rewards is not None and rewards.numel():
            bad_r = (rewards < 0) | (rewards > 1) | torch.isnan(rewards)
            if reward_mask is not None:
                bad_r = bad_r & reward_mask
            checks.append(bad_r.any())
        if torch.stack(checks).any():
            if bool(checks[0]):
                raise ValueError(f"t must lie in [0, 1] (noise level), got values {t[bad_t].tolist()[:8]}")
            raise ValueError(
                f"rewards must lie in [0, 1] where reward_mask is True (for {self.reward_names}), "
                f"got {rewards[bad_r].tolist()[:8]}"
            )

    def encode_condition(
        self,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rewards: torch.Tensor | None = None,
        reward_mask: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """The condition: ``cond`` [rewards (R), registers, null text (1), text (L)], its key mask ``cond_mask``
        [B, S], and ``pooled`` [B, width] (the pooled-text term of the modulation, None without ``pooled_text``).
        With ``reward_path="time"`` the rewards are not in ``cond``: their embedding is added to ``pooled``.

        It does not depend on x or t, so a sampler can compute it once per prompt and call
        ``velocity(x, t, **condition)``.
        The null-text slot is attended exactly when the sample has no usable text token (dropped, or every
        text token masked), so every sample attends to at least one key and no row of attention is empty.
        """
        b = text.shape[0]
        dtype = self.text_proj.weight.dtype
        keep = text_mask if drop_text is None else text_mask & ~drop_text[:, None]
        # masked tokens are zeroed, so whatever padding holds (even NaN) is never read
        normed = self.text_norm(text.to(dtype).masked_fill(~keep[..., None], 0))
        txt = self.text_proj(normed)
        if self.frozen_text_gate is not None:
            txt = txt + self.frozen_text_gate * (normed @ self.frozen_text_map.to(normed.dtype))
        pooled = None
        if self.pooled_text_proj is not None:  # mean of the kept tokens; zeros when none is kept (dropped text)
            kept = keep.to(normed.dtype)[..., None]
            pooled = self.pooled_text_proj((normed * kept).sum(1) / kept.sum(1).clamp(min=1))
        tokens, masks = [], []
        if self.reward_embedder is not None:
            if rewards is None:
                rewards = torch.zeros(b, self.num_rewards, device=text.device)
                reward_mask = torch.zeros(b, self.num_rewards, dtype=torch.bool, device=text.device)
            elif reward_mask is None:
                reward_mask = torch.ones(rewards.shape, dtype=torch.bool, device=rewards.device)
            embedded = self.reward_embedder(rewards, reward_mask)
            if self.reward_time_proj is not None:
                vec = self.reward_time_proj(embedded.sum(1))
                pooled = vec if pooled is None else pooled + vec.to(pooled.dtype)
            else:
                tokens.append(embedded)
                masks.append(torch.ones(b, self.num_rewards, dtype=torch.bool, device=text.device))
        if self.registers is not None:
            tokens.append(self.registers.expand(b, -1, -1))
            masks.append(torch.ones(b, self.registers.shape[1], dtype=torch.bool, device=text.device))
        tokens += [self.null_text.expand(b, -1, -1), txt]
        masks += [~keep.any(dim=1, keepdim=True), keep]
        cond = torch.cat([tok.to(txt.dtype) for tok in tokens], dim=1)
        mask = torch.cat(masks, dim=1)
        if len(self.cond_blocks):
            kpm = key_padding_mask(mask)
            for block in self.cond_blocks:
                if torch.is_grad_enabled() and self.gradient_checkpointing:
                    cond = self._gradient_checkpointing_func(block, cond, kpm)
                else:
                    cond = block(cond, kpm)
        return {"cond": cond, "cond_mask": mask, "pooled": pooled}

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        rewards: torch.Tensor | None = None,
        reward_mask: torch.Tensor | None = None,
        drop_text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity eps - x_0 at noise level t (shaped like x): the inputs checked, the condition encoded, the
        host's ``velocity`` on it (docs/contracts.md, "Model call")."""
        self._check_inputs(x, t, text, text_mask, rewards, reward_mask, drop_text)
        if self.num_rewards == 0:
            rewards = reward_mask = None
        self._check_values(t, rewards, reward_mask)
        return self.velocity(x, t, **self.encode_condition(text, text_mask, rewards, reward_mask, drop_text))


class MiroTransformer(ConditionSetMixin, ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Reward- and text-conditioned flow-matching transformer for pixels or latents.

    Args (all saved to config.json):
        in_channels / out_channels: channels of x (3 for pixels, the autoencoder's latent channels otherwise);
            out_channels defaults to in_channels.
        sample_size: the nominal spatial size of x (any multiple of ``patch_size`` works at call time).
        patch_size, width, depth, num_heads, mlp_ratio, mlp_type ("gelu" | "swiglu"), qk_norm: the backbone.
        text_dim: width of the text encoder's token embeddings.
        reward_names: the rewards, in the column order of ``rewards``; empty = the no-reward baseline.
        reward_fourier_dim, reward_fourier_scale: Fourier features of a reward value (std of the frequencies).
        num_registers: learned tokens appended to the condition set.
        cond_refiner_depth: self-attention layers over the condition set before the backbone (MIRO: 2).
        time_frequency_dim: sinusoidal features of t * 1000 fed to the time MLP.
        pooled_text: also add an MLP of the mean of the prompt's token embeddings to the time embedding that
            drives every block's adaLN modulation (SD3's pooled-text path).  A global summary of the prompt
            reaches every block directly, which small models learn much sooner than cross-attention.
        conv_channels: 0 = a plain DiT.  C > 0 = a convolutional stem and head at full resolution around the
            transformer (U-ViT / HDiT style): x -> 3x3 conv -> ConvBlock (C channels) -> patches -> blocks ->
            C channels -> ConvBlock over [output, stem features] (a long skip) -> 3x3 conv.  At 32 px and
            patch 4 the tiny model then draws smooth objects in its prompt's colour at the demo's compute,
            where the plain head draws patch-seamed fragments that ignore the prompt (docs/text_conditioning.md).
        conv_levels: with the conv stem, its resolutions (a U-shape).  Level i works at 1/2^i of the input
            size with C * 2^i channels: a stride-2 3x3 conv and a ConvBlock go down a level, and on the way back
            a ConvBlock over [the level's output, its own stem features] and a nearest upsample + 3x3 conv go
            up.  Patches are taken from the deepest level, so the transformer sees (H / (patch_size *
            2^(L-1)))^2 tokens: ``conv_levels=2, patch_size=2`` has the tokens of ``patch_size=4`` with a conv
            level at half resolution in between (simple diffusion's U-ViT).  1 = the single full-resolution
            level above.
        conv_pooled_text: the conv blocks' additive condition is the time embedding plus the pooled prompt
            (what modulates the transformer blocks) rather than the time alone, so the full-resolution
            features know the prompt's colour and class before and after the transformer.  Needs the conv
            stem and ``pooled_text``.
        conv_scale_shift: the conv blocks apply their condition as ADM's adaptive GroupNorm (a per-channel
            scale and shift after the norm) instead of an offset before it (``ConvBlock``).  Needs the conv stem.
        conv_pixel_unshuffle: s > 1 folds each s x s block of input pixels into channels before the conv stem
            (``F.pixel_unshuffle``: C -> C * s^2 channels at 1/s of the size) and unfolds the head's output
            (``F.pixel_shuffle``), so every conv level works at 1/s of the resolution.  A 3x3 conv costs the
            same per location whatever its input, so s = 2 buys about twice the conv channels for the same
            time (simple diffusion's shortcut for pixel space; at 32 px it trains worse than the full-resolution
            stem: docs/text_conditioning.md, section 12).
            Needs the conv stem.
        conv_cross_attention: a cross-attention from the deepest conv level's locations to the condition set (the
            reward tokens and the prompt's tokens), after the last down block and before the first up block
            (``layers.ConvCrossAttention``), so the conv path reads the prompt's words and not only its pooled
            vector.  Needs the conv stem.
        token_mixer: how the image tokens mix in every block: "attention" (self-attention, the default),
            "ttt_linear" / "ttt_mlp" (a non-causal TTT layer in its place, ``miro.models.ttt``), or
            "attention+ttt_linear" / "attention+ttt_mlp" (self-attention, then a pre-LN TTT layer behind its
            tanh gates).
        ttt_mini_batch: the TTT layers' mini-batch size b (a shorter last mini-batch when b does not divide
            the token count).
        ttt_scan_orders: the TTT layers' token orders, "+"-joined, each with its own tanh gate:
            "raster", "raster_rev", "col", "col_rev" (default "raster+raster_rev").
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["MiroBlock", "ConditionBlock"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        sample_size: int = 32,
        patch_size: int = 2,
        width: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        mlp_type: str = "gelu",
        qk_norm: bool = True,
        text_dim: int = 384,
        reward_names: Sequence[str] = (),
        reward_fourier_dim: int = 256,
        reward_fourier_scale: float = 1.0,
        num_registers: int = 0,
        cond_refiner_depth: int = 0,
        time_frequency_dim: int = 256,
        pooled_text: bool = False,
        conv_channels: int = 0,
        conv_levels: int = 1,
        conv_pooled_text: bool = False,
        conv_scale_shift: bool = False,
        conv_pixel_unshuffle: int = 1,
        conv_cross_attention: bool = False,
        token_mixer: str = "attention",
        ttt_mini_batch: int = 16,
        ttt_scan_orders: str = "raster+raster_rev",
    ):
        super().__init__()
        reward_names = list(reward_names)
        check_arguments({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        self.reward_names = reward_names
        self.out_channels = out_channels or in_channels
        self.gradient_checkpointing = False
        self._pos_cache: dict[tuple, torch.Tensor] = {}

        # with the conv stem, tokens are patches of its deepest level's features and the blocks write them back
        levels = [conv_channels * 2**i for i in range(conv_levels)] if conv_channels else []
        self.token_channels = levels[-1] if levels else in_channels
        self.patch_embed = nn.Linear(self.token_channels * patch_size**2, width)
        self.time_embedder = TimestepEmbedder(width, time_frequency_dim)
        self._build_condition_set(width, text_dim, reward_names, reward_fourier_dim, reward_fourier_scale, num_registers,
                                  cond_refiner_depth, num_heads, mlp_ratio, mlp_type, qk_norm, pooled_text)
        self.blocks = nn.ModuleList(
            MiroBlock(
                width, num_heads, mlp_ratio, mlp_type, qk_norm, token_mixer, ttt_mini_batch, ttt_scan_orders
            )
            for _ in range(depth)
        )
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Linear(width, 2 * width)
        self.proj_out = nn.Linear(width, patch_size**2 * (levels[-1] if levels else self.out_channels))
        if conv_channels:
            fold = conv_pixel_unshuffle**2
            self.conv_in = nn.Conv2d(in_channels * fold, conv_channels, 3, padding=1)
            block = functools.partial(ConvBlock, emb_dim=width, scale_shift=conv_scale_shift)
            self.conv_stem = block(conv_channels, conv_channels)
            self.conv_head = block(2 * conv_channels, conv_channels)
            self.conv_norm_out = nn.GroupNorm(8, conv_channels, eps=1e-6)
            self.conv_out = nn.Conv2d(conv_channels, self.out_channels * fold, 3, padding=1)
            pairs = list(zip(levels[:-1], levels[1:]))  # (level i, level i + 1) channels
            self.conv_down = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in pairs)
            self.conv_down_blocks = nn.ModuleList(block(b, b) for _, b in pairs)
            self.conv_up_blocks = nn.ModuleList(block(2 * b, b) for _, b in pairs)
            self.conv_up = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in pairs)
            if conv_cross_attention:  # at the deepest conv level, on the way down and on the way up
                self.conv_down_attn = ConvCrossAttention(levels[-1], width)
                self.conv_up_attn = ConvCrossAttention(levels[-1], width)
        self.initialize_weights()

    # ------------------------------------------------------------------ init
    def initialize_weights(self) -> None:
        """DiT's init: xavier Linear layers, N(0, 0.02) time MLP, zero adaLN modulations and output layer
        (with the conv head: zero last conv of each ConvBlock and zero output conv; convs otherwise keep torch's
        default init; TTT layers: ``TTTMixer.reset_parameters``)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight  # like DiT's conv patch embedding: xavier over the flattened kernel
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for layer in (self.time_embedder.mlp[0], self.time_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        nn.init.trunc_normal_(self.null_text, std=0.02)
        if self.registers is not None:
            nn.init.trunc_normal_(self.registers, std=0.02)
        if self.reward_embedder is not None:
            self.reward_embedder.reset_parameters()
        for block in self.blocks:
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
            if block.ttt is not None:  # its own init (testtime.md 4.3), over the xavier pass above
                block.ttt.reset_parameters()
        if self.pooled_text_proj is not None:  # starts as "no pooled text": the time embedding alone
            nn.init.zeros_(self.pooled_text_proj[2].weight)
        for layer in (self.modulation_out, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.config.conv_channels:
            for block in (self.conv_stem, self.conv_head, *self.conv_down_blocks, *self.conv_up_blocks):
                block.reset_parameters()
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)
            if self.config.get("conv_cross_attention"):
                self.conv_down_attn.reset_parameters()
                self.conv_up_attn.reset_parameters()

    # ------------------------------------------------------------------ helpers
    @property
    def spatial_stride(self) -> int:
        """Input pixels per token side (input sizes must be multiples of it)."""
        return spatial_stride(self.config)

    def _stride_text(self) -> str:
        stride = self.spatial_stride
        return stride_factors(self.config) + (f" = {stride}" if stride != self.config.patch_size else "")

    def _positions(self, grid_h: int, grid_w: int, device, dtype) -> torch.Tensor:
        if torch.compiler.is_compiling():
            # inside a compiled graph the table is a constant of the graph: caching it on the module would keep
            # a graph output alive across calls, which a CUDA-graph replay then overwrites (reduce-overhead)
            return sincos_2d(grid_h, grid_w, self.config.width, device=device).to(dtype)
        key = (grid_h, grid_w, str(device))
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(grid_h, grid_w, self.config.width, device=device)
        return self._pos_cache[key].to(dtype)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, (H/p)(W/p), C p p] (the same order as a stride-p conv's kernel)."""
        b, c, h, w = x.shape
        p = self.config.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def unpatchify(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b = tokens.shape[0]
        p, c = self.config.patch_size, (self.token_channels if self.config.conv_channels else self.out_channels)
        x = tokens.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, h, w)

    # ------------------------------------------------------------------ forward
    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The backbone on a precomputed condition (see ``encode_condition``)."""
        _, _, h, w = x.shape
        p = self.config.patch_size
        dtype = self.patch_embed.weight.dtype
        t_emb = self.time_embedder(t)
        c = t_emb
        if pooled is not None:
            c = c + pooled.to(c.dtype)
        c_act = F.silu(c)
        # the conv blocks' condition: the time, and with conv_pooled_text the pooled prompt too
        conv_emb = c_act if self.config.conv_pooled_text else F.silu(t_emb)
        features = []  # the conv levels' features, full resolution first
        unshuffle = self.config.conv_pixel_unshuffle if self.config.conv_channels else 1
        kpm = key_padding_mask(cond_mask)
        conv_attn = bool(self.config.get("conv_cross_attention"))
        if self.config.conv_channels:
            folded = F.pixel_unshuffle(x.to(dtype), unshuffle) if unshuffle > 1 else x.to(dtype)
            features.append(self.conv_stem(self.conv_in(folded), conv_emb))
            for down, block in zip(self.conv_down, self.conv_down_blocks):
                features.append(block(down(features[-1]), conv_emb))
            if conv_attn:
                features[-1] = self.conv_down_attn(features[-1], cond, kpm)
        inner = features[-1] if features else x.to(dtype)
        gh, gw = inner.shape[2] // p, inner.shape[3] // p
        tokens = self.patch_embed(self.patchify(inner))
        tokens = tokens + self._positions(gh, gw, x.device, tokens.dtype)
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(block, tokens, c_act, cond, kpm, (gh, gw))
            else:
                tokens = block(tokens, c_act, cond, kpm, (gh, gw))
        shift, scale = self.modulation_out(c_act).unsqueeze(1).chunk(2, dim=-1)
        out = self.unpatchify(self.proj_out(modulate(self.norm_out(tokens), shift, scale)), *inner.shape[2:])
        if features:
            if conv_attn:
                out = self.conv_up_attn(out, cond, kpm)
            for i in reversed(range(len(self.conv_up))):  # deepest level first, each with its own skip
                out = self.conv_up_blocks[i](torch.cat([out, features[i + 1]], dim=1), conv_emb)
                out = self.conv_up[i](F.interpolate(out, scale_factor=2, mode="nearest"))
            out = self.conv_head(torch.cat([out, features[0]], dim=1), conv_emb)
            out = self.conv_out(F.silu(self.conv_norm_out(out)))
            if unshuffle > 1:
                out = F.pixel_shuffle(out, unshuffle)
        return out.to(x.dtype)
