"""ImageReward: the official .pt layout through the production loader, against an independent computation."""

import functools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from annotate.scorers import build_scorer
from annotate.scorers.imagereward import (
    REWARD_MEAN,
    REWARD_STD,
    ImageRewardPrep,
    build_tokenizer,
    default_vocab,
)
from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD
from miro.utils.weights import WeightsMismatch, WeightsNotFoundError, sha256_file
from tests.annotate.conftest import TINY_BLIP, TINY_MED


def reference_blip_preprocess(img: Image.Image, size: int = 224) -> np.ndarray:
    """The documented steps, by hand: bicubic resize of the shorter side to 224 (longer side truncated, as
    torchvision), centre crop with rounded offsets, /255, OpenAI normalisation."""
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    arr = np.asarray(img.resize((nw, nh), Image.BICUBIC), dtype=np.float64) / 255.0
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    arr = arr[top : top + size, left : left + size]
    return ((arr - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)).transpose(2, 0, 1)


@pytest.mark.parametrize("hw", [(96, 128), (300, 200), (224, 224), (180, 400), (1000, 225), (50, 51)])
def test_preprocessing_is_exact(hw):
    rng = np.random.default_rng(hw[0])
    img = Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    prep = ImageRewardPrep(build_tokenizer(default_vocab()), 224, 35)
    ours = prep(img, "x")["pixel_values"].numpy()
    assert ours.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, reference_blip_preprocess(img), atol=2e-6)


def test_tokenizer_is_blips():
    tok = build_tokenizer(default_vocab())
    assert len(tok) == 30524
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [30522, 30523]
    assert sha256_file(default_vocab()) == "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
    item = ImageRewardPrep(tok, 224, 35)(Image.new("RGB", (8, 8)), "A photo of a cat")
    ids = item["input_ids"].tolist()
    assert len(ids) == 35 and ids[:7] == [101, 1037, 6302, 1997, 1037, 4937, 102] and ids[7:] == [0] * 28  # [CLS] kept
    assert item["attention_mask"].sum() == 7


def _ln(x, sd, p, eps):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _lin(x, sd, p):
    return x @ sd[p + ".weight"].T + sd[p + ".bias"]


def _attn(q_in, kv_in, sd, p, heads, mask=None):
    b, n, d = q_in.shape
    hd = d // heads
    q = _lin(q_in, sd, p + ".self.query").view(b, n, heads, hd).transpose(1, 2)
    k = _lin(kv_in, sd, p + ".self.key").view(b, -1, heads, hd).transpose(1, 2)
    v = _lin(kv_in, sd, p + ".self.value").view(b, -1, heads, hd).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if mask is not None:
        s = s + (1.0 - mask[:, None, None, :].float()) * -10000.0  # BLIP med.py's extended mask
    ctx = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    return _ln(_lin(ctx, sd, p + ".output.dense") + q_in, sd, p + ".output.LayerNorm", 1e-12)


def reference_reward(ckpt: dict, pixel_values, input_ids, attention_mask) -> torch.Tensor:
    """ImageReward.score written out from the original modules: timm ViT + med.py BERT cross-attention + MLP."""
    import timm

    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, embed_dim=32, depth=2, num_heads=4, qkv_bias=True, num_classes=0, global_pool="", norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)
    )
    vit.load_state_dict({k[len("blip.visual_encoder.") :]: v for k, v in ckpt.items() if k.startswith("blip.visual_encoder.")})
    with torch.no_grad():
        image_embeds = vit.eval().forward_features(pixel_values)
        sd = {k[len("blip.text_encoder.") :]: v for k, v in ckpt.items() if k.startswith("blip.text_encoder.")}
        pos = torch.arange(input_ids.shape[1])
        x = sd["embeddings.word_embeddings.weight"][input_ids] + sd["embeddings.position_embeddings.weight"][pos]
        x = _ln(x, sd, "embeddings.LayerNorm", 1e-12)
        for i in range(TINY_MED["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            x = _attn(x, x, sd, p + ".attention", 4, attention_mask)
            x = _attn(x, image_embeds, sd, p + ".crossattention", 4)
            h = torch.nn.functional.gelu(_lin(x, sd, p + ".intermediate.dense"))
            x = _ln(_lin(h, sd, p + ".output.dense") + x, sd, p + ".output.LayerNorm", 1e-12)
        r = x[:, 0]
        for j in (0, 2, 4, 6, 7):  # dropout is identity at eval; no activations
            r = r @ ckpt[f"mlp.layers.{j}.weight"].T + ckpt[f"mlp.layers.{j}.bias"]
    return (r.squeeze(-1) - REWARD_MEAN) / REWARD_STD


def _scorer(files):
    ckpt, med = files
    return build_scorer("imagereward", checkpoint=str(ckpt), med_config=str(med), vision=TINY_BLIP)


def test_reward_matches_independent_computation(imagereward_files, images, prompts):
    scorer = _scorer(imagereward_files)
    ours = scorer.score(images, prompts)
    prep = scorer.preprocessor()
    items = [prep(im, p) for im, p in zip(images, prompts)]
    ckpt = torch.load(imagereward_files[0], weights_only=True)
    ref = reference_reward(ckpt, torch.stack([torch.as_tensor(reference_blip_preprocess(im), dtype=torch.float32) for im in images]),
                           torch.stack([it["input_ids"] for it in items]), torch.stack([it["attention_mask"] for it in items]))
    assert ours.dtype == np.float64 and ours.shape == (4,)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-4)
    assert np.ptp(ours) > 0.1  # not the constant reward of a degenerate head
    # one image, several prompts: the text side really cross-attends per pair
    per_prompt = scorer.score([images[0]] * 4, prompts)
    assert len(set(np.round(per_prompt, 6))) == 4
    # batch composition does not change a score
    np.testing.assert_allclose(scorer.score(images[1:3], prompts[1:3]), ours[1:3], atol=1e-5)


def test_missing_prompt_is_nan(imagereward_files, images):
    out = _scorer(imagereward_files).score(images[:2], ["a cat", None])
    assert np.isfinite(out[0]) and np.isnan(out[1])


def test_provenance(imagereward_files):
    prov = _scorer(imagereward_files).provenance()
    roles = {f["role"]: f for f in prov["weights"]}
    assert roles["checkpoint"]["sha256"] == sha256_file(imagereward_files[0])
    assert set(roles) == {"checkpoint", "med_config", "vocab"}
    assert prov["config"]["max_length"] == 35 and "transformers" in prov["packages"]


def test_missing_checkpoint_names_file_and_source(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"ImageReward\.pt.*THUDM/ImageReward"):
        build_scorer("imagereward", checkpoint=str(tmp_path / "ImageReward.pt"))
    with pytest.raises(WeightsNotFoundError, match="THUDM/ImageReward"):
        build_scorer("imagereward", checkpoint="hf://THUDM/ImageReward/ImageReward.pt")


def test_incomplete_checkpoint_fails_loudly(imagereward_files, tmp_path):
    ckpt = torch.load(imagereward_files[0], weights_only=True)
    del ckpt["blip.text_encoder.encoder.layer.1.crossattention.self.key.weight"]
    ckpt["blip.extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(WeightsMismatch, match="blip.extra.weight"):
        build_scorer("imagereward", checkpoint=str(tmp_path / "bad.pt"), med_config=str(imagereward_files[1]), vision=TINY_BLIP)
    del ckpt["blip.extra.weight"]
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(WeightsMismatch, match="crossattention.self.key.weight"):
        build_scorer("imagereward", checkpoint=str(tmp_path / "bad.pt"), med_config=str(imagereward_files[1]), vision=TINY_BLIP)
    with pytest.raises(RuntimeError, match="size mismatch"):  # a vision tower of another width does not fit
        build_scorer("imagereward", checkpoint=str(imagereward_files[0]), med_config=str(imagereward_files[1]), vision={**TINY_BLIP, "width": 64})
