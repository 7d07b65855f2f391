"""Reward scorers: one module per reward, one batch API (``annotate.scorers.base.Scorer``)."""

from annotate.scorers.base import Scorer
from annotate.scorers.registry import REWARD_NAMES, build_scorer, build_scorers

__all__ = ["REWARD_NAMES", "Scorer", "build_scorer", "build_scorers"]
