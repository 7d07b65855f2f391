"""The reward contract: names and metadata, consistent with the scorers that compute them."""

import importlib
import inspect

import pytest

from annotate.scorers.base import Scorer
from annotate.scorers.registry import build_scorer
from miro.contracts.rewards import (
    MODEL_REWARDS,
    REWARD_NAMES,
    REWARDS,
    TEXT_REWARDS,
    WEIGHT_FREE_REWARDS,
    unknown_rewards,
)
from miro.contracts.sidecar import RESERVED


def test_names_are_partitioned_and_column_safe():
    assert set(MODEL_REWARDS) | set(WEIGHT_FREE_REWARDS) == set(REWARD_NAMES)
    assert not set(MODEL_REWARDS) & set(WEIGHT_FREE_REWARDS)
    assert all(n.isidentifier() and n not in RESERVED for n in REWARD_NAMES)
    assert unknown_rewards(["pickscore", "nope", "alignment", "zz"]) == ["nope", "zz"]


@pytest.mark.parametrize("name", REWARD_NAMES)
def test_every_reward_has_a_scorer_module(name):
    assert hasattr(importlib.import_module(f"annotate.scorers.{name}"), "SETTINGS")


def _model_scorer_text_outputs() -> dict[str, bool]:
    """output name -> needs a prompt, read from every Scorer class of the annotate.scorers modules."""
    import pkgutil

    import annotate.scorers as pkg

    out = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"annotate.scorers.{info.name}")
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, Scorer) and cls is not Scorer and isinstance(cls.__dict__.get("text_outputs"), frozenset):
                out.update({o: o in cls.text_outputs for o in cls.__dict__.get("outputs", ())} or
                           {o: True for o in cls.text_outputs})
    return out


def test_uses_text_matches_what_the_scorers_need():
    seen = _model_scorer_text_outputs()
    for name, needs in seen.items():
        assert REWARDS[name].uses_text == needs, name
    assert {n for n in MODEL_REWARDS if REWARDS[n].uses_text} <= set(seen)
    for name in WEIGHT_FREE_REWARDS:  # no weights needed: build the real scorer
        scorer = build_scorer(name)
        assert (name in scorer.text_outputs) == (name in TEXT_REWARDS), name
