import numpy as np
import torch

from miro.models.autoencoders import IdentityAutoencoder
from miro.sampling.settings import SamplingSettings
from miro.train.grids import GridConfig, SampleGrid
from tests.data.make_dataset import REWARDS
from tests.train.tiny import TinyTextEncoder, tiny_transformer


def grid(sampler: str) -> np.ndarray:
    cfg = GridConfig(every=1, prompts=["a red circle", "two blue squares"],
                     settings=SamplingSettings(steps=4, guidance_scale=1.0, sampler=sampler))  # fmt: skip
    g = SampleGrid(cfg, REWARDS, TinyTextEncoder(), (3, 16, 16), torch.device("cpu"))
    return g.render(tiny_transformer(REWARDS, in_channels=3, sample_size=16, seed=1), IdentityAutoencoder())


def test_every_sampler_renders_the_same_grid_at_every_call():
    """The grids compare training steps, so a grid must not change between calls but through the model: the SDE
    sampler's fresh noise is drawn from the grid's seed, like its initial noise."""
    sde = grid("sde")
    assert np.array_equal(sde, grid("sde")) and sde.dtype == np.uint8
    assert not np.array_equal(sde, grid("euler"))
    assert np.array_equal(grid("euler"), grid("euler"))
