"""The reward-conditioned transformer, its embeddings, text encoders and autoencoders."""

from miro.models.autoencoders import Autoencoder, IdentityAutoencoder, KLAutoencoder
from miro.models.conditioning import sample_condition_dropout
from miro.models.config import (
    AutoencoderConfig,
    ModelConfig,
    TextEncoderConfig,
    build_autoencoder,
    build_model,
    build_text_encoder,
)
from miro.models.flops import estimate_mfu, forward_flops, measure_matmul_flops, training_flops
from miro.models.rin import MiroRIN, load_authors_checkpoint
from miro.models.text_encoders import TextEncoder
from miro.models.transformer import MiroTransformer
from miro.models.unet import MiroUNet
from miro.utils.weights import WeightsNotFoundError

__all__ = [
    "Autoencoder",
    "AutoencoderConfig",
    "IdentityAutoencoder",
    "KLAutoencoder",
    "MiroRIN",
    "MiroTransformer",
    "MiroUNet",
    "ModelConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "WeightsNotFoundError",
    "build_autoencoder",
    "build_model",
    "build_text_encoder",
    "estimate_mfu",
    "forward_flops",
    "load_authors_checkpoint",
    "measure_matmul_flops",
    "sample_condition_dropout",
    "training_flops",
]
