"""Fixtures of the test-time tests: the tiny random pipeline of the sampling tests (real MiniLM encoder, identity
autoencoder, 8 x 8 images), short sampling settings, a counter of the transformer's real network rows, and toy
scorers with known preferences."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from miro.sampling.settings import SamplingSettings
from tests.sampling.conftest import saved_pipe, text_encoder, tiny_pipe  # noqa: F401

SETTINGS = SamplingSettings(steps=3)  # one sample = 3 steps x 2 (joint guidance) = 6 NFE


@pytest.fixture
def renderer(tiny_pipe):  # noqa: F811
    from miro.testtime.render import Renderer

    return Renderer(tiny_pipe, SETTINGS)


class RowCounter:
    """Counts the rows the transformer really evaluated: a forward hook on its time embedder (called once per
    velocity evaluation, whichever entry the caller used) and a backward hook on its output projection."""

    def __init__(self, transformer):
        self.forward = 0
        self.backward = 0
        self.handles = [
            transformer.time_embedder.register_forward_hook(self._fwd),
            transformer.proj_out.register_full_backward_hook(self._bwd),
        ]

    def _fwd(self, module, args, out):
        self.forward += int(args[0].shape[0])

    def _bwd(self, module, grad_in, grad_out):
        self.backward += int(grad_out[0].shape[0])

    def nfe(self) -> float:
        return self.forward + 2.0 * self.backward

    def close(self):
        for h in self.handles:
            h.remove()


@pytest.fixture
def rows(tiny_pipe):  # noqa: F811
    counter = RowCounter(tiny_pipe.transformer)
    yield counter
    counter.close()


class Brightness:
    """A toy reward: mean pixel value (differentiable form included)."""

    name = "brightness"

    def score(self, images, prompts):
        return np.array([np.asarray(im, dtype=np.float64).mean() / 255 for im in images])

    def score_tensor(self, images, prompts=None):
        return images.flatten(1).mean(1)


class Likes:
    """Prefers one known image: minus the mean absolute difference to it."""

    def __init__(self, target, name="likes"):
        self.target = np.asarray(target, dtype=np.float64)
        self.name = name
        self.calls = []

    def score(self, images, prompts):
        self.calls.append(len(images))
        return np.array([-np.abs(np.asarray(im, dtype=np.float64) - self.target).mean() for im in images])


def stub_pipe(model, reward_names, encode=None):
    """A pipeline-like object for the judges: a stub transformer, the identity autoencoder, a toy text encoder."""
    from miro.models.autoencoders import IdentityAutoencoder

    def default_encode(prompts):
        return torch.zeros(len(prompts), 2, 4), torch.ones(len(prompts), 2, dtype=torch.bool)

    return SimpleNamespace(transformer=model, autoencoder=IdentityAutoencoder(), reward_names=list(reward_names),
                           encode_prompts=encode or default_encode)  # fmt: skip
