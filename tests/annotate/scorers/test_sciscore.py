"""SciScore: a tiny CLIPModel folder (SciScore's on-disk format) through the production loader."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from annotate.scorers import build_scorer
from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD
from miro.contracts.rewards import author_value
from miro.utils.weights import WeightsNotFoundError, sha256_file
from tests.annotate.conftest import tiny_hf_clip


@pytest.fixture(scope="module")
def sciscore_dir(tmp_path_factory):
    """Jialuo21/SciScore's layout: one folder with a CLIPModel (GELU, ViT-H/14 style) and its processor files."""
    return tiny_hf_clip(tmp_path_factory.mktemp("sciscore"), "gelu", 16, seed=5)


def test_score_is_the_model_cards_formula(sciscore_dir, images, prompts):
    from transformers import AutoModel, AutoTokenizer, CLIPModel

    scorer = build_scorer("sciscore", model=str(sciscore_dir), processor=str(sciscore_dir))
    ours = scorer.score(images, prompts)
    # independently, as the model card and the authors' preprocess_data.py: AutoModel, normalised features,
    # logit_scale.exp() * text @ image.T, its diagonal; pixels from the torchvision-on-PIL transform
    model = AutoModel.from_pretrained(str(sciscore_dir)).eval()
    assert type(model) is CLIPModel
    tf = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(OPENAI_MEAN, OPENAI_STD),
        ]
    )
    tok = AutoTokenizer.from_pretrained(str(sciscore_dir))(
        prompts, padding=True, truncation=True, max_length=77, return_tensors="pt"
    )
    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.stack([tf(im) for im in images]))
        txt = model.get_text_features(**tok)
        img, txt = (x if torch.is_tensor(x) else x.pooler_output for x in (img, txt))
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        expected = (model.logit_scale.exp() * (txt @ img.T)).diagonal().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)
    assert np.ptp(ours) > 0.01
    # the authors store /100 (about a cosine)
    np.testing.assert_allclose(author_value("sciscore", ours), expected / 100.0, rtol=1e-5, atol=1e-6)


def test_provenance_names_sciscore(sciscore_dir, images):
    scorer = build_scorer("sciscore", model=str(sciscore_dir), processor=str(sciscore_dir))
    out = scorer.score(images[:2], ["a diagram of a cell", None])
    assert np.isfinite(out[0]) and np.isnan(out[1])
    prov = scorer.provenance()
    assert prov["model"] == "Jialuo21/SciScore" and "annotate.scorers.sciscore" in prov["implementation"]
    assert prov["weights"][0]["sha256"] == sha256_file(sciscore_dir / "model.safetensors")
    assert scorer.outputs == ("sciscore",)


def test_missing_weights_name_the_repo_and_key(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="Jialuo21/SciScore"):
        build_scorer("sciscore")
    with pytest.raises(WeightsNotFoundError, match="rewards.sciscore.model"):
        build_scorer("sciscore", model=str(tmp_path / "nope"))
