"""Tiny random models of the real reward architectures, saved in the original on-disk formats."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from annotate.scorers.transforms import OPENAI_MEAN, OPENAI_STD


def photo_like(seed: int, h: int = 96, w: int = 128) -> Image.Image:
    """A textured, colourful test image: gradient background plus random filled shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (h + w) * 255], -1)
    img = Image.fromarray(base.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        x1, y1 = x0 + rng.integers(6, w // 2), y0 + rng.integers(6, h // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    """Images of several aspect ratios, including one smaller than 224 and one exactly 224."""
    return [photo_like(0, 96, 128), photo_like(1, 300, 200), photo_like(2, 224, 224), photo_like(3, 180, 400)]


PROMPTS = ["a red circle and a blue square", "a photo of a cat", "abstract shapes on a gradient", "two stars!!"]


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return list(PROMPTS)


def write_clip_processor(folder, max_length: int = 77) -> None:
    """The laion / OpenAI processor files: shortest side 224 bicubic, crop 224, OpenAI normalisation."""
    from transformers import CLIPImageProcessor, CLIPProcessor

    from miro.utils.clip_tokenizer import load_clip_tokenizer

    ip = CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3, image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD)
    )
    CLIPProcessor(image_processor=ip, tokenizer=load_clip_tokenizer(max_length)).save_pretrained(str(folder))


def tiny_hf_clip(folder, hidden_act: str = "gelu", projection_dim: int = 16, seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act),
        vision_config=dict(image_size=224, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, hidden_act=hidden_act),
        projection_dim=projection_dim,
        logit_scale_init_value=4.6052,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(str(folder))
    write_clip_processor(folder)
    return folder


@pytest.fixture(scope="session")
def pickscore_dir(tmp_path_factory):
    """PickScore-style HF folder (CLIPModel + laion processor + tokenizer files), GELU like ViT-H/14."""
    return tiny_hf_clip(tmp_path_factory.mktemp("pickscore"), "gelu", 16, seed=1)


@pytest.fixture(scope="session")
def clip_l_dir(tmp_path_factory):
    """openai/clip-vit-large-patch14-style HF folder: QuickGELU, 768-d projection (fits the aesthetic head)."""
    return tiny_hf_clip(tmp_path_factory.mktemp("clip_l"), "quick_gelu", 768, seed=2)


@pytest.fixture(scope="session")
def aesthetic_head_file(tmp_path_factory):
    """A random head in the improved-aesthetic-predictor ``.pth`` layout (keys layers.{0,2,4,6,7})."""
    from annotate.scorers.heads import MLPHead

    torch.manual_seed(3)
    mlp = MLPHead(768)
    for p in mlp.parameters():
        torch.nn.init.normal_(p, std=0.2)
    path = tmp_path_factory.mktemp("aesthetic") / "head.pth"
    torch.save(mlp.state_dict(), path)
    return path


TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 8, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_open_clip_arch(tmp_path_factory):
    """A tiny open_clip config with ViT-H-14's keys, registered under the name ``tiny-ViT-H-14-test``."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_cfg")
    (folder / "tiny-ViT-H-14-test.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(str(folder / "tiny-ViT-H-14-test.json"))
    return "tiny-ViT-H-14-test"


@pytest.fixture(scope="session")
def hps_checkpoint(tmp_path_factory, tiny_open_clip_arch):
    """The HPS layout: ``{'state_dict': fp16 tensors}`` with open_clip key names."""
    import open_clip

    torch.manual_seed(4)
    model = open_clip.create_model(tiny_open_clip_arch)
    path = tmp_path_factory.mktemp("hps") / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {k: v.half() for k, v in model.state_dict().items()}}, path)
    return path


TINY_BLIP = {"width": 32, "layers": 2, "heads": 4, "mlp_dim": 128, "patch_size": 16, "image_size": 224}
TINY_MED = {
    "hidden_act": "gelu",
    "hidden_size": 32,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "vocab_size": 30524,
    "encoder_width": 768,
    "add_cross_attention": True,
}


@pytest.fixture(scope="session")
def imagereward_files(tmp_path_factory):
    """``ImageReward.pt`` with the original key names, plus a tiny ``med_config.json``.

    The vision tower is a timm ViT (BLIP's ViT has timm's key names); the text encoder tensors get BLIP's
    ``med.py`` names; the MLP is initialised with a large std so the reward is not constant.
    """
    import timm
    from transformers import BlipTextConfig
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    folder = tmp_path_factory.mktemp("imagereward")
    torch.manual_seed(5)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=224, patch_size=16, embed_dim=32, depth=2, num_heads=4, mlp_ratio=4.0, qkv_bias=True, num_classes=0, global_pool="", norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)
    )
    text = BlipTextModel(BlipTextConfig(vocab_size=30524, hidden_size=32, encoder_hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4), add_pooling_layer=False)
    sd = {}
    for k, v in vit.state_dict().items():
        sd[f"blip.visual_encoder.{k}"] = torch.randn_like(v) * 0.1 + (1.0 if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight" else 0.0)
    for k, v in text.state_dict().items():
        sd[f"blip.text_encoder.{k}"] = torch.randn_like(v) * 0.1 + (1.0 if k.endswith("LayerNorm.weight") else 0.0)
    sd["blip.text_encoder.embeddings.position_ids"] = torch.arange(512)[None]
    sd["blip.vision_proj.weight"], sd["blip.vision_proj.bias"] = torch.randn(256, 32), torch.randn(256)
    sd["blip.text_proj.weight"], sd["blip.text_proj.bias"] = torch.randn(256, 32), torch.randn(256)
    for j, (a, b) in zip((0, 2, 4, 6, 7), [(32, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]):
        sd[f"mlp.layers.{j}.weight"] = torch.randn(b, a) / a**0.5
        sd[f"mlp.layers.{j}.bias"] = torch.randn(b) * 0.1
    torch.save(sd, folder / "ImageReward.pt")
    (folder / "med_config.json").write_text(json.dumps(TINY_MED))
    return folder / "ImageReward.pt", folder / "med_config.json"


# --- shards for the job tests ------------------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header claims width x height pixels (never decodable; a decompression-bomb stand-in)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def bad_samples() -> dict[str, tuple[dict, str]]:
    """key -> (members, expected status) covering every kind of bad input the job must survive."""
    good = photo_like(50, 40, 56)
    jpg = encode(good, "JPEG", quality=90)
    arr16 = (np.arange(30 * 20, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    pal = good.convert("P")
    return {
        "a00good": ({"png": encode(good), "txt": b"a good sample"}, "ok"),
        "a01jpg": ({"jpg": jpg, "txt": b"a jpeg"}, "ok"),
        "a02truncated": ({"jpg": jpg[: len(jpg) // 2], "txt": b"cut in half"}, "truncated"),
        "a03zero": ({"png": b"", "txt": b"zero bytes"}, "empty"),
        "a04text": ({"png": b"this is not a picture at all", "txt": b"not an image"}, "not_an_image"),
        "a05cmyk": ({"jpg": encode(good.convert("CMYK"), "JPEG", quality=95), "txt": b"cmyk"}, "ok"),
        "a06la": ({"png": encode(good.convert("LA")), "txt": b"grey alpha"}, "alpha"),
        "a07p": ({"png": encode(pal), "txt": b"palette"}, "ok"),
        "a08i16": ({"png": encode(Image.fromarray(arr16)), "txt": b"16 bit"}, "ok"),
        "a09bomb": ({"png": png_bomb(), "txt": b"huge"}, "too_large"),
        "a10nocap": ({"png": encode(good)}, "missing_caption"),
        "a11latin1": ({"png": encode(good), "txt": "caf\u00e9 cr\u00e8me".encode("latin-1")}, "caption_not_utf8"),
        "a12emptycap": ({"png": encode(good), "txt": b"  \n"}, "empty_caption"),
        "a13noimage": ({"txt": b"caption without an image"}, "missing_image"),
        "a14both": ({"jpg": jpg[:100]}, "truncated;missing_caption"),
    }


def write_good_shards(folder, n_shards: int, per_shard: int, name: str = "ds", size=(48, 64), seed: int = 0) -> list:
    from miro.data.shards import ShardWriter

    rng = np.random.default_rng(seed)
    with ShardWriter(folder, name, maxcount=per_shard) as w:
        for i in range(n_shards * per_shard):
            img = photo_like(int(rng.integers(1 << 30)), *size)
            w.write(f"s{i:05d}", {"png": encode(img), "txt": f"sample {i} with shapes"})
    return sorted(folder.glob(f"{name}-*.tar"))
