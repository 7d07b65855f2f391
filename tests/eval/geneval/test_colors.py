import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from miro.contracts.geneval_rules import COLORS
from miro.eval.geneval.colors import (
    BACKGROUND,
    ColorClassifier,
    ColorModelUnavailable,
    color_templates,
    composite_crop,
)
from tests.eval.tiny_models import save_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    return save_tiny_clip(root / "tiny_clip.pt", root / "cfgs")


@pytest.fixture(scope="module")
def classifier(tiny_clip):
    name, weights = tiny_clip
    return ColorClassifier.load(name, pretrained=str(weights), batch_size=3)


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), dtype=bool)
    mask[10:30, 20:50] = rng.random((20, 30)) > 0.3
    return Image.fromarray(img), mask


def test_templates_are_genevals():
    assert [t.format(c="red") for t in color_templates("fire hydrant")] == [
        "a photo of a red fire hydrant",
        "a photo of a red-colored fire hydrant",
        "a photo of a red object",
    ]


def test_composite_crop_is_mask_over_grey_cropped_to_box():
    image, mask = _scene()
    det = {"class": "cup", "score": 0.9, "box": [20.0, 10.0, 50.0, 30.0], "mask": mask, "color": None}
    out = np.asarray(composite_crop(image, det))
    expected = np.where(mask[..., None], np.asarray(image), np.array([0x99, 0x99, 0x99], dtype=np.uint8))[10:30, 20:50]
    assert out.shape == (20, 30, 3)
    assert np.array_equal(out, expected)
    # No mask: just the crop; an empty box keeps the whole composited image.
    assert composite_crop(image, {**det, "mask": None}).size == (30, 20)
    assert composite_crop(image, {**det, "box": [0, 0, 0, 0]}).size == (64, 48)
    with pytest.raises(ValueError, match="mask shape"):
        composite_crop(image, {**det, "mask": mask[:10]})


def test_loaded_model_uses_quick_gelu(classifier, tiny_clip, tmp_path):
    acts = {type(m).__name__ for m in classifier.model.modules()}
    assert "QuickGELU" in acts and "GELU" not in acts
    # A config without quick_gelu still gets it: OpenAI weights need QuickGELU (open_clip 3.x gotcha).
    name, weights = tiny_clip
    cfg = open_clip.get_model_config(name).copy()
    cfg.pop("quick_gelu")
    path = tmp_path / "tiny-plain-gelu-test.json"
    path.write_text(__import__("json").dumps(cfg))
    open_clip.add_model_config(str(path))
    forced = ColorClassifier.load("tiny-plain-gelu-test", pretrained=str(weights))
    assert "QuickGELU" in {type(m).__name__ for m in forced.model.modules()}


def test_zero_shot_head_matches_independent_computation(classifier, tiny_clip):
    name, _ = tiny_clip
    tokenizer = open_clip.get_tokenizer(name)
    model = classifier.model
    cols = []
    with torch.no_grad():
        for color in COLORS:
            texts = [f"a photo of a {color} bench", f"a photo of a {color}-colored bench", f"a photo of a {color} object"]
            e = model.encode_text(tokenizer(texts))
            e = e / e.norm(dim=-1, keepdim=True)
            m = e.mean(0)
            cols.append(m / m.norm())
    expected = torch.stack(cols, 1)
    head = classifier.head("bench")
    assert head.shape == (16, 10)
    assert torch.allclose(head, expected, atol=1e-6)
    assert torch.allclose(head.norm(dim=0), torch.ones(10), atol=1e-6)


def test_prediction_matches_independent_computation_and_batching(classifier):
    scenes = [_scene(s) for s in range(2)]
    requests = []
    for image, mask in scenes:
        dets = [
            {"class": "cup", "score": 0.9, "box": [20.0, 10.0, 50.0, 30.0], "mask": mask, "color": None},
            {"class": "cup", "score": 0.8, "box": [0.0, 0.0, 64.0, 48.0], "mask": None, "color": None},
        ]
        requests.append((image, dets, "cup"))
    got = classifier.classify_many(requests)  # 4 crops in batches of 3
    head = classifier.head("cup")
    for (image, dets, _), colors in zip(requests, got):
        assert colors == classifier.classify(image, dets, "cup")
        for det, color in zip(dets, colors):
            arr = np.asarray(image)
            if det["mask"] is not None:
                arr = np.where(det["mask"][..., None], arr, np.uint8(0x99))
            x0, y0, x1, y1 = (int(v) for v in det["box"])
            crop = Image.fromarray(np.ascontiguousarray(arr[y0:y1, x0:x1]))
            with torch.no_grad():
                f = classifier.model.encode_image(classifier.preprocess(crop)[None])
            f = f / f.norm(dim=-1, keepdim=True)
            assert color == COLORS[int((f @ head).argmax())]
    assert BACKGROUND == "#999999"


def test_missing_weights_are_a_clear_error(tmp_path, tiny_clip):
    with pytest.raises(ColorModelUnavailable, match="OpenAI CLIP ViT-L/14"):
        ColorClassifier.load(tiny_clip[0], pretrained=str(tmp_path / "missing.bin"))
    with pytest.raises(ColorModelUnavailable, match="HF|Hugging Face"):
        ColorClassifier.load(tiny_clip[0], pretrained="openai")  # no such tag for this config
