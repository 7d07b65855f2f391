"""The reward names every stage agrees on, and what each reward is (not how it is computed).

The annotation stage computes these (``annotate/scorers``: one scorer per name, some sharing a forward pass),
training conditions on an ordered subset of them (the run config's ``rewards`` list), sampling takes targets
by these names, evaluation reports them.  A sidecar column, a bucket column, a reward token of the model and a
slider all carry one of these names; this module is their one owner, and it depends on no stage.

Every reward is "higher is better" and reaches the network only as a bucket value in [0, 1]
(``miro.contracts.buckets``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


REWARDS: dict[str, RewardSpec] = {
    spec.name: spec
    for spec in (
        RewardSpec("pickscore", "model", True, "PickScore (CLIP-H fine-tuned on Pick-a-Pic preferences)"),
        RewardSpec("imagereward", "model", True, "ImageReward (BLIP + MLP head, human preference)"),
        RewardSpec("hpsv2", "model", True, "HPSv2.1 (open_clip ViT-H-14, human preference)"),
        RewardSpec("clip_score", "model", True, "CLIP score (OpenAI ViT-L/14 image-text cosine)"),
        RewardSpec("aesthetic", "model", False, "LAION aesthetic predictor v2 (MLP on ViT-L/14 image features)"),
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


def unknown_rewards(names: Iterable[str]) -> list[str]:
    """The names in ``names`` that are not rewards of this contract, in order."""
    return [n for n in names if n not in REWARDS]
