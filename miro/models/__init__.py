"""The reward-conditioned transformer, its embeddings, text encoders and autoencoders."""

from miro.models.conditioning import sample_condition_dropout
from miro.models.transformer import MiroTransformer

__all__ = ["MiroTransformer", "sample_condition_dropout"]
