import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from miro.models.config import AutoencoderConfig, TextEncoderConfig

REWARDS = ["sharpness", "aesthetic", "pickscore"]


def tiny_transformer(text_dim: int = 384, reward_names=REWARDS, seed: int = 0, **overrides):
    """A random-weight MiroTransformer (output layers not zero, so conditions matter)."""
    from miro.models.transformer import MiroTransformer

    torch.manual_seed(seed)
    model = MiroTransformer(
        in_channels=3, sample_size=8, patch_size=2, width=32, depth=2, num_heads=2, text_dim=text_dim,
        reward_names=list(reward_names), reward_fourier_dim=16, cond_refiner_depth=1, time_frequency_dim=32,
        **overrides,
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="session")
def text_encoder():
    """The real MiniLM encoder from its wheel (short prompts: 16 tokens)."""
    from miro.models.config import build_text_encoder

    return build_text_encoder(TextEncoderConfig(kind="minilm", max_length=16))


@pytest.fixture(scope="session")
def tiny_pipe(text_encoder):
    from miro.sampling.pipeline import MiroPipeline

    pipe = MiroPipeline(
        transformer=tiny_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
        autoencoder_config=AutoencoderConfig(kind="identity"),
        num_bins=8,
        text_encoder=text_encoder,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def saved_pipe(tiny_pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "tiny"
    tiny_pipe.save_pretrained(path)
    return path
