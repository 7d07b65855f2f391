"""PickScore: a tiny CLIPModel folder with processor files, through the production loader."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from safetensors.torch import load_file, save_file

from annotate.scorers import build_scorer
from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD
from miro.utils.weights import WeightsMismatch, WeightsNotFoundError, sha256_file


def test_score_is_logit_scale_times_cosine(pickscore_dir, images, prompts):
    from transformers import AutoTokenizer, CLIPModel

    scorer = build_scorer("pickscore", model=str(pickscore_dir), processor=str(pickscore_dir))
    ours = scorer.score(images, prompts)
    # independently: CLIPModel.forward's logits_per_image (= logit_scale.exp() * cos) on the README's inputs,
    # pixels from the torchvision-on-PIL transform, text padded to the longest prompt (not to 77)
    model = CLIPModel.from_pretrained(str(pickscore_dir)).eval()
    tf = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    tok = AutoTokenizer.from_pretrained(str(pickscore_dir))(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=torch.stack([tf(im) for im in images]), **tok).logits_per_image
    np.testing.assert_allclose(ours, logits.diagonal().numpy(), rtol=1e-5, atol=1e-4)
    assert abs(float(model.logit_scale.detach().exp()) - 100.0) < 0.01
    assert np.ptp(ours) > 0.01


def test_provenance_and_missing_prompt(pickscore_dir, images):
    scorer = build_scorer("pickscore", model=str(pickscore_dir), processor=str(pickscore_dir))
    out = scorer.score(images[:2], ["a dog", None])
    assert np.isfinite(out[0]) and np.isnan(out[1])
    prov = scorer.provenance()
    assert prov["weights"][0]["sha256"] == sha256_file(pickscore_dir / "model.safetensors")
    assert prov["config"]["max_length"] == 77 and prov["tokenizer"] == "folder"


def test_missing_weights_name_the_repo(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="yuvalkirstain/PickScore_v1"):
        build_scorer("pickscore")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        build_scorer("pickscore", model=str(tmp_path / "nope"))


def test_missing_tensor_fails_loudly(pickscore_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(pickscore_dir, bad)
    sd = load_file(bad / "model.safetensors")
    del sd["visual_projection.weight"]
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsMismatch, match="visual_projection.weight"):
        build_scorer("pickscore", model=str(bad), processor=str(bad))
