"""Autoencoders behind one interface: images in [-1, 1] <-> normalised latents.

- ``identity``: pixel space (latent_channels 3, downsample 1).
- ``kl``: diffusers ``AutoencoderKL`` (SD, SDXL, SD3, FLUX VAEs) with the latent normalisation from config:
  ``scale``          z' = z * scaling_factor                        (SD 0.18215, SDXL 0.13025)
  ``shift_scale``    z' = (z - shift_factor) * scaling_factor       (FLUX 0.1159 / 0.3611, SD3 0.0609 / 1.5305)
  ``per_channel``    z' = (z - mean_c) * target_std / std_c         (MIRO's SDXL statistics, target std 0.5)
  ``auto``           shift_scale if the VAE config has a shift_factor, else scale (values from the VAE config).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from miro.utils.device import parse_dtype
from miro.utils.weights import load_pretrained, local_folder, weights_fingerprint

KINDS = ("identity", "kl")
NORMALIZATIONS = ("auto", "scale", "shift_scale", "per_channel")


def _check_images(images: torch.Tensor, downsample: int) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h % downsample or w % downsample:
        raise ValueError(f"image size {h}x{w} must be a multiple of the autoencoder's downsample={downsample}")


class Autoencoder(nn.Module):
    """Interface: ``encode(images) -> latents``, ``decode(latents) -> images``, ``latent_channels``, ``downsample``,
    and for feature caches ``has_posterior`` / ``encode_moments`` / ``from_moments``.

    Latents come in two spaces: raw (what the encoder produces) and normalised (what the model sees);
    ``normalize`` / ``denormalize`` map between them (the identity unless a subclass normalises).
    """

    latent_channels: int
    downsample: int
    #: True when ``encode_moments`` gives a posterior std worth caching, so training can draw a fresh sample per
    #: step from cached moments; False for a deterministic encoder (a cache then stores ``encode``'s latents).
    has_posterior: bool = False

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> the model's normalised latents (fp32)."""
        return z.float()

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """The model's normalised latents -> raw latents (fp32)."""
        return z.float()

    def from_moments(
        self, mean: torch.Tensor, std: torch.Tensor | None = None, sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Normalised latents from raw posterior moments: the mean, or with ``sample`` (and a ``std``) the draw
        mean + std * noise from ``generator`` (so cached moments train exactly like ``encode(sample=True)``)."""
        z = mean.float()
        if sample and std is not None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
            z = z + std.float() * noise
        return self.normalize(z)

    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def identifier(self) -> str:
        raise NotImplementedError

    def latent_size(self, image_size: int) -> int:
        if image_size % self.downsample:
            raise ValueError(f"image_size={image_size} must be a multiple of downsample={self.downsample}")
        return image_size // self.downsample


class IdentityAutoencoder(Autoencoder):
    """Pixel space: the latents are the images themselves; ``decode`` clamps to [-1, 1]."""

    latent_channels = 3
    downsample = 1

    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_images(images, 1)
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.clamp(-1, 1)

    def identifier(self) -> str:
        return "identity"


class KLAutoencoder(Autoencoder):
    """A frozen diffusers ``AutoencoderKL`` plus a latent normalisation (see the module docstring).

    ``encode`` returns the normalised posterior mean, or a posterior sample with ``sample=True``;
    ``encode_moments`` returns the raw posterior (mean, std) for caches that sample later (MIRO stores both);
    ``decode`` undoes the normalisation exactly and clamps the decoded images to [-1, 1].
    """

    def __init__(
        self,
        path: str,
        subfolder: str | None = None,
        dtype: str = "float32",
        normalization: str = "auto",
        scaling_factor: float | None = None,
        shift_factor: float | None = None,
        channel_mean: Sequence[float] | None = None,
        channel_std: Sequence[float] | None = None,
        target_std: float = 0.5,
    ):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"autoencoder.normalization={normalization!r}: must be one of {list(NORMALIZATIONS)}")
        if not path:
            raise ValueError("autoencoder.path is required for kind='kl' (a local folder or a repo id)")
        from diffusers import AutoencoderKL

        self.path, self.subfolder = path, subfolder
        weight_dtype = parse_dtype(dtype, "autoencoder.dtype")
        self.vae = load_pretrained(
            lambda src: AutoencoderKL.from_pretrained(
                src, torch_dtype=weight_dtype, **({"subfolder": subfolder} if subfolder else {})
            ),
            path, "autoencoder 'kl'", "autoencoder.path",
        )
        self.vae.requires_grad_(False).eval()
        vcfg = self.vae.config
        self.latent_channels = int(vcfg.latent_channels)
        self.downsample = 2 ** (len(vcfg.block_out_channels) - 1)

        if normalization == "auto":
            normalization = "shift_scale" if getattr(vcfg, "shift_factor", None) is not None else "scale"
        self.normalization = normalization
        c = self.latent_channels
        if normalization == "per_channel":
            if channel_mean is None or channel_std is None or len(channel_mean) != c or len(channel_std) != c:
                raise ValueError(
                    f"autoencoder.normalization='per_channel' needs channel_mean and channel_std with "
                    f"latent_channels={c} values each, got {channel_mean} and {channel_std}"
                )
            if min(channel_std) <= 0 or target_std <= 0:
                raise ValueError(f"autoencoder.channel_std={list(channel_std)} and target_std={target_std} must be > 0")
            shift = torch.tensor(channel_mean, dtype=torch.float32)
            scale = target_std / torch.tensor(channel_std, dtype=torch.float32)
        else:
            sf = scaling_factor if scaling_factor is not None else getattr(vcfg, "scaling_factor", None)
            if sf is None or sf <= 0:
                raise ValueError(f"autoencoder.scaling_factor={sf}: must be > 0 (not in the VAE config either)")
            shift_value = 0.0
            if normalization == "shift_scale":
                shift_value = shift_factor if shift_factor is not None else getattr(vcfg, "shift_factor", None)
                if shift_value is None:
                    raise ValueError("autoencoder.normalization='shift_scale' needs shift_factor (not in the VAE config)")
            shift = torch.full((c,), float(shift_value))
            scale = torch.full((c,), float(sf))
        self.register_buffer("shift", shift.view(1, c, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, c, 1, 1), persistent=False)
        self._identifier: str | None = None

    has_posterior = True

    def train(self, mode: bool = True) -> KLAutoencoder:
        super().train(mode)
        self.vae.eval()
        return self

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z.float() - self.shift) * self.scale

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z.float() / self.scale + self.shift

    @torch.no_grad()
    def encode_moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (un-normalised) posterior mean and std, in fp32."""
        _check_images(images, self.downsample)
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def sample_moments(
        self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Normalised latents from raw moments: mean + std * noise (``from_moments(..., sample=True)``)."""
        return self.from_moments(mean, std, sample=True, generator=generator)

    def encode(self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, std = self.encode_moments(images)
        return self.from_moments(mean, std, sample, generator)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be [B, {self.latent_channels}, h, w], got shape {tuple(latents.shape)}")
        z = self.denormalize(latents).to(self.vae.dtype)
        return self.vae.decode(z).sample.float().clamp(-1, 1)

    def identifier(self) -> str:
        if self._identifier is None:
            digest = weights_fingerprint(local_folder(self.path, self.subfolder))
            stats = ",".join(f"{v:.6g}" for v in torch.cat([self.shift.flatten(), self.scale.flatten()]).tolist())
            self._identifier = f"kl:{self.path}:{digest}:{self.normalization}:{stats}"
        return self._identifier
