"""Typed config schemas (miro/conf/model, miro/conf/text_encoder, miro/conf/autoencoder) and the builders that use them.

A training or sampling schema embeds these as fields (``model: ModelConfig``...); ``to_typed`` then runs
the checks below.  Sizes live in the yaml presets (miro/conf/model/{tiny,small,base,miro_xl}.yaml).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from miro.models.autoencoders import KINDS as AE_KINDS
from miro.models.autoencoders import NORMALIZATIONS, Autoencoder, IdentityAutoencoder, KLAutoencoder
from miro.models.rin_transformer import RIN_ARGUMENTS, MiroRINTransformer, check_rin_arguments
from miro.models.text_encoders import KINDS as TE_KINDS
from miro.models.text_encoders import LAYERS, TextEncoder
from miro.models.transformer import MiroTransformer, check_arguments, spatial_stride, stride_factors
from miro.models.unet import UNET_ARGUMENTS, MiroUNet, check_unet_arguments
from miro.utils.config import ConfigError, require, require_choice
from miro.utils.device import DTYPES

_MODEL_DEFAULTS = {k: p.default for k, p in inspect.signature(MiroTransformer.__init__).parameters.items() if k != "self"}
DERIVED = ("in_channels", "sample_size", "text_dim")  # null in a config: taken from the encoders / image size


_RIN_DEFAULTS = {k: p.default for k, p in inspect.signature(MiroRINTransformer.__init__).parameters.items()
                 if k in RIN_ARGUMENTS}
_UNET_DEFAULTS = {k: p.default for k, p in inspect.signature(MiroUNet.__init__).parameters.items()
                  if k in UNET_ARGUMENTS}
BACKBONES = ("dit", "rin", "unet")


def _default(name: str):
    """MiroTransformer's own default for ``name`` (the class owns its defaults; the schema repeats none)."""
    return _MODEL_DEFAULTS[name]


def _rin_default(name: str):
    return _RIN_DEFAULTS[name]


@dataclass
class RINConfig:
    """The RIN backbone's sizes (``model.backbone: rin``; ``MiroRINTransformer``, the authors' network), with the
    class's defaults; checked by its own ``check_rin_arguments``.  Unused by the DiT."""

    patch_size: int = _rin_default("patch_size")
    data_dim: int = _rin_default("data_dim")
    num_latents: int = _rin_default("num_latents")
    latents_dim: int = _rin_default("latents_dim")
    num_blocks: int = _rin_default("num_blocks")
    num_processing_layers: int = _rin_default("num_processing_layers")
    read_write_heads: int = _rin_default("read_write_heads")
    compute_heads: int = _rin_default("compute_heads")
    mixer_heads: int = _rin_default("mixer_heads")
    mixer_depth: int = _rin_default("mixer_depth")
    num_text_registers: int = _rin_default("num_text_registers")
    latent_mlp_multiplier: int = _rin_default("latent_mlp_multiplier")
    data_mlp_multiplier: int = _rin_default("data_mlp_multiplier")
    use_cond_rin_block: bool = _rin_default("use_cond_rin_block")
    use_self_conditioning: bool = _rin_default("use_self_conditioning")
    sigma_data: float = _rin_default("sigma_data")
    normalization: str | None = _rin_default("normalization")

    def __post_init__(self):
        check_rin_arguments(asdict(self), prefix="model.rin.")


def _unet_default(name: str):
    return _UNET_DEFAULTS[name]


@dataclass
class UNetConfig:
    """The U-Net backbone's sizes (``model.backbone: unet``; ``MiroUNet``, diffusers' ``UNet2DConditionModel``
    reading the condition set), with the class's defaults; checked by its own ``check_unet_arguments``.  Unused
    by the other backbones."""

    block_out_channels: list[int] = field(default_factory=lambda: list(_unet_default("block_out_channels")))
    layers_per_block: int = _unet_default("layers_per_block")
    attention_head_dim: int = _unet_default("attention_head_dim")
    norm_num_groups: int = _unet_default("norm_num_groups")
    cond_width: int = _unet_default("cond_width")
    cond_heads: int = _unet_default("cond_heads")
    cond_refiner_depth: int = _unet_default("cond_refiner_depth")
    reward_fourier_dim: int = _unet_default("reward_fourier_dim")
    reward_fourier_scale: float = _unet_default("reward_fourier_scale")
    num_registers: int = _unet_default("num_registers")
    pooled_text: bool = _unet_default("pooled_text")
    reward_path: str = _unet_default("reward_path")
    frozen_text_path: bool = _unet_default("frozen_text_path")

    def __post_init__(self):
        check_unet_arguments(asdict(self), prefix="model.unet.")


@dataclass
class ModelConfig:
    """MiroTransformer hyper-parameters, with the class's defaults.  ``in_channels``, ``sample_size`` and
    ``text_dim`` left at None are taken from the autoencoder, the image size and the text encoder when the
    model is built.  The values are checked by ``MiroTransformer``'s own ``check_arguments``; this schema only
    adds what belongs to a config: the derived (null) sizes and ``gradient_checkpointing``.  The rewards are not
    part of a model preset: they belong to the run (``TrainConfig.rewards``) and reach ``build_model``."""

    patch_size: int = _default("patch_size")
    width: int = _default("width")
    depth: int = _default("depth")
    num_heads: int = _default("num_heads")
    mlp_ratio: float = _default("mlp_ratio")
    mlp_type: str = _default("mlp_type")
    qk_norm: bool = _default("qk_norm")
    reward_fourier_dim: int = _default("reward_fourier_dim")
    reward_fourier_scale: float = _default("reward_fourier_scale")
    num_registers: int = _default("num_registers")
    cond_refiner_depth: int = _default("cond_refiner_depth")
    time_frequency_dim: int = _default("time_frequency_dim")
    pooled_text: bool = _default("pooled_text")
    conv_channels: int = _default("conv_channels")
    conv_levels: int = _default("conv_levels")
    conv_pooled_text: bool = _default("conv_pooled_text")
    conv_scale_shift: bool = _default("conv_scale_shift")
    conv_pixel_unshuffle: int = _default("conv_pixel_unshuffle")
    conv_cross_attention: bool = _default("conv_cross_attention")
    # attention | ttt_linear | ttt_mlp | attention+ttt_linear | attention+ttt_mlp
    token_mixer: str = _default("token_mixer")
    ttt_mini_batch: int = _default("ttt_mini_batch")
    ttt_scan_orders: str = _default("ttt_scan_orders")  # "+"-joined: raster, raster_rev, col, col_rev
    gradient_checkpointing: bool = False
    in_channels: int | None = None
    sample_size: int | None = None
    text_dim: int | None = None
    # dit: MiroTransformer (the fields above); rin: the authors' RIN, sized by ``rin`` (MiroRINTransformer);
    # unet: diffusers' SD-style U-Net on the same condition set, sized by ``unet`` (MiroUNet)
    backbone: str = "dit"
    rin: RINConfig = field(default_factory=RINConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)

    def __post_init__(self):
        require_choice("model.backbone", self.backbone, BACKBONES)
        args = {k: v for k, v in asdict(self).items()
                if k not in ("gradient_checkpointing", "backbone", "rin", "unet") and not (k in DERIVED and v is None)}
        check_arguments(args, prefix="model.")
        if self.backbone == "rin":
            require(not self.gradient_checkpointing, "model.gradient_checkpointing", self.gradient_checkpointing,
                    "is not supported by the rin backbone")

    @property
    def spatial_stride(self) -> int:
        """Input pixels per token side of the chosen backbone (the resolution must be a multiple of it)."""
        if self.backbone == "unet":
            return 2 ** (len(self.unet.block_out_channels) - 1)
        return self.rin.patch_size if self.backbone == "rin" else spatial_stride(asdict(self))

    def stride_factors(self) -> str:
        """The keys whose product is ``spatial_stride``, for error messages."""
        if self.backbone == "unet":
            return "2^(len(model.unet.block_out_channels) - 1)"
        return "model.rin.patch_size" if self.backbone == "rin" else stride_factors(asdict(self), prefix="model.",
                                                                                    values=False)


@dataclass
class TextEncoderConfig:
    kind: str = "minilm"
    path: str | None = None
    max_length: int = 32
    dtype: str = "float32"
    output_dtype: str = "float32"
    layer: str = "last"
    subfolder: str | None = None
    tokenizer_subfolder: str | None = None
    batch_size: int = 64

    def __post_init__(self):
        require_choice("text_encoder.kind", self.kind, TE_KINDS)
        require(self.kind == "minilm" or bool(self.path), "text_encoder.path", self.path,
                f"is required for kind={self.kind!r}: a local folder or a Hugging Face repo id")
        require(self.max_length >= 1, "text_encoder.max_length", self.max_length, "must be >= 1")
        require_choice("text_encoder.dtype", self.dtype, tuple(DTYPES))
        require_choice("text_encoder.output_dtype", self.output_dtype, tuple(DTYPES))
        require_choice("text_encoder.layer", self.layer, LAYERS)
        require(self.batch_size >= 1, "text_encoder.batch_size", self.batch_size, "must be >= 1")


@dataclass
class AutoencoderConfig:
    kind: str = "identity"
    path: str | None = None
    subfolder: str | None = None
    dtype: str = "float32"
    normalization: str = "auto"
    scaling_factor: float | None = None
    shift_factor: float | None = None
    channel_mean: list[float] | None = None
    channel_std: list[float] | None = None
    target_std: float = 0.5

    def __post_init__(self):
        require_choice("autoencoder.kind", self.kind, AE_KINDS)
        if self.kind == "identity":
            return
        require(bool(self.path), "autoencoder.path", self.path, "is required for kind='kl'")
        require_choice("autoencoder.dtype", self.dtype, tuple(DTYPES))
        require_choice("autoencoder.normalization", self.normalization, NORMALIZATIONS)
        require(self.scaling_factor is None or self.scaling_factor > 0, "autoencoder.scaling_factor",
                self.scaling_factor, "must be > 0 or null (read from the VAE config)")
        if self.normalization == "per_channel":
            ok = self.channel_mean is not None and self.channel_std is not None and len(self.channel_mean) == len(self.channel_std)
            require(ok, "autoencoder.channel_mean/channel_std", (self.channel_mean, self.channel_std),
                    "per_channel normalisation needs both lists, one value per latent channel")
            require(min(self.channel_std) > 0, "autoencoder.channel_std", self.channel_std, "must all be > 0")
            require(self.target_std > 0, "autoencoder.target_std", self.target_std, "must be > 0")


def load_preset(name: str, overrides: Sequence[str] = ()) -> ModelConfig:
    """The model preset ``miro/conf/model/<name>.yaml`` as a typed ``ModelConfig``, outside hydra: its defaults
    list (other presets of the group, then ``_self_``) merged as hydra would, then ``key=value`` overrides.
    For scripts and tests that build a model without composing the whole training config."""
    from omegaconf import OmegaConf

    from miro.utils.config import CONFIG_DIR, to_typed

    def raw(preset: str):
        path = CONFIG_DIR / "model" / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ConfigError(f"model preset {preset!r}: no {path} (known presets: {known})")
        cfg = OmegaConf.load(path)
        bases = [d for d in cfg.pop("defaults", []) if d != "_self_"]
        return OmegaConf.merge(*(raw(b) for b in bases), cfg)

    return to_typed(OmegaConf.merge(raw(name), OmegaConf.from_dotlist(list(overrides))), ModelConfig)


def build_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    return TextEncoder(**asdict(cfg))


def build_autoencoder(cfg: AutoencoderConfig) -> Autoencoder:
    if cfg.kind == "identity":
        return IdentityAutoencoder()
    kwargs = asdict(cfg)
    kwargs.pop("kind")
    return KLAutoencoder(**kwargs)


def build_model(
    cfg: ModelConfig, *, reward_names: Sequence[str] = (), text_dim: int | None = None,
    in_channels: int | None = None, sample_size: int | None = None,
) -> MiroTransformer | MiroRINTransformer | MiroUNet:
    """A fresh MiroTransformer (or ``MiroRINTransformer`` with ``backbone: rin``, ``MiroUNet`` with ``unet``) conditioned on ``reward_names`` (in that order; () = the no-reward baseline);
    values not set in ``cfg`` come from the text encoder / autoencoder / image size."""
    derived = {"text_dim": text_dim, "in_channels": in_channels, "sample_size": sample_size}
    resolved = {}
    for key, value in derived.items():
        given = getattr(cfg, key)
        if given is not None and value is not None and given != value:
            raise ConfigError(f"model.{key}={given!r} contradicts the {value!r} implied by the text encoder / autoencoder")
        resolved[key] = given if given is not None else value
        if resolved[key] is None:
            raise ConfigError(f"model.{key} is null and was not supplied by the caller")
    if cfg.backbone == "rin":
        return MiroRINTransformer(reward_names=list(reward_names), **resolved, **asdict(cfg.rin))
    if cfg.backbone == "unet":
        model = MiroUNet(reward_names=list(reward_names), **resolved, **asdict(cfg.unet))
        if cfg.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model
    kwargs = asdict(cfg)
    checkpointing = kwargs.pop("gradient_checkpointing")
    kwargs.pop("backbone"), kwargs.pop("rin"), kwargs.pop("unet")
    kwargs.update(resolved)
    model = MiroTransformer(reward_names=list(reward_names), **kwargs)
    if checkpointing:
        model.enable_gradient_checkpointing()
    return model
