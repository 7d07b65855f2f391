"""Every scorer on every PIL mode, as the file opens, against an independent implementation of its official
package's order of operations (issue #12); HPSv2's already-224 images; empty captions.

The references below are the official steps written out with plain PIL / numpy / torch calls:

- ImageReward (``ImageReward._transform``) and OpenAI CLIP (``clip.load``, used by CLIP score and the aesthetic
  predictor): bicubic resize of the shorter side and centre crop *in the image's own mode*, ``convert("RGB")``
  last, /255, OpenAI normalisation.
- PickScore (transformers 4.27.3 ``CLIPImageProcessor``): ``convert("RGB")`` first, then the same resize / crop.
- HPSv2 (``preprocess_val``): ``convert("RGB")`` first except RGBA (kept as 4 channels), [0, 1] tensor,
  antialiased bicubic resize of the longer side, centred zero padding, normalisation of the first 3 channels.
  The model fails on the 4-channel tensor; the project's fix-up is that tensor without its alpha channel.
- Weight-free rewards: the image training sees, ``miro.data.images.to_rgb``.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from annotate.scorers import build_scorer, build_scorers
from annotate.scorers.hpsv2 import HPSPrep
from annotate.scorers.imagereward import ImageRewardPrep, build_tokenizer, default_vocab
from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD, HPSPadSquare
from miro.data.images import decode_image, has_alpha, to_rgb
from tests.annotate.conftest import TINY_BLIP, encode, photo_like
from tests.annotate.scorers.test_hpsv2 import (
    reference_hps_model,
    reference_hps_preprocess,
    reference_hps_scores,
)
from tests.annotate.scorers.test_imagereward import reference_reward

MODES = ["RGB", "L", "P", "P+transparency", "LA", "RGBA", "1", "I;16", "CMYK"]
ALPHA_MODES = {"P+transparency", "LA", "RGBA"}


def as_opened(mode: str, h: int = 110, w: int = 150, seed: int = 7) -> Image.Image:
    """A test image in ``mode`` written to a file and opened again through the annotation decode path."""
    rgb = photo_like(seed, h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = Image.fromarray(((xx * 7 + yy * 3) % 256).astype(np.uint8))  # a spatially varying alpha
    if mode == "RGBA":
        img = rgb.copy()
        img.putalpha(alpha)
    elif mode == "LA":
        img = rgb.convert("L")
        img.putalpha(alpha)
        img = img.convert("LA")
    elif mode == "P+transparency":
        img = rgb.convert("P")
        img.info["transparency"] = int(np.asarray(img)[0, 0])
    elif mode == "I;16":
        img = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 3).astype(np.uint16))  # 0..765
    else:
        img = rgb.convert(mode)
    data = encode(img, "JPEG", quality=95) if mode == "CMYK" else encode(img, "PNG", **({"transparency": img.info["transparency"]} if "transparency" in img.info else {}))
    out = decode_image(data, keep_mode=True)
    assert out.mode == ("P" if mode == "P+transparency" else mode)
    assert has_alpha(out) == (mode in ALPHA_MODES)
    return out


@pytest.fixture(scope="module")
def mode_images() -> dict[str, Image.Image]:
    return {m: as_opened(m) for m in MODES}


def _normalise(arr: np.ndarray) -> np.ndarray:
    return ((arr - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)).transpose(2, 0, 1)


def _resize_crop(img: Image.Image, size: int = 224) -> Image.Image:
    """torchvision ``Resize(size)`` + ``CenterCrop(size)`` on a PIL image: shorter side to ``size`` (longer side
    truncated), PIL bicubic (PIL itself falls back to nearest for P and 1, premultiplies RGBA and LA), crop
    offsets rounded."""
    w, h = img.size
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def openai_reference(img: Image.Image) -> np.ndarray:
    """ImageReward / ``clip.load``: geometry in the image's own mode, RGB last."""
    return _normalise(np.asarray(_resize_crop(img).convert("RGB"), dtype=np.float64) / 255.0)


def pickscore_reference(img: Image.Image) -> np.ndarray:
    """transformers 4.27.3's CLIP processor: RGB first (PIL ``convert``, alpha dropped), then the geometry."""
    return _normalise(np.asarray(_resize_crop(img.convert("RGB")), dtype=np.float64) / 255.0)


def hps_reference(img: Image.Image, size: int = 224) -> torch.Tensor:
    """HPSv2's ``preprocess_val`` in float64; for RGBA the official 4-channel tensor less its alpha channel, which
    is the RGB conversion's tensor (PIL drops alpha without compositing; the resize treats channels apart)."""
    return reference_hps_preprocess(img, size)


# --- preprocessing, per mode per scorer --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_imagereward_preprocessing_per_mode(mode, mode_images):
    img = mode_images[mode]
    ours = ImageRewardPrep(build_tokenizer(default_vocab()), 224, 35)(img, "x")["pixel_values"].numpy()
    np.testing.assert_allclose(ours, openai_reference(img), atol=2e-6)
    if mode in ("P", "P+transparency", "LA", "RGBA", "1"):  # the order matters for these modes (issue #12)
        assert np.abs(openai_reference(img.convert("RGB")) - ours).max() > 1e-2


@pytest.mark.parametrize("mode", MODES)
def test_hpsv2_preprocessing_per_mode(mode, mode_images):
    img = mode_images[mode]
    ours = HPSPadSquare(224)(img)
    assert ours.shape == (3, 224, 224)
    assert (ours.double() - hps_reference(img)).abs().max() < 1e-4


@pytest.mark.parametrize("mode", MODES)
def test_pickscore_preprocessing_per_mode(mode, mode_images, pickscore_dir):
    img = mode_images[mode]
    scorer = build_scorer("pickscore", model=str(pickscore_dir), processor=str(pickscore_dir))
    ours = scorer.preprocessor()(img, "x")["pixel_values"].numpy()
    np.testing.assert_allclose(ours, pickscore_reference(img), atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_clip_l_preprocessing_per_mode(mode, mode_images, clip_l_dir, aesthetic_head_file):
    img = mode_images[mode]
    cfg = {"clip_score": {"model": str(clip_l_dir)}, "aesthetic": {"clip_model": str(clip_l_dir), "head": str(aesthetic_head_file)}}
    (scorer,) = build_scorers(["clip_score", "aesthetic"], cfg)
    ours = scorer.preprocessor()(img, "x")["pixel_values"].numpy()
    np.testing.assert_allclose(ours, openai_reference(img), atol=2e-6)


@pytest.mark.parametrize("mode", MODES)
def test_weight_free_rewards_per_mode_measure_the_training_view(mode, mode_images):
    img = mode_images[mode]
    names = ["sharpness", "low_noise", "colorfulness", "contrast"]
    (scorer,) = build_scorers(names)
    ours, ref = scorer.score_dict([img]), scorer.score_dict([to_rgb(img)])
    for n in names:
        assert np.isfinite(ours[n][0]) and ours[n][0] == ref[n][0], (n, mode)
    if mode in ALPHA_MODES:  # composited on white, as training decodes it: not the dropped-alpha colours
        assert to_rgb(img).tobytes() != img.convert("RGB").tobytes()


# --- scores ------------------------------------------------------------------------------------------------------


def test_imagereward_scores_per_mode_match_the_official_order(imagereward_files, mode_images):
    ckpt_path, med = imagereward_files
    scorer = build_scorer("imagereward", checkpoint=str(ckpt_path), med_config=str(med), vision=TINY_BLIP)
    imgs = [mode_images[m] for m in MODES]
    prompt = "a red circle and a blue square"
    ours = scorer.score(imgs, [prompt] * len(imgs))
    items = [scorer.preprocessor()(im, prompt) for im in imgs]
    ckpt = torch.load(ckpt_path, weights_only=True)
    ref = reference_reward(ckpt, torch.stack([torch.as_tensor(openai_reference(im), dtype=torch.float32) for im in imgs]),
                           torch.stack([it["input_ids"] for it in items]), torch.stack([it["attention_mask"] for it in items]))
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4)
    assert np.all(np.isfinite(ours))


def test_hpsv2_scores_per_mode_and_rgba_fixup(hps_checkpoint, tiny_open_clip_arch, mode_images):
    scorer = build_scorer("hpsv2", checkpoint=str(hps_checkpoint), arch=tiny_open_clip_arch)
    imgs = [mode_images[m] for m in MODES]
    ours = scorer.score(imgs, ["a photo"] * len(imgs))
    ref = reference_hps_scores(hps_checkpoint, tiny_open_clip_arch, imgs, ["a photo"] * len(imgs), hps_reference)
    ref_model, _ = reference_hps_model(hps_checkpoint, tiny_open_clip_arch)
    with torch.no_grad(), pytest.raises(RuntimeError):  # what the official package does with RGBA: the model fails
        rgba = torch.from_numpy(np.array(mode_images["RGBA"].resize((224, 224)))).permute(2, 0, 1).float()[None] / 255
        ref_model.encode_image(rgba)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


# --- HPSv2 on images whose longer side is already 224 ------------------------------------------------------------


@pytest.mark.parametrize("hw", [(160, 224), (224, 160), (224, 1), (1, 224), (224, 223)])
def test_hps_pads_an_image_whose_longer_side_is_already_224(hw):
    rng = np.random.default_rng(sum(hw))
    img = Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    ours = HPSPadSquare(224)(img)
    assert ours.shape == (3, 224, 224)
    # equal to the official transform of the image padded to a square by hand (no resize: the official path)
    h, w = hw
    canvas = Image.new("RGB", (224, 224))
    canvas.paste(img, ((224 - w) // 2, (224 - h) // 2))
    assert (ours.double() - hps_reference(canvas)).abs().max() < 1e-6


def test_hps_extreme_aspect_ratio_keeps_one_pixel():
    img = Image.fromarray(np.full((1, 500, 3), 200, np.uint8))  # the official rounds the height to 0 and fails
    x = HPSPadSquare(224)(img)
    assert x.shape == (3, 224, 224) and torch.isfinite(x).all()


# --- empty captions: the official scorers score "" ----------------------------------------------------------------


def test_empty_caption_tokens_are_the_officials(hps_checkpoint, tiny_open_clip_arch):
    import open_clip

    tok = build_tokenizer(default_vocab())
    item = ImageRewardPrep(tok, 224, 35)(Image.new("RGB", (8, 8)), "")
    assert item["input_ids"].tolist()[:3] == [101, 102, 0] and int(item["attention_mask"].sum()) == 2 and bool(item["has_prompt"])
    hps = HPSPrep(open_clip.get_tokenizer(tiny_open_clip_arch), 224)(Image.new("RGB", (8, 8)), "")
    assert hps["input_ids"].tolist()[:3] == [49406, 49407, 0] and bool(hps["has_prompt"])


def test_empty_caption_scores_are_finite(imagereward_files, hps_checkpoint, tiny_open_clip_arch, pickscore_dir, clip_l_dir):
    ckpt, med = imagereward_files
    scorers = [
        build_scorer("imagereward", checkpoint=str(ckpt), med_config=str(med), vision=TINY_BLIP),
        build_scorer("hpsv2", checkpoint=str(hps_checkpoint), arch=tiny_open_clip_arch),
        build_scorer("pickscore", model=str(pickscore_dir), processor=str(pickscore_dir)),
        build_scorer("clip_score", model=str(clip_l_dir)),
    ]
    img = photo_like(3, 64, 80)
    for s in scorers:
        out = s.score([img, img], ["", None])
        assert np.isfinite(out[0]) and np.isnan(out[1]), s.name


def test_png_roundtrip_keeps_what_the_official_sees():
    """decode_image(keep_mode=True) hands over the file's own mode and transparency; the default is unchanged."""
    p = photo_like(1, 20, 30).convert("P")
    data = encode(p, "PNG", transparency=3)
    kept = decode_image(data, keep_mode=True)
    assert kept.mode == "P" and kept.info.get("transparency") == 3
    assert decode_image(data).mode == "RGB"
    assert decode_image(data).tobytes() == to_rgb(Image.open(io.BytesIO(data))).tobytes()
