"""Image preprocessing of the reward models, written once and tested for exactness against the documented steps.

- ``center_crop_transform``: OpenAI CLIP / BLIP style (``clip.load``, ImageReward): PIL bicubic resize of the
  shorter side, centre crop, ``ToTensor``, normalise.  Equal to transformers' PIL-backend CLIP processor.
- ``hps_pad_square``: HPSv2's ``preprocess_val`` (``light_augmentation=True``): tensor bicubic resize of the
  *longer* side, zero padding to a centred square (in [0, 1] pixel space, before normalising), normalise.
  open_clip 3.x's ``image_resize_mode='longest'`` resizes the PIL image instead and differs by up to 0.11.
"""

from __future__ import annotations

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def center_crop_transform(size: int = 224, mean=OPENAI_MEAN, std=OPENAI_STD) -> T.Compose:
    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


class HPSPadSquare:
    """Picklable HPS preprocessing: RGB PIL image -> normalised ``3 x size x size`` float tensor."""

    def __init__(self, size: int = 224, mean=OPENAI_MEAN, std=OPENAI_STD):
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        x = TF.to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
        h, w = x.shape[1:]
        scale = self.size / max(h, w)
        if scale != 1.0:
            nh, nw = round(h * scale), round(w * scale)
            x = TF.resize(x, [nh, nw], interpolation=T.InterpolationMode.BICUBIC, antialias=True)
            ph, pw = self.size - nh, self.size - nw
            x = TF.pad(x, [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2], fill=0)
        return TF.normalize(x, self.mean, self.std)


