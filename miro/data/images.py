"""Decoding untrusted image bytes into RGB, with one exception type that says what was wrong.

Every stage that reads shards (annotation, training, importing) goes through ``decode_image`` so a broken
file is reported the same way everywhere and never stops a job.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
ANIMATED_NOTE = "animated_first_frame"  # what the importer records for an animated image (only frame 1 is kept)
_animated_seen = [0]
DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000; larger is treated as a decompression bomb


def stable_text(text: str) -> str:
    """Error text without object addresses (PIL says "cannot identify image file <_io.BytesIO object at
    0x7f...>"), so reasons and reports are reproducible and readable."""
    return re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"<\1>", text)


class BadImage(ValueError):
    """The bytes are not a usable image; ``reason`` is a short machine-friendly tag."""

    def __init__(self, reason: str, detail: str = ""):
        detail = stable_text(detail)
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def has_alpha(img: Image.Image) -> bool:
    """Whether the image carries transparency: an alpha band, or a ``transparency`` entry (a palette or an RGB/L
    PNG with a ``tRNS`` chunk), the test transformers' ``convert_to_rgb`` uses."""
    return "A" in img.getbands() or "a" in img.getbands() or img.info.get("transparency") is not None


def to_rgb(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """The RGB image training sees: transparency composited on ``background``, 16-bit and float images rescaled
    to 8 bits, anything else through PIL's ``convert("RGB")``."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        else:
            arr = arr / hi * 255.0
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ALPHA_MODES:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, keep_mode: bool = False) -> Image.Image:
    """RGB ``PIL.Image`` from encoded bytes; raises ``BadImage`` (reasons: empty, not_an_image, too_large,
    truncated, decode_error).  Transparent images are composited on white, 16-bit and float images rescaled
    (``to_rgb``), EXIF orientation applied.  ``keep_mode=True`` returns the image as opened (its own mode, palette
    and ``transparency`` info; EXIF orientation applied) for consumers with their own conversion rules: the
    reward scorers, which follow each official package's order of operations.  An animated image (GIF, APNG,
    WebP) gives its first frame: the returned image's ``info["frames"]`` holds the frame count, and the first one
    in a process is logged (a warning naming the count; later ones at debug level, so a folder of GIFs does not
    flood the log)."""
    if not data:
        raise BadImage("empty", "zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise BadImage("too_large", f"{w}x{h} exceeds {max_pixels} pixels")
            if w < 1 or h < 1:
                raise BadImage("decode_error", f"degenerate size {w}x{h}")
            img.load()
    except BadImage:
        raise
    except UnidentifiedImageError as err:
        raise BadImage("not_an_image", str(err)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage("too_large", str(err)) from None
    except OSError as err:  # PIL reports truncation as OSError
        reason = "truncated" if "truncat" in str(err).lower() else "decode_error"
        raise BadImage(reason, str(err)) from None
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad image, never a crash
        raise BadImage("decode_error", f"{type(err).__name__}: {err}") from None
    frames = int(getattr(img, "n_frames", 1) or 1) if getattr(img, "is_animated", False) else 1
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the image
        pass
    out = img if keep_mode else to_rgb(img)
    if frames > 1:
        out.info["frames"] = frames
        _animated_seen[0] += 1
        (log.warning if _animated_seen[0] == 1 else log.debug)(
            "animated image (%d frames): only the first frame is used (reported once per process)", frames)
    return out


class BadCaption(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def decode_text(data: bytes | None) -> str:
    """Caption bytes as stripped UTF-8 text; raises ``BadCaption`` (missing_caption, caption_not_utf8, empty_caption)."""
    if data is None:
        raise BadCaption("missing_caption", "no .txt member")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        raise BadCaption("caption_not_utf8", str(err)) from None
    if not text:
        raise BadCaption("empty_caption", "the .txt member is empty")
    return text


def image_member(members: Mapping[str, bytes]) -> bytes:
    """The bytes of a sample's image member (the first extension of ``IMAGE_EXTS`` present);
    ``BadImage("missing_image")`` when the sample has none."""
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    if ext is None:
        raise BadImage("missing_image", "no image member")
    return members[ext]


def decode_sample(members: Mapping[str, bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str]:
    """(RGB image, caption) of a sample's members; ``BadImage`` / ``BadCaption`` name what is unusable."""
    return decode_image(image_member(members), max_pixels), decode_text(members.get("txt"))
