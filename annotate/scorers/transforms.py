"""Image preprocessing of the reward models, written once and tested for exactness against the documented steps.

Each transform takes the image as opened (any PIL mode) and follows its official package's order of operations,
because the order changes the numbers: PIL resizes ``P`` and ``1`` images with nearest neighbour whatever filter
is asked, and ``RGBA``/``LA`` premultiplied by alpha.

- ``center_crop_transform``: OpenAI CLIP / BLIP (``clip.load``, ImageReward's ``_transform``): PIL bicubic
  resize of the shorter side and centre crop *in the image's own mode*, then ``convert("RGB")`` (alpha dropped,
  not composited), ``ToTensor``, normalise.
- ``HPSPadSquare``: HPSv2's ``preprocess_val`` (``light_augmentation=True``): ``convert("RGB")`` first (the
  official keeps RGBA as four channels and the model then fails; here alpha is dropped like every other mode's),
  tensor bicubic resize of the *longer* side, zero padding to a centred square (in [0, 1] pixel space, before
  normalising), normalise.  An image whose longer side is already ``size`` is padded too (the official skips
  the padding with the resize and the model fails on the non-square tensor), and a side that rounds to 0
  becomes 1 pixel (the official fails on extreme aspect ratios such as 1 x 500).  open_clip 3.x's
  ``image_resize_mode='longest'`` resizes the PIL image instead and differs by up to 0.11.
"""

from __future__ import annotations

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def convert_rgb(image: Image.Image) -> Image.Image:
    """PIL's ``convert("RGB")``: alpha dropped (not composited), palette looked up, CMYK and 16-bit as PIL does.

    PIL keeps a palette's transparent colour as ``info["transparency"]`` of the RGB result, and transformers 5's
    CLIP processor would composite that colour on white; it is removed (the pixels are PIL's)."""
    out = image if image.mode == "RGB" else image.convert("RGB")
    if out.info.get("transparency") is not None:
        out = out.copy() if out is image else out
        del out.info["transparency"]
    return out


def center_crop_geometry(size: int = 224, crop: int | None = None) -> T.Compose:
    """The geometric half of ``center_crop_transform``: resize and crop in the image's own mode, then RGB."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(crop or size), convert_rgb])


def center_crop_transform(size: int = 224, mean=OPENAI_MEAN, std=OPENAI_STD) -> T.Compose:
    return T.Compose([center_crop_geometry(size), T.ToTensor(), T.Normalize(mean, std)])


class HPSPadSquare:
    """Picklable HPS preprocessing: PIL image (any mode) -> normalised ``3 x size x size`` float tensor."""

    def __init__(self, size: int = 224, mean=OPENAI_MEAN, std=OPENAI_STD):
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        x = TF.to_tensor(convert_rgb(image))
        h, w = x.shape[1:]
        scale = self.size / max(h, w)
        nh, nw = h, w
        if scale != 1.0:
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            x = TF.resize(x, [nh, nw], interpolation=T.InterpolationMode.BICUBIC, antialias=True)
        if (nh, nw) != (self.size, self.size):
            ph, pw = self.size - nh, self.size - nw
            x = TF.pad(x, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
        return TF.normalize(x, self.mean, self.std)


