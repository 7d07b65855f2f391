"""Reward scorers: one module per reward, one batch API (``annotate.scorers.base.Scorer``)."""

from annotate.scorers.base import Scorer
from annotate.scorers.registry import build_scorer, build_scorers
from miro.contracts.rewards import REWARD_NAMES

__all__ = ["REWARD_NAMES", "Scorer", "build_scorer", "build_scorers"]
