"""Fixtures shared with the sampling tests: a tiny random pipeline with the real MiniLM encoder (the slider sweeps are
rendered by sampling and measured here)."""

from tests.sampling.conftest import saved_pipe, text_encoder, tiny_pipe  # noqa: F401
