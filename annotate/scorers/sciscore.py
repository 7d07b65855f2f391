"""``sciscore``: SciScore (Jialuo21/SciScore), CLIP ViT-H/14 (from laion CLIP-ViT-H-14) fine-tuned on Science-T2I.

The hub folder is a plain transformers ``CLIPModel`` (``model_type: clip``, loaded by ``AutoModel`` in its model
card and in the MIRO authors' ``data/preprocess_data.py``) with its own processor and tokenizer files, so the
score is PickScore's computation on other weights and the scorer is ``PickScoreScorer`` with a new name:
L2-normalised ``get_image_features`` / ``get_text_features`` (77 tokens), score = ``logit_scale.exp() * cosine``
(raw, about 100 x cosine).  The authors store ``/100`` (``miro.contracts.rewards.author_value``) and ran it under
fp16 autocast on CUDA; here the dtype is the scorer's (``.to(device, dtype)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from annotate.scorers.pickscore import PickScoreConfig, PickScoreScorer, load_logit_scorer
from miro.utils.config import to_typed

SOURCE = "the Hugging Face repo Jialuo21/SciScore (CLIPModel weights, processor and tokenizer files)"


@dataclass
class SciScoreConfig(PickScoreConfig):
    """The schema of ``conf/rewards/sciscore.yaml``: PickScore's keys, SciScore's folder for both."""

    model: str = "hf://Jialuo21/SciScore"
    processor: str = "hf://Jialuo21/SciScore"


class SciScoreScorer(PickScoreScorer):
    name = "sciscore"
    outputs = ("sciscore",)
    text_outputs = frozenset({"sciscore"})
    model_id = "Jialuo21/SciScore"


SETTINGS = SciScoreConfig


def build(**cfg) -> SciScoreScorer:
    return load_logit_scorer(SciScoreScorer, to_typed(cfg, SciScoreConfig), "SciScore", SOURCE, SOURCE)
