"""MiroUNet: diffusers' SD-style U-Net as the backbone, reading the same condition set as MiroTransformer.

The call contract is the project's (docs/contracts.md, "Model call")::

    velocity = model(x, t, text, text_mask, rewards=None, reward_mask=None, drop_text=None)

Why a U-Net: on the clean one-object shapes world, from the same batches, tokens and loss, diffusers'
``UNet2DConditionModel`` draws the prompt's class in 72-74% of its held-out images after 64,000 images seen, where
the DiT with a conv U-shape (``tiny_unet``) never passes 51% (docs/text_conditioning.md, section 22).  The network
is diffusers' own (ResNet blocks, self- and cross-attention in ``Transformer2DModel``s); this class adds the
condition: the reward tokens, the registers, the null-text slot and the projected text tokens of
``ConditionSetMixin`` (refined by ``cond_refiner_depth`` self-attention blocks) are the U-Net's
``encoder_hidden_states``, and the pooled prompt enters its time embedding through the U-Net's projection class
embedding (SD3's pooled path, the role of ``pooled_text`` in the DiT).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from torch import nn

from miro.models.transformer import REWARD_PATHS, ConditionSetMixin

#: The keyword arguments that size the U-Net (``model.unet`` in a config).
UNET_ARGUMENTS = ("block_out_channels", "layers_per_block", "attention_head_dim", "norm_num_groups", "cond_width",
                  "cond_heads", "cond_refiner_depth", "reward_fourier_dim", "reward_fourier_scale", "num_registers",
                  "pooled_text", "reward_path", "frozen_text_path")  # fmt: skip


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_unet_arguments(args: Mapping[str, Any], prefix: str = "") -> None:
    """Reject bad sizes with the key, the value and what is allowed (a ``ValueError``, or ``ConfigError`` through
    the config schema)."""
    from miro.utils.config import require

    def check(key: str, ok, allowed: str) -> None:
        if key in args:
            require(ok(args[key]), prefix + key, args[key], allowed)

    channels = args.get("block_out_channels")
    check("block_out_channels",
          lambda v: isinstance(v, Sequence) and not isinstance(v, str) and len(v) >= 2 and all(_is_int(c) and c > 0 for c in v),
          "must be two or more positive channel counts, one per resolution (the first level has no attention)")  # fmt: skip
    valid = isinstance(channels, Sequence) and not isinstance(channels, str) and all(_is_int(c) and c > 0 for c in channels)
    check("norm_num_groups", lambda v: _is_int(v) and v >= 1 and (not valid or all(c % v == 0 for c in channels)),
          f"must be an integer >= 1 dividing every entry of block_out_channels={list(channels or [])}")
    check("attention_head_dim", lambda v: _is_int(v) and v >= 1 and (not valid or all(c % v == 0 for c in channels[1:])),
          f"must be an integer >= 1 dividing the attention levels' channels {list(channels or [])[1:]}")
    for key in ("layers_per_block", "cond_width", "cond_heads", "reward_fourier_dim"):
        check(key, lambda v: _is_int(v) and v >= 1, "must be an integer >= 1")
    for key in ("cond_refiner_depth", "num_registers"):
        check(key, lambda v: _is_int(v) and v >= 0, "must be an integer >= 0")
    heads = args.get("cond_heads")
    check("cond_width", lambda v: not _is_int(heads) or heads < 1 or v % heads == 0, f"must be divisible by cond_heads={heads}")
    check("reward_fourier_dim", lambda v: v % 2 == 0, "must be even")
    check("reward_fourier_scale", lambda v: isinstance(v, numbers.Real) and v > 0, "must be > 0")
    for key in ("pooled_text", "frozen_text_path"):
        check(key, lambda v: isinstance(v, bool), "must be true or false")
    check("reward_path", lambda v: v in REWARD_PATHS, f"must be one of {list(REWARD_PATHS)}")


class MiroUNet(ConditionSetMixin, ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Reward- and text-conditioned flow-matching U-Net (pixels or latents).

    Args (all saved to config.json):
        in_channels / out_channels / sample_size / text_dim / reward_names: as ``MiroTransformer``.
        block_out_channels: channels per resolution, full resolution first; each level halves the size.  The
            first level has ResNet blocks only; every deeper level adds self- and cross-attention.
        layers_per_block: ResNet blocks per level on the way down (one more on the way up, diffusers' layout).
        attention_head_dim: channels per attention head.
        norm_num_groups: GroupNorm groups (8 fits 32-channel levels).
        cond_width, cond_heads, cond_refiner_depth, reward_fourier_dim, reward_fourier_scale, num_registers:
            the condition set (``ConditionSetMixin``): its token width, the refiner's heads and depth, the reward
            embedding, learned register tokens.
        pooled_text: add the pooled prompt to the time embedding (diffusers' "projection" class embedding).
        reward_path: "tokens" (MIRO's: one cross-attended token per reward) or "time" (the rewards' embedding
            added to the time embedding through the same projection, the cross-attention left to the text: global
            image statistics as a modulation of every ResNet block, the way SDXL's refiner reads its aesthetic
            score; docs/text_conditioning.md, section 25).
        frozen_text_path: add a fixed random projection of the text tokens through a zero-initialised gate
            (``ConditionSetMixin._build_condition_set``; docs/text_conditioning.md, section 37).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        sample_size: int = 32,
        text_dim: int = 384,
        reward_names: Sequence[str] = (),
        block_out_channels: Sequence[int] = (32, 64, 128),
        layers_per_block: int = 1,
        attention_head_dim: int = 8,
        norm_num_groups: int = 8,
        cond_width: int = 128,
        cond_heads: int = 4,
        cond_refiner_depth: int = 1,
        reward_fourier_dim: int = 64,
        reward_fourier_scale: float = 1.0,
        num_registers: int = 0,
        pooled_text: bool = True,
        reward_path: str = "tokens",
        frozen_text_path: bool = False,
    ):
        super().__init__()
        reward_names = list(reward_names)
        check_unet_arguments({k: v for k, v in locals().items() if k in UNET_ARGUMENTS})
        stride = 2 ** (len(block_out_channels) - 1)
        if not (_is_int(sample_size) and sample_size >= stride and sample_size % stride == 0):
            raise ValueError(f"sample_size={sample_size!r}: must be a multiple of 2^(levels - 1) = {stride}")
        self.reward_names = reward_names
        self.out_channels = out_channels or in_channels
        self.gradient_checkpointing = False
        self._build_condition_set(cond_width, text_dim, reward_names, reward_fourier_dim, reward_fourier_scale,
                                  num_registers, cond_refiner_depth, cond_heads, 4.0, "gelu", False, pooled_text,
                                  reward_path, frozen_text_path)
        class_input = pooled_text or self.reward_time_proj is not None  # something feeds the class embedding
        levels = len(block_out_channels)
        self.unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=self.out_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
            layers_per_block=layers_per_block, cross_attention_dim=cond_width, attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            class_embed_type="projection" if class_input else None,
            projection_class_embeddings_input_dim=cond_width if class_input else None,
        )  # fmt: skip
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """diffusers' own init for the U-Net; for the condition set the DiT's (xavier Linear layers, small null
        text and registers, the reward embedding's own reset, the pooled path starting at zero)."""
        for module in [self.text_proj, *self.cond_blocks.modules()]:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.null_text, std=0.02)
        if self.registers is not None:
            nn.init.trunc_normal_(self.registers, std=0.02)
        if self.reward_embedder is not None:
            self.reward_embedder.reset_parameters()
        if self.pooled_text_proj is not None:
            nn.init.zeros_(self.pooled_text_proj[2].weight)
            nn.init.zeros_(self.pooled_text_proj[2].bias)
        if self.reward_time_proj is not None:  # starts as "no reward", as the pooled path starts as "no text"
            nn.init.zeros_(self.reward_time_proj.weight)
            nn.init.zeros_(self.reward_time_proj.bias)

    @property
    def spatial_stride(self) -> int:
        """Input pixels per deepest-level location (input sizes must be multiples of it)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def _stride_text(self) -> str:
        return f"2^(len(block_out_channels) - 1) = {self.spatial_stride}"

    def training_flops(self, height: int, width: int, text_len: int) -> int:
        """Forward + backward FLOPs per sample of one training step (``miro.models.flops.counted_training_flops``:
        a counted one-sample forward, times 3), for the trainer's MFU."""
        from miro.models.flops import counted_training_flops

        return counted_training_flops(self, height, width, text_len)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor,
                 pooled: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """The U-Net on a precomputed condition (``encode_condition``); t in [0, 1] enters as t * 1000, the range
        its sinusoidal time embedding was made for."""
        dtype = self.text_proj.weight.dtype
        out = self.unet(x.to(dtype), t * 1000, encoder_hidden_states=cond.to(dtype), encoder_attention_mask=cond_mask,
                        class_labels=None if pooled is None else pooled.to(dtype)).sample  # fmt: skip
        return out.to(x.dtype)
