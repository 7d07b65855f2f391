"""jina-CLIP v2: the consent error, and the authors' formula on a stand-in (the real model is remote code)."""

import numpy as np
import pytest
import torch

from annotate.scorers import build_scorer
from annotate.scorers.hf_clip import load_image_processor
from annotate.scorers.jina_clip import JinaClipConfig, JinaClipScorer
from miro.contracts.rewards import author_value, from_author_key
from miro.utils.config import ConfigError
from tests.annotate.conftest import tiny_hf_clip


def test_without_consent_it_names_the_flag_and_the_packages():
    with pytest.raises(ConfigError, match=r"trust_remote_code=true.*pip install einops timm"):
        build_scorer("jina_clip")
    with pytest.raises(ConfigError, match="max_length"):
        build_scorer("jina_clip", max_length=0)


def test_formula_on_a_stand_in(tmp_path, images, prompts):
    """A model with jina's call signature (a CLIPModel: forward(input_ids, attention_mask, pixel_values) ->
    logits_per_image): the score is the diagonal of one batched call with padding='longest', as the authors."""
    from transformers import AutoTokenizer, CLIPModel

    folder = tiny_hf_clip(tmp_path / "stand_in", "gelu", 16, seed=9)
    model = CLIPModel.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    ip = load_image_processor(folder, "stand-in", "tests")
    scorer = JinaClipScorer(model, ip, tok, JinaClipConfig(trust_remote_code=True, max_length=77))
    ours = scorer.score(images, prompts)
    with torch.no_grad():
        pix = ip(images=[im.convert("RGB") for im in images], return_tensors="pt")
        txt = tok(prompts, truncation=True, padding="longest", max_length=77, return_tensors="pt")
        expected = model(**pix, **txt).logits_per_image.diagonal().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(author_value("jina_clip", ours), expected / 100.0, rtol=1e-5, atol=1e-6)
    assert np.isnan(scorer.score(images[:1], [None])[0])


def test_the_authors_clip_score_is_jina_not_ours():
    assert from_author_key("clip_score", ["jina_clip", "pickscore"]) == "jina_clip"
    assert from_author_key("clip_score", ["clip_score", "jina_clip"]) == "clip_score"  # our name wins
