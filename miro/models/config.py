"""Typed config schemas (miro/conf/model, miro/conf/text_encoder, miro/conf/autoencoder) and the builders that use them.

A training or sampling schema embeds these as fields (``model: ModelConfig``...); ``to_typed`` then runs
the checks below.  Sizes live in the yaml presets (miro/conf/model/{tiny,small,base,miro_xl}.yaml).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from miro.models.autoencoders import KINDS as AE_KINDS
from miro.models.autoencoders import NORMALIZATIONS, Autoencoder, IdentityAutoencoder, KLAutoencoder
from miro.models.layers import MLP_TYPES
from miro.models.text_encoders import KINDS as TE_KINDS
from miro.models.text_encoders import LAYERS, TextEncoder
from miro.models.transformer import MiroTransformer
from miro.models.weights import DTYPES
from miro.utils.config import ConfigError, require, require_choice


@dataclass
class ModelConfig:
    """MiroTransformer hyper-parameters.  ``in_channels``, ``sample_size`` and ``text_dim`` left at None are
    taken from the autoencoder, the image size and the text encoder when the model is built."""

    patch_size: int = 4
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    mlp_type: str = "gelu"
    qk_norm: bool = True
    reward_names: list[str] = field(default_factory=list)
    reward_fourier_dim: int = 256
    reward_fourier_scale: float = 1.0
    num_registers: int = 0
    cond_refiner_depth: int = 0
    time_frequency_dim: int = 256
    pooled_text: bool = False
    gradient_checkpointing: bool = False
    in_channels: int | None = None
    sample_size: int | None = None
    text_dim: int | None = None

    def __post_init__(self):
        require(self.patch_size >= 1, "model.patch_size", self.patch_size, "must be >= 1")
        require(self.depth >= 1, "model.depth", self.depth, "must be >= 1")
        require(self.num_heads >= 1, "model.num_heads", self.num_heads, "must be >= 1")
        require(self.width % self.num_heads == 0 and self.width % 4 == 0 and self.width > 0,
                "model.width", self.width, f"must be a multiple of 4 and of num_heads={self.num_heads}")
        require(self.mlp_ratio > 0, "model.mlp_ratio", self.mlp_ratio, "must be > 0")
        require_choice("model.mlp_type", self.mlp_type, MLP_TYPES)
        names = list(self.reward_names)
        require(len(set(names)) == len(names) and all(isinstance(n, str) and n for n in names),
                "model.reward_names", names, "must be distinct non-empty names ([] = the no-reward baseline)")
        require(self.reward_fourier_dim >= 2 and self.reward_fourier_dim % 2 == 0,
                "model.reward_fourier_dim", self.reward_fourier_dim, "must be an even integer >= 2")
        require(self.reward_fourier_scale > 0, "model.reward_fourier_scale", self.reward_fourier_scale, "must be > 0")
        require(self.num_registers >= 0, "model.num_registers", self.num_registers, "must be >= 0")
        require(self.cond_refiner_depth >= 0, "model.cond_refiner_depth", self.cond_refiner_depth, "must be >= 0")
        require(self.time_frequency_dim >= 2, "model.time_frequency_dim", self.time_frequency_dim, "must be >= 2")
        for key in ("in_channels", "sample_size", "text_dim"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"model.{key}", value, "must be >= 1 or null (derived)")
        if self.sample_size is not None:
            require(self.sample_size % self.patch_size == 0, "model.sample_size", self.sample_size,
                    f"must be a multiple of patch_size={self.patch_size}")


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


def build_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    return TextEncoder(**asdict(cfg))


def build_autoencoder(cfg: AutoencoderConfig) -> Autoencoder:
    if cfg.kind == "identity":
        return IdentityAutoencoder()
    kwargs = asdict(cfg)
    kwargs.pop("kind")
    return KLAutoencoder(**kwargs)


def build_model(
    cfg: ModelConfig, *, text_dim: int | None = None, in_channels: int | None = None, sample_size: int | None = None
) -> MiroTransformer:
    """A fresh MiroTransformer; values not set in ``cfg`` come from the text encoder / autoencoder / image size."""
    derived = {"text_dim": text_dim, "in_channels": in_channels, "sample_size": sample_size}
    resolved = {}
    for key, value in derived.items():
        given = getattr(cfg, key)
        if given is not None and value is not None and given != value:
            raise ConfigError(f"model.{key}={given!r} contradicts the {value!r} implied by the text encoder / autoencoder")
        resolved[key] = given if given is not None else value
        if resolved[key] is None:
            raise ConfigError(f"model.{key} is null and was not supplied by the caller")
    kwargs = asdict(cfg)
    checkpointing = kwargs.pop("gradient_checkpointing")
    kwargs.update(resolved)
    model = MiroTransformer(**kwargs)
    if checkpointing:
        model.enable_gradient_checkpointing()
    return model
