"""The reward names every stage agrees on, and what each reward is (not how it is computed).

The annotation stage computes these (``annotate/scorers``: one scorer per name, some sharing a forward pass),
training conditions on an ordered subset of them (the run config's ``rewards`` list), sampling takes targets
by these names, evaluation reports them.  A sidecar column, a bucket column, a reward token of the model and a
slider all carry one of these names; this module is their one owner, and it depends on no stage.

Every reward is "higher is better" and reaches the network only as a bucket value in [0, 1]
(``miro.contracts.buckets``).

The MIRO authors' seven rewards have their own keys (``clip_score`` is theirs on jina-CLIP v2, ours is OpenAI
CLIP ViT-L/14) and store rescaled values (``/100``, ``/10``, ``(IR + 2) / 4``).  Each spec records the authors'
key and their affine rescaling of our raw score (``author_key``, ``author_affine``), so annotation can write
their scale (``author_value``), every stage's reward lists and dicts accept their keys (``our_names``,
``our_keys``: annotation, training, sampling, test-time search, evaluation, the app) and keep our names in what
they write, and a sidecar can be compared with theirs.  Quantile buckets do not change under an increasing affine
map, so the two scales give the same conditioning.

**Scales of stored scores.**  A sidecar column holds a reward on one of ``SCALES``: ``"raw"`` (what our scorer
returns) or ``"authors"`` (their stored scale where the authors have the reward, our raw score otherwise: a reward
they do not have has no other scale to take).  ``scale_record`` is what a sidecar and ``reward_stats.json`` record
per reward (the scale's name and its affine map from our raw score); ``scale_of`` reads it back (no record: a file
written before the option, i.e. raw), ``convert_scale`` moves values between two records.  Two columns of one reward
are comparable only when their affine maps agree (``same_scale``); the stages refuse a mix with ``ScaleError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from miro.contracts.sidecar import RESERVED


@dataclass(frozen=True)
class RewardSpec:
    """What a reward is.

    ``kind`` is ``"model"`` (a learned scorer whose weights are found on disk) or ``"weight_free"`` (computed
    from the pixels, and for ``alignment`` from the shapes world's detector); ``uses_text`` says whether the
    score depends on the caption (such rewards are NaN for a sample without a usable caption).
    """

    name: str
    kind: str
    uses_text: bool
    summary: str
    author_key: str | None = None  # the MIRO authors' key for the same computation (their ``coherence_keys``)
    author_affine: tuple[float, float] = (0.0, 1.0)  # (offset, divisor): theirs = (ours + offset) / divisor


REWARDS: dict[str, RewardSpec] = {
    spec.name: spec
    for spec in (
        RewardSpec("pickscore", "model", True, "PickScore (CLIP-H fine-tuned on Pick-a-Pic preferences)",
                   "pick_a_score_score", (0.0, 100.0)),
        RewardSpec("imagereward", "model", True, "ImageReward (BLIP + MLP head, human preference)",
                   "image_reward_score", (2.0, 4.0)),
        RewardSpec("hpsv2", "model", True, "HPSv2.1 (open_clip ViT-H-14, human preference)", "hpsv2_score"),
        RewardSpec("clip_score", "model", True, "CLIP score (OpenAI ViT-L/14 image-text cosine)"),
        RewardSpec("aesthetic", "model", False, "LAION aesthetic predictor v2 (MLP on ViT-L/14 image features)",
                   "aesthetic_score", (0.0, 10.0)),
        RewardSpec("sciscore", "model", True, "SciScore (CLIP-H fine-tuned on Science-T2I; logit scale x cosine)",
                   "sciscore_score", (0.0, 100.0)),
        RewardSpec("vqascore", "model", True, "VQAScore: a VLM's P('Yes') to 'Does this figure show ...?'", "vqa_score"),
        RewardSpec("jina_clip", "model", True, "CLIP score on jina-CLIP v2 (logit scale x cosine, 1024 tokens)",
                   "clip_score", (0.0, 100.0)),
        RewardSpec("sharpness", "weight_free", False, "log(1 + variance of the Laplacian) of the median-filtered luma (focus)"),
        RewardSpec("low_noise", "weight_free", False, "minus the estimated noise standard deviation (Donoho, Haar HH band)"),
        RewardSpec("colorfulness", "weight_free", False, "Hasler-Suesstrunk colourfulness on an 8 x 8 area average"),
        RewardSpec("contrast", "weight_free", False, "RMS contrast of the luma on an 8 x 8 area average"),
        RewardSpec("alignment", "weight_free", True, "caption alignment from the shapes world's detector"),
    )
}
REWARD_NAMES: tuple[str, ...] = tuple(REWARDS)
MODEL_REWARDS: tuple[str, ...] = tuple(n for n, s in REWARDS.items() if s.kind == "model")
WEIGHT_FREE_REWARDS: tuple[str, ...] = tuple(n for n, s in REWARDS.items() if s.kind == "weight_free")
TEXT_REWARDS: frozenset[str] = frozenset(n for n, s in REWARDS.items() if s.uses_text)

assert not set(REWARD_NAMES) & set(RESERVED), "a reward name would clash with a sidecar's reserved column"


AUTHOR_KEYS: dict[str, str] = {s.author_key: n for n, s in REWARDS.items() if s.author_key}  # theirs -> ours

assert len(AUTHOR_KEYS) == len([s for s in REWARDS.values() if s.author_key]), "two rewards claim one author key"


def author_value(name: str, raw):
    """Reward ``name``'s raw score(s) on the MIRO authors' stored scale (NaN stays NaN); ``ValueError`` for a
    reward that is not one of their seven."""
    spec = REWARDS[name]
    if spec.author_key is None:
        raise ValueError(f"reward {name!r} is not one of the MIRO authors' rewards; theirs (ours): {AUTHOR_KEYS}")
    offset, divisor = spec.author_affine
    return (np.asarray(raw, dtype=np.float64) + offset) / divisor


SCALES: tuple[str, ...] = ("raw", "authors")


class ScaleError(ValueError):
    """Scores of one reward on different scales would be mixed (the message names the files and a fix)."""


def scale_record(name: str, scale: str) -> dict:
    """What is recorded with reward ``name``'s column when it is written on ``scale`` (one of ``SCALES``):
    ``{"name", "offset", "divisor"}`` with stored = (raw + offset) / divisor, plus the authors' key where the
    scale is theirs.  ``"authors"`` on a reward they do not have records ``"raw"``: the values are our raw ones."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r}: must be one of {list(SCALES)}")
    spec = REWARDS[name]
    if scale == "authors" and spec.author_key is not None:
        offset, divisor = spec.author_affine
        return {"name": "authors", "offset": float(offset), "divisor": float(divisor), "author_key": spec.author_key}
    return {"name": "raw", "offset": 0.0, "divisor": 1.0}


def scale_of(record: dict | None) -> dict:
    """A recorded scale checked and filled in: None (a sidecar or stats file written before scales were
    recorded) is the raw scale; a record with an unknown name or a non-positive divisor is a ``ScaleError``."""
    if record is None:
        return {"name": "raw", "offset": 0.0, "divisor": 1.0}
    name, offset, divisor = record.get("name"), record.get("offset"), record.get("divisor")
    ok = name in SCALES and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (offset, divisor))
    if not ok or not np.isfinite(offset) or not (np.isfinite(divisor) and divisor > 0):
        raise ScaleError(f"recorded scale {record!r} is not valid: need name in {list(SCALES)}, a finite offset and a "
                         "positive divisor")
    return {**record, "offset": float(offset), "divisor": float(divisor)}


def same_scale(a: dict | None, b: dict | None) -> bool:
    """Whether two recorded scales store a reward identically (their affine maps agree; for ``hpsv2`` or
    ``vqascore`` the authors' scale is our raw one)."""
    a, b = scale_of(a), scale_of(b)
    return (a["offset"], a["divisor"]) == (b["offset"], b["divisor"])


def describe_scale(record: dict | None) -> str:
    """``'authors' ((raw + 2) / 4)`` style text for messages."""
    r = scale_of(record)
    o, d = r["offset"], r["divisor"]
    if (o, d) == (0.0, 1.0):
        return f"{r['name']!r} (= our raw score)"
    return f"{r['name']!r} ((raw {'+' if o >= 0 else '-'} {abs(o):g}) / {d:g})" if o else f"{r['name']!r} (raw / {d:g})"


def convert_scale(values, src: dict | None, dst: dict | None) -> np.ndarray:
    """``values`` stored on the recorded scale ``src`` re-expressed on ``dst`` (float64; NaN stays NaN).  The
    round trip raw -> authors -> raw is exact up to one rounding per step."""
    src, dst = scale_of(src), scale_of(dst)
    v = np.asarray(values, dtype=np.float64)
    if same_scale(src, dst):
        return v.copy()
    raw = v * src["divisor"] - src["offset"]
    return (raw + dst["offset"]) / dst["divisor"]


def from_author_key(key: str, names: Iterable[str] = REWARD_NAMES) -> str | None:
    """Our name for ``key`` among ``names``: ``key`` itself when it is one of them (so our ``clip_score`` keeps
    meaning OpenAI CLIP), else the reward the authors call ``key``, else None."""
    names = list(names)
    if key in names:
        return key
    ours = AUTHOR_KEYS.get(key)
    return ours if ours in names else None


def our_names(keys: Iterable[str], names: Iterable[str] = REWARD_NAMES) -> list[str]:
    """``keys`` with each of the MIRO authors' keys replaced by our name among ``names`` (``from_author_key``);
    other keys are kept, so the caller's own check names them.  The one spelling every stage's name lists go
    through (annotation, training, test-time search, evaluation, the app), so their keys mean our reward anywhere."""
    names = list(names)
    return [from_author_key(k, names) or k for k in keys]


V = TypeVar("V")


def our_keys(mapping: Mapping[str, V], names: Iterable[str] = REWARD_NAMES, key: str = "rewards") -> dict[str, V]:
    """``mapping`` (a dict keyed by reward, e.g. ``verifier.weights``) with its keys through ``our_names``, values
    and order kept.  Two keys that name one reward (ours and the authors' key) are a ``ConfigError`` naming
    ``key``; other unknown keys are kept for the caller's own check."""
    ours = our_names(mapping, names)
    if len(set(ours)) != len(ours):
        from miro.utils.config import ConfigError

        raise ConfigError(f"{key}={list(mapping)}: names one reward twice (ours and the authors' key)")
    return dict(zip(ours, mapping.values()))


def allowed_rewards(names: Iterable[str] = REWARD_NAMES) -> str:
    """The "what is allowed" part of a message about a reward name: ``names``, and the MIRO authors' keys
    that stand for one of them (not their ``clip_score`` where our ``clip_score`` is among ``names``)."""
    names = list(names)
    theirs = sorted(k for k, ours in AUTHOR_KEYS.items() if ours in names and k not in names)
    return f"one of {names}" + (f" (or the MIRO authors' keys {theirs}, mapped to ours)" if theirs else "")


def unknown_rewards(names: Iterable[str]) -> list[str]:
    """The names in ``names`` that are not rewards of this contract, in order."""
    return [n for n in names if n not in REWARDS]
