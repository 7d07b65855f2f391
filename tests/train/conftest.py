import pytest

from miro.data.pipeline import DataConfig
from miro.models.autoencoders import IdentityAutoencoder
from miro.models.config import AutoencoderConfig, ModelConfig, TextEncoderConfig
from miro.sampling.settings import SamplingSettings
from miro.train.config import TrainConfig
from miro.train.grids import GridConfig
from miro.train.loop import Components
from miro.train.optim import OptimConfig
from tests.data.make_dataset import REWARDS, make_dataset
from tests.train.tiny import TinyTextEncoder, tiny_transformer


@pytest.fixture(scope="session")
def shards_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_wds")
    make_dataset(root, n_shards=4, per_shard=12)
    return root


def tiny_components(rewards=REWARDS, seed: int = 0, autoencoder=None) -> Components:
    """Pixel space by default; pass a latent autoencoder to train in its latent space."""
    ae = autoencoder or IdentityAutoencoder()
    model = tiny_transformer(rewards, in_channels=ae.latent_channels, sample_size=16 // ae.downsample, seed=seed)
    return Components(model=model, text_encoder=TinyTextEncoder(), autoencoder=ae)


def tiny_config(out, shards_root, **overrides) -> TrainConfig:
    data = {"shards": str(shards_root), "resolution": 16, "num_workers": 0, "shuffle_buffer": 8, "shuffle_initial": 4}
    data.update(overrides.pop("data", {}))
    rewards = overrides.pop("rewards", REWARDS)
    model = ModelConfig(patch_size=2, width=32, depth=2, num_heads=2)
    kw = {"name": "tiny", "output_dir": str(out), "reward_names": list(rewards), "model": model, "max_steps": 6, "batch_size": 4,
          "text_encoder": TextEncoderConfig(max_length=TinyTextEncoder().max_length),  # describes TinyTextEncoder
          "autoencoder": AutoencoderConfig(),
          "checkpoint_every": 3, "log_every": 2, "progress_bar": False, "peak_tflops": 0.05,  # skip the CPU probe
          "optim": OptimConfig(lr=5e-3, warmup_steps=2), "data": DataConfig(**data),
          "sample": GridConfig(every=3, settings=SamplingSettings(steps=2, guidance_scale=0.0),
                               prompts=["a red circle", "two blue squares"])}
    sample = overrides.pop("sample", {})
    kw.update(overrides)
    if sample:
        settings = SamplingSettings(**{"steps": 2, "guidance_scale": 0.0, **sample.pop("settings", {})})
        kw["sample"] = GridConfig(**{"prompts": ["a red circle", "two blue squares"], **sample, "settings": settings})
    return TrainConfig(**kw)
