"""CLIP score and the LAION aesthetic head on one OpenAI ViT-L/14-style forward; the real head file."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from annotate.scorers import build_scorer, build_scorers
from annotate.scorers.aesthetic import KNOWN_HEADS, load_aesthetic_head
from annotate.scorers.clip_score import torchmetrics_convention
from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD
from miro.utils.config import ConfigError
from miro.utils.weights import WeightsNotFoundError, sha256_file

REAL_HEAD = Path(__file__).resolve().parents[4] / "shared/weights/laion-aesthetic/sac+logos+ava1-l14-linearMSE.pth"
REAL_HEAD = REAL_HEAD if REAL_HEAD.exists() else Path("/work/shared/weights/laion-aesthetic/sac+logos+ava1-l14-linearMSE.pth")


def _reference(clip_dir, head_file, images, prompts):
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(str(clip_dir)).eval()
    tf = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    tok = AutoTokenizer.from_pretrained(str(clip_dir))(prompts, padding=True, return_tensors="pt")
    sd = torch.load(head_file, weights_only=True)
    with torch.no_grad():
        out = model(pixel_values=torch.stack([tf(im) for im in images]), **tok)
        cos = (out.image_embeds * out.text_embeds).sum(-1)  # CLIPModel returns both L2-normalised
        e = out.image_embeds
        for j in (0, 2, 4, 6, 7):
            e = e @ sd[f"layers.{j}.weight"].T + sd[f"layers.{j}.bias"]
    return cos.numpy(), e.squeeze(-1).numpy()


def test_shared_forward_matches_independent_computation(clip_l_dir, aesthetic_head_file, images, prompts):
    cfg = {"clip_score": {"model": str(clip_l_dir)}, "aesthetic": {"clip_model": str(clip_l_dir), "head": str(aesthetic_head_file)}}
    (scorer,) = build_scorers(["clip_score", "aesthetic"], cfg)
    assert scorer.outputs == ("clip_score", "aesthetic")
    calls = []
    hook = scorer.model.vision_model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0] if i else o.last_hidden_state.shape[0]))
    out = scorer.score_dict(images, prompts)
    hook.remove()
    assert sum(calls) == len(images)  # one image forward per image for both rewards
    cos, aes = _reference(clip_l_dir, aesthetic_head_file, images, prompts)
    np.testing.assert_allclose(out["clip_score"], cos, atol=1e-5)
    np.testing.assert_allclose(out["aesthetic"], aes, rtol=1e-5, atol=1e-4)
    assert np.ptp(out["aesthetic"]) > 1e-3 and np.all(np.abs(out["clip_score"]) <= 1)
    # the single-reward scorers give the same numbers
    np.testing.assert_allclose(build_scorer("clip_score", model=str(clip_l_dir)).score(images, prompts), cos, atol=1e-5)
    aes_only = build_scorer("aesthetic", clip_model=str(clip_l_dir), head=str(aesthetic_head_file))
    assert aes_only.outputs == ("aesthetic",) and not aes_only.preprocessor().with_text
    np.testing.assert_allclose(aes_only.score(images), aes, rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError, match="score_dict"):
        scorer.score(images, prompts)


def test_missing_caption_keeps_aesthetic(clip_l_dir, aesthetic_head_file, images):
    cfg = {"clip_score": {"model": str(clip_l_dir)}, "aesthetic": {"clip_model": str(clip_l_dir), "head": str(aesthetic_head_file)}}
    (scorer,) = build_scorers(["aesthetic", "clip_score"], cfg)
    out = scorer.score_dict(images[:2], ["a cat", None])
    assert np.isfinite(out["clip_score"][0]) and np.isnan(out["clip_score"][1])
    assert np.all(np.isfinite(out["aesthetic"]))


def test_backbones_must_agree(clip_l_dir, aesthetic_head_file, tmp_path):
    cfg = {"clip_score": {"model": str(clip_l_dir)}, "aesthetic": {"clip_model": str(tmp_path), "head": str(aesthetic_head_file)}}
    with pytest.raises(ConfigError, match="share the forward"):
        build_scorers(["clip_score", "aesthetic"], cfg)


def test_missing_head_names_the_source(clip_l_dir, tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"improved-aesthetic-predictor.*rewards\.aesthetic\.head"):
        build_scorer("aesthetic", clip_model=str(clip_l_dir), head=str(tmp_path / "head.pth"))
    with pytest.raises(WeightsNotFoundError, match="openai/clip-vit-large-patch14"):
        build_scorer("clip_score")


def test_torchmetrics_convention():
    np.testing.assert_allclose(torchmetrics_convention(np.array([0.31, -0.2, np.nan])), [31.0, 0.0, np.nan])


@pytest.mark.skipif(not REAL_HEAD.exists(), reason="real LAION aesthetic head not present")
def test_real_aesthetic_head_loads_with_every_key():
    mlp, record = load_aesthetic_head(REAL_HEAD)
    assert record["sha256"] == "21dd590f3ccdc646f0d53120778b296013b096a035a2718c9cb0d511bff0f1e0" == sha256_file(REAL_HEAD)
    assert record["known_as"] == KNOWN_HEADS[record["sha256"]] and record["bytes"] == 3_714_759
    assert [m.in_features for m in mlp.layers if isinstance(m, torch.nn.Linear)] == [768, 1024, 128, 64, 16]
    # no activations: in eval mode the head is one affine map w.e + b (b ~ 5.24, |w| ~ 18.0 per the notes)
    with torch.no_grad():
        b = mlp(torch.zeros(1, 768)).item()
        w = mlp(torch.eye(768)).squeeze(-1) - b
        e = torch.nn.functional.normalize(torch.randn(5, 768, generator=torch.Generator().manual_seed(0)), dim=-1)
        np.testing.assert_allclose(mlp(e).squeeze(-1).numpy(), (e @ w + b).numpy(), atol=1e-4)
    assert abs(b - 5.24) < 0.01 and abs(float(w.norm()) - 18.0) < 0.1
