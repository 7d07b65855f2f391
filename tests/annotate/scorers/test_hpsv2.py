"""HPSv2.x: open_clip ``{'state_dict'}`` fp16 checkpoint through the production loader; exact preprocessing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from annotate.scorers import build_scorer
from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD, HPSPadSquare
from miro.utils.config import ConfigError
from miro.utils.weights import WeightsMismatch, WeightsNotFoundError, sha256_file


def reference_hps_preprocess(img: Image.Image, size: int = 224) -> torch.Tensor:
    """HPS's documented steps recomputed in float64: [0, 1] tensor, antialiased bicubic resize of the longer side
    to ``size`` (new sides rounded), zero padding centred (extra pixel right/bottom), OpenAI normalisation."""
    x = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).double() / 255.0
    h, w = x.shape[1:]
    s = size / max(h, w)
    if s != 1.0:
        nh, nw = round(h * s), round(w * s)
        x = F.interpolate(x[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)[0]
        ph, pw = size - nh, size - nw
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    mean, std = torch.tensor(OPENAI_MEAN, dtype=torch.float64), torch.tensor(OPENAI_STD, dtype=torch.float64)
    return (x - mean[:, None, None]) / std[:, None, None]


@pytest.mark.parametrize("hw", [(512, 512), (300, 400), (360, 640), (224, 224), (50, 100), (400, 300), (225, 1000), (7, 3)])
def test_preprocessing_is_exact(hw):
    rng = np.random.default_rng(sum(hw))
    img = Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    ours = HPSPadSquare(224)(img)
    ref = reference_hps_preprocess(img)
    assert ours.shape == (3, 224, 224)
    # float32 against float64 rounding only; a PIL resize, no antialiasing or an off-centre pad is > 1e-2 off
    assert (ours.double() - ref).abs().max() < 1e-4
    if hw[0] != hw[1]:  # the padding really is zero pixels (normalised), on both sides
        pad_value = -torch.tensor(OPENAI_MEAN) / torch.tensor(OPENAI_STD)
        assert torch.allclose(ours[:, 0, 0], pad_value, atol=1e-6) and torch.allclose(ours[:, -1, -1], pad_value, atol=1e-6)


def reference_hps_model(checkpoint, arch):
    """open_clip's model of ``arch`` with the checkpoint's weights (the official scorer's network), and its tokenizer."""
    import open_clip

    model = open_clip.create_model(arch)
    model.load_state_dict({k: v.float() for k, v in torch.load(checkpoint, weights_only=True)["state_dict"].items()})
    return model.eval(), open_clip.get_tokenizer(arch)


def reference_hps_scores(checkpoint, arch, images, prompts, preprocess=reference_hps_preprocess) -> np.ndarray:
    """HPS's score, cosine of the normalised image and text features, from the reference preprocessing."""
    model, tok = reference_hps_model(checkpoint, arch)
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(im).float() for im in images]), normalize=True)
        txt = model.encode_text(tok(list(prompts)), normalize=True)
    return (img * txt).sum(-1).numpy()


def test_score_is_cosine_of_open_clip_features(hps_checkpoint, tiny_open_clip_arch, images, prompts):
    scorer = build_scorer("hpsv2", checkpoint=str(hps_checkpoint), arch=tiny_open_clip_arch)
    ours = scorer.score(images, prompts)
    np.testing.assert_allclose(ours, reference_hps_scores(hps_checkpoint, tiny_open_clip_arch, images, prompts), atol=1e-5)
    assert np.all(np.abs(ours) <= 1.0) and np.ptp(ours) > 1e-3


def test_version_and_provenance(hps_checkpoint, tiny_open_clip_arch):
    s = build_scorer("hpsv2", checkpoint=str(hps_checkpoint), arch=tiny_open_clip_arch, version="v2.0")
    prov = s.provenance()
    assert prov["version"] == "v2.0" and prov["weights"][0]["sha256"] == sha256_file(hps_checkpoint)
    with pytest.raises(ConfigError, match=r"version='v3'.*v2\.0"):
        build_scorer("hpsv2", version="v3")


def test_default_checkpoint_per_version_and_missing_file():
    with pytest.raises(WeightsNotFoundError, match=r"HPS_v2\.1_compressed\.pt.*xswu/HPSv2"):
        build_scorer("hpsv2")
    with pytest.raises(WeightsNotFoundError, match=r"hf://xswu/HPSv2/HPS_v2_compressed\.pt"):
        build_scorer("hpsv2", version="v2.0")


def test_wrong_checkpoint_fails_loudly(hps_checkpoint, tiny_open_clip_arch, tmp_path):
    sd = torch.load(hps_checkpoint, weights_only=True)["state_dict"]
    sd.pop("text_projection")
    torch.save({"state_dict": sd}, tmp_path / "bad.pt")
    with pytest.raises(WeightsMismatch, match="text_projection"):
        build_scorer("hpsv2", checkpoint=str(tmp_path / "bad.pt"), arch=tiny_open_clip_arch)


def test_settings_that_change_scores():
    from annotate.scorers.registry import reward_settings

    assert reward_settings("hpsv2", {"batch_size": 3, "download": True}) == reward_settings("hpsv2") == {
        "version": "v2.1",
        "checkpoint": None,
        "arch": "ViT-H-14",
    }
    assert reward_settings("hpsv2", {"version": "v2.0"}) != reward_settings("hpsv2")
