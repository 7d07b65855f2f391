"""Reward-guided sampling: the guidance formula, the batched sampling loop, the pipeline and sliders."""

from miro.sampling.guidance import Branch, Guidance
from miro.sampling.sampler import Conditions, guided_velocity, sample, total_nfe

__all__ = ["Branch", "Conditions", "Guidance", "guided_velocity", "sample", "total_nfe"]
