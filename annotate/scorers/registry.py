"""How to build the scorer of each reward (the names are ``miro.contracts.rewards``): ``build_scorer(name, **cfg)``
and the job's ``build_scorers``.  Reward ``name`` is scored by the module ``annotate.scorers.<name>``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

import torch

from annotate.scorers.base import Scorer
from miro.contracts.rewards import REWARD_NAMES, WEIGHT_FREE_REWARDS
from miro.utils.config import ConfigError
from miro.utils.device import DTYPES

SHARED_CLIP_L = ("clip_score", "aesthetic")  # one ViT-L/14 image forward feeds both
SHARED_PIXELS = WEIGHT_FREE_REWARDS  # computed in the preprocessing from one set of working copies per image


def _module(name: str):
    if name not in REWARD_NAMES:
        raise ConfigError(f"reward {name!r}: must be one of {list(REWARD_NAMES)}")
    return importlib.import_module(f"annotate.scorers.{name}")


IGNORED_SETTINGS = ("batch_size", "download")  # settings that never change a score


def reward_settings(name: str, cfg: Mapping | None = None) -> dict:
    """The settings of reward ``name`` as its scorer records them (schema defaults filled in, score-neutral keys
    dropped): what must match for two scores to be comparable."""
    from dataclasses import asdict

    from miro.utils.config import to_typed

    return comparable_settings(asdict(to_typed(dict(cfg or {}), _module(name).SETTINGS)))


def comparable_settings(settings: Mapping | None) -> dict:
    return {k: v for k, v in (settings or {}).items() if k not in IGNORED_SETTINGS}


def _place(scorer: Scorer, device, dtype) -> Scorer:
    if isinstance(dtype, str):
        dtype = DTYPES[dtype]
    return scorer.to(device, dtype) if (device is not None or dtype is not None) else scorer


def build_scorer(name: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None, **cfg) -> Scorer:
    """The scorer of reward ``name`` with its config keys (``miro/conf/rewards/<name>.yaml``), on ``device``/``dtype``."""
    return _place(_module(name).build(**cfg), device, dtype)


def build_scorers(
    names: Sequence[str],
    configs: Mapping[str, Mapping] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> list[Scorer]:
    """Scorers covering ``names``; ``clip_score`` and ``aesthetic`` share one scorer (one image forward), and so
    do the weight-free rewards (one resize per image)."""
    configs = configs or {}
    if len(set(names)) != len(names):
        raise ConfigError(f"rewards={list(names)}: a reward is listed twice")
    for n in names:
        _module(n)
    out: list[Scorer] = []
    shared = [n for n in SHARED_CLIP_L if n in names]
    if len(shared) == 2:
        from annotate.scorers.clip_l import build_clip_l

        out.append(_place(build_clip_l(clip_score=dict(configs.get("clip_score", {})), aesthetic=dict(configs.get("aesthetic", {}))), device, dtype))
    pixels = [build_scorer(n, **dict(configs.get(n, {}))) for n in names if n in SHARED_PIXELS]
    if pixels:
        from annotate.scorers.pixels import PixelScorer

        out.append(PixelScorer.merge(pixels))
    for n in names:
        if (len(shared) == 2 and n in SHARED_CLIP_L) or n in SHARED_PIXELS:
            continue
        out.append(build_scorer(n, device, dtype, **dict(configs.get(n, {}))))
    return out
