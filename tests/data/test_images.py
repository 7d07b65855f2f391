import io

import numpy as np
import pytest
from PIL import Image

from miro.data.images import BadCaption, BadImage, decode_image, decode_sample, decode_text


def _encode(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgb_roundtrip():
    arr = np.random.default_rng(0).integers(0, 255, (12, 17, 3), dtype=np.uint8)
    out = decode_image(_encode(Image.fromarray(arr)))
    assert out.mode == "RGB" and out.size == (17, 12)
    assert np.array_equal(np.asarray(out), arr)


@pytest.mark.parametrize(
    "make,expected_pixel",
    [
        (lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (lambda: Image.new("LA", (4, 4), (0, 0)), (255, 255, 255)),  # fully transparent -> white
        (lambda: Image.new("RGBA", (4, 4), (0, 0, 255, 255)), (0, 0, 255)),
        (lambda: Image.new("L", (4, 4), 128), (128, 128, 128)),
    ],
)
def test_modes_become_rgb(make, expected_pixel):
    img = make()
    fmt = "JPEG" if img.mode == "CMYK" else "PNG"
    out = decode_image(_encode(img, fmt, **({"quality": 100} if fmt == "JPEG" else {})))
    assert out.mode == "RGB"
    assert np.abs(np.asarray(out)[0, 0].astype(int) - expected_pixel).max() <= 2


def test_palette_and_16bit():
    p = Image.new("P", (4, 4))
    p.putpalette([10, 20, 30] * 256)
    assert decode_image(_encode(p)).getpixel((0, 0)) == (10, 20, 30)
    arr16 = np.full((4, 4), 65535, dtype=np.uint16)
    out = decode_image(_encode(Image.fromarray(arr16)))
    assert out.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"this is text, not a picture", "not_an_image"),
    ],
)
def test_bad_bytes(data, reason):
    with pytest.raises(BadImage) as e:
        decode_image(data)
    assert e.value.reason == reason


def test_truncated_and_huge():
    full = _encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(BadImage) as e:
        decode_image(full[: len(full) // 2])
    assert e.value.reason in ("truncated", "decode_error")
    big = _encode(Image.new("L", (3000, 3000)))
    with pytest.raises(BadImage) as e:
        decode_image(big, max_pixels=1_000_000)
    assert e.value.reason == "too_large"


def test_captions():
    assert decode_text(b" a red circle \n") == "a red circle"
    for data, reason in [(None, "missing_caption"), (b"\xff\xfe\xfa", "caption_not_utf8"), (b"  ", "empty_caption")]:
        with pytest.raises(BadCaption) as e:
            decode_text(data)
        assert e.value.reason == reason


def test_decode_sample_takes_the_first_image_extension_and_the_caption():
    red, blue = _encode(Image.new("RGB", (2, 2), (255, 0, 0))), _encode(Image.new("RGB", (2, 2), (0, 0, 255)))
    img, caption = decode_sample({"txt": b"a red square", "jpeg": blue, "png": red})
    assert img.getpixel((0, 0)) == (255, 0, 0) and caption == "a red square"
    with pytest.raises(BadImage) as err:
        decode_sample({"txt": b"no image", "json": b"{}"})
    assert err.value.reason == "missing_image"
    with pytest.raises(BadCaption):
        decode_sample({"png": red})
