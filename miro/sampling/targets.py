"""Reward targets from user arguments: names (with the authors' aliases), defaults, range and batch checks;
and the checks of a call's other per-call arguments that both pipelines share (prompt, step count, generator),
each message naming the argument and what is allowed."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch

from miro.contracts.rewards import AUTHOR_KEYS, from_author_key

# The MIRO authors' reward keys (their ``coherence_keys``) -> ours, so their code runs unchanged on a model
# trained with the same reward; owned by the reward contract.  Their ``clip_score`` is jina-CLIP v2 (our
# ``jina_clip``); a model trained on our OpenAI ``clip_score`` keeps that meaning (a name of the model wins).
AUTHOR_KEY_ALIASES = AUTHOR_KEYS

Targets = Mapping[str, float | None]


def canonical_reward(key: str, reward_names: Sequence[str], arg: str = "reward_targets") -> str:
    """Our name for a reward key (itself or its alias); ``ValueError`` naming the allowed names otherwise."""
    name = from_author_key(key, reward_names)
    if name is not None:
        return name
    aliases = sorted(k for k, v in AUTHOR_KEY_ALIASES.items() if v in reward_names and k != v)
    also = f" (or the authors' aliases {aliases})" if aliases else ""
    raise ValueError(
        f"{arg} has reward {key!r}, which this model was not trained with; allowed: {list(reward_names)}{also}"
    )


def canonical_keys(mapping: Mapping[str, object] | None, reward_names: Sequence[str], arg: str) -> dict:
    """``mapping`` with every key turned into our reward name; a reward given twice is an error."""
    out: dict = {}
    for key, value in (mapping or {}).items():
        name = canonical_reward(key, reward_names, arg)
        if name in out:
            raise ValueError(f"{arg} gives reward {name!r} twice (as {key!r} and under another alias)")
        out[name] = value
    return out


def _check_value(value, arg: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{arg}[{key!r}]={value!r}: must be a number in [0, 1], or None to leave the reward free")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{arg}[{key!r}]={value}: must be in [0, 1] (0 = lowest bucket, 1 = highest)")
    return value


def reward_tensors(
    targets: Targets | Sequence[Targets | None] | None,
    reward_names: Sequence[str],
    num_prompts: int,
    default: float,
    arg: str = "reward_targets",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt target values [P, R] (model order) and mask [P, R] (False = free: the null embedding).

    ``targets`` is one mapping for every prompt or a list with one mapping per prompt; a reward left out
    takes ``default`` and a reward set to None is free.
    """
    if targets is None or isinstance(targets, Mapping):
        per_prompt = [targets] * num_prompts
    elif isinstance(targets, Sequence) and not isinstance(targets, str):
        if len(targets) != num_prompts:
            raise ValueError(
                f"{arg} is a list of {len(targets)} mappings but there are {num_prompts} prompts; "
                f"give one mapping for all prompts or a list of {num_prompts}"
            )
        per_prompt = list(targets)
    else:
        raise ValueError(f"{arg} must be a mapping from reward name to target, or a list of them (one per prompt)")
    values = torch.full((num_prompts, len(reward_names)), float(default))
    mask = torch.ones(num_prompts, len(reward_names), dtype=torch.bool)
    for i, item in enumerate(per_prompt):
        if item is not None and not isinstance(item, Mapping):
            raise ValueError(f"{arg}[{i}] must be a mapping from reward name to target, got {type(item).__name__}")
        for name, value in canonical_keys(item, reward_names, arg).items():
            k = reward_names.index(name)
            v = _check_value(value, arg, name)
            if v is None:
                mask[i, k] = False
                values[i, k] = 0.0
            else:
                values[i, k] = v
    return values, mask


def target_dicts(values: torch.Tensor, mask: torch.Tensor, reward_names: Sequence[str]) -> list[dict[str, float | None]]:
    """Rows of ``reward_tensors`` as {reward: target, or None where free}, in model order."""
    return [
        {n: (float(values[i, k]) if mask[i, k] else None) for k, n in enumerate(reward_names)}
        for i in range(values.shape[0])
    ]


def free_negatives(targets: Mapping[str, float | None] | None) -> dict[str, None] | None:
    """The negative targets that go with ``targets``: a reward left free (None) in the positive branch is free in
    the negative one too, so guidance does not steer it at all (a free positive against the default negative 0
    would still push away from 0); None when ``targets`` frees none (the call's default negatives stand)."""
    free = {name: None for name, value in (targets or {}).items() if value is None}
    return free or None


def prompt_list(prompt) -> list[str]:
    """``prompt`` (a string or a non-empty list of strings) as a list; ``ValueError`` naming what it got."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, Sequence) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise ValueError(f"prompt={prompt!r} ({type(prompt).__name__}): must be a string or a non-empty list of strings")


def check_count(value, name: str, minimum: int = 1) -> int:
    """An int argument such as ``num_inference_steps`` (a float, even 4.0, or a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} ({type(value).__name__}): must be >= {minimum}, an int")
    return int(value)


def check_generator(generator, allow_list: bool = True) -> None:
    """None, a ``torch.Generator`` (or, with ``allow_list``, a list of them); an int says how to seed one."""
    ok = generator is None or isinstance(generator, torch.Generator)
    if allow_list and isinstance(generator, list):
        ok = all(isinstance(g, torch.Generator) for g in generator)
    if not ok:
        allowed = "a torch.Generator, a list of them, or None" if allow_list else "a torch.Generator or None"
        hint = f"; for a seed, pass torch.Generator().manual_seed({generator})" if isinstance(generator, int) else ""
        raise TypeError(f"generator={generator!r} ({type(generator).__name__}): must be {allowed}{hint}")
