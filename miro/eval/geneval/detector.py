"""GenEval's object detector without mmcv: transformers Mask2Former with mmdet's test-time processing.

GenEval runs mmdet 2.x ``inference_detector`` with ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``.  This
module reproduces that path on a ``Mask2FormerForUniversalSegmentation`` checkpoint:

- pre-processing (mmdet test pipeline): keep-ratio resize into (1333, 800) with mmcv's size rounding and
  bilinear interpolation on the uint8 image, normalisation with mean (123.675, 116.28, 103.53) and std
  (58.395, 57.12, 57.375) on 0..255 RGB, zero padding on the right and bottom to a multiple of 32;
- post-processing (``MaskFormerFusionHead.instance_postprocess`` with ``max_per_image=100``): softmax over
  the classes without the no-object column, top 100 over queries x classes, mask logits upsampled to the
  padded input, padding cropped, resized to the original image, thresholded at > 0; score = class
  probability x mean sigmoid inside the mask; box = the mask's extent ``[x0, y0, x1 + 1, y1 + 1]``.

transformers' own ``post_process_instance_segmentation`` differs (fixed 384 x 384 upsampling, no padding
crop), so it is not used, and neither is the checkpoint's image processor (its 384 x 384 resize is not
mmdet's; its mean/std equal mmdet's on the 0..1 scale).

Only images of the same size share a batch, so padding (and hence every output) is what a batch of one
gives, as in GenEval.  ``score_floor`` skips the mask work for pairs whose class probability is at most the
floor: the detection score is class probability x a mean of sigmoids <= 1, so no detection above the floor
is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from miro.eval.geneval.prompts import GENEVAL_CLASSES
from miro.utils.weights import WeightsNotFoundError

log = logging.getLogger(__name__)

MMDET_MEAN = (123.675, 116.28, 103.53)
MMDET_STD = (58.395, 57.12, 57.375)
TEST_SCALE = (1333, 800)  # (long edge, short edge) limits of mmdet's keep-ratio Resize
SIZE_DIVISOR = 32
MAX_PER_IMAGE = 100
HF_CHECKPOINT = "facebook/mask2former-swin-small-coco-instance"

MISSING_CHECKPOINT_HELP = (
    "GenEval's detector needs a Mask2Former checkpoint in transformers format.  Download "
    f"{HF_CHECKPOINT} (e.g. `huggingface-cli download {HF_CHECKPOINT} --local-dir DIR`) and pass that folder.  "
    "Caveat: it is the Detectron2 Mask2Former Swin-S COCO run converted to transformers, not the mmdet "
    "checkpoint GenEval used (mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco), so scores are close to but not "
    "bit-identical with official GenEval numbers."
)


class DetectorUnavailable(WeightsNotFoundError):
    """The detector's checkpoint is not on disk."""


def rescale_size(width: int, height: int, scale: tuple[int, int] = TEST_SCALE) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest keep-ratio size inside ``scale`` (long, short), rounded half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def preprocess(
    image: Image.Image, scale: tuple[int, int] = TEST_SCALE, size_divisor: int = SIZE_DIVISOR
) -> tuple[torch.Tensor, tuple[int, int]]:
    """mmdet's test pipeline on one RGB image: ``([3, Hp, Wp] normalised and padded, (h, w) resized)``."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())
    x = rgb.permute(2, 0, 1)[None].float()
    w, h = rescale_size(image.width, image.height, scale)
    if (h, w) != (image.height, image.width):
        # mmcv resizes the uint8 image with cv2 INTER_LINEAR (half-pixel centres, no antialias), then
        # normalises the uint8 result; cv2's fixed-point arithmetic can differ from this by one grey level.
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).round_().clamp_(0, 255)
    mean = torch.tensor(MMDET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(MMDET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    hp = -(-h // size_divisor) * size_divisor
    wp = -(-w // size_divisor) * size_divisor
    x = F.pad(x, (0, wp - w, 0, hp - h), value=0.0)
    return x[0], (h, w)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet ``mask2bbox``: ``[x0, y0, x1 + 1, y1 + 1]`` of each mask's True pixels, zeros for an empty mask."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    cols = masks.any(dim=1)  # [N, W]
    rows = masks.any(dim=2)  # [N, H]
    x0 = cols.int().argmax(dim=1)
    x1 = w - cols.flip(1).int().argmax(dim=1)
    y0 = rows.int().argmax(dim=1)
    y1 = h - rows.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(cols.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def instance_postprocess(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    padded_size: tuple[int, int],
    resized_size: tuple[int, int],
    original_size: tuple[int, int],
    max_per_image: int = MAX_PER_IMAGE,
    score_floor: float | None = None,
    query_chunk: int = 16,
) -> dict[str, torch.Tensor]:
    """mmdet's instance post-processing of one image's ``[Q, C+1]`` class and ``[Q, h, w]`` mask logits.

    Returns ``labels [K]``, ``scores [K]`` (detection scores), ``boxes [K, 4]`` and ``masks [K, H, W]`` bool
    at ``original_size``, sorted by class probability (mmdet leaves the top-k unsorted; GenEval re-sorts per
    class by detection score).
    """
    num_classes = class_logits.shape[-1] - 1
    probs = class_logits.float().softmax(dim=-1)[:, :-1]
    k = min(max_per_image, probs.numel())
    cls_scores, top = probs.flatten().topk(k, sorted=True)
    labels = top % num_classes
    queries = top // num_classes
    if score_floor is not None:
        keep = cls_scores > score_floor
        cls_scores, labels, queries = cls_scores[keep], labels[keep], queries[keep]
    height, width = original_size
    if len(queries) == 0:
        empty = torch.zeros((0,), device=class_logits.device)
        masks = torch.zeros((0, height, width), dtype=torch.bool, device=class_logits.device)
        return {"labels": labels, "scores": empty, "boxes": masks_to_boxes(masks), "masks": masks}
    # Each chosen query's mask once (a query can win for several classes), in chunks to bound memory.
    unique, inverse = torch.unique(queries, return_inverse=True)
    binary_parts, mask_score_parts = [], []
    for start in range(0, len(unique), query_chunk):
        logits = mask_logits[unique[start : start + query_chunk]].float()[None]
        logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
        logits = logits[..., : resized_size[0], : resized_size[1]]
        logits = F.interpolate(logits, size=original_size, mode="bilinear", align_corners=False)[0]
        binary = logits > 0
        inside = binary.flatten(1).float()
        mask_score_parts.append((logits.sigmoid().flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6))
        binary_parts.append(binary)
    binary = torch.cat(binary_parts)[inverse]
    scores = cls_scores * torch.cat(mask_score_parts)[inverse]
    return {"labels": labels, "scores": scores, "boxes": masks_to_boxes(binary), "masks": binary}


class Mask2FormerDetector:
    """GenEval's detector on a transformers Mask2Former; ``detect`` returns the contract's detection dicts."""

    def __init__(
        self,
        model: torch.nn.Module,
        class_names: Sequence[str] = GENEVAL_CLASSES,
        device: str | torch.device = "cpu",
        batch_size: int = 1,
        max_per_image: int = MAX_PER_IMAGE,
        test_scale: tuple[int, int] = TEST_SCALE,
    ):
        num_labels = model.config.num_labels
        if num_labels != len(class_names):
            raise ValueError(
                f"the checkpoint predicts {num_labels} classes but {len(class_names)} class names were given; "
                "GenEval needs a COCO instance-segmentation checkpoint (80 classes in COCO order)"
            )
        self.model = model.eval().to(device)
        self.class_names = tuple(class_names)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_per_image = max_per_image
        self.test_scale = tuple(test_scale)

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> Mask2FormerDetector:
        """Load from a local folder (``config.json`` + weights) or a repo id already in the HF cache."""
        from transformers import Mask2FormerForUniversalSegmentation

        path = Path(checkpoint).expanduser()
        local = path.is_dir()
        if not local and (path.exists() or str(checkpoint).startswith((".", "/", "~"))):
            raise DetectorUnavailable(f"no Mask2Former checkpoint folder at {path}.  {MISSING_CHECKPOINT_HELP}")
        try:
            model = Mask2FormerForUniversalSegmentation.from_pretrained(
                str(path) if local else str(checkpoint), dtype=dtype, local_files_only=True
            )
        except (OSError, ValueError) as err:
            raise DetectorUnavailable(
                f"cannot load a Mask2Former checkpoint from {checkpoint!r} ({err}).  {MISSING_CHECKPOINT_HELP}"
            ) from None
        return cls(model, device=device, **kwargs)

    @torch.no_grad()
    def detect(self, images: Sequence[Image.Image], score_floor: float | None = None) -> list[list[dict]]:
        """Detections per image: ``{"class", "score", "box", "mask", "color": None}``, best first."""
        results: list[list[dict]] = [[] for _ in images]
        for batch in _same_size_batches(images, self.batch_size):
            inputs = [preprocess(images[i], self.test_scale) for i in batch]
            pixels = torch.stack([x for x, _ in inputs]).to(self.device, self.model.dtype)
            out = self.model(pixel_values=pixels)
            for j, i in enumerate(batch):
                pred = instance_postprocess(
                    out.class_queries_logits[j],
                    out.masks_queries_logits[j],
                    padded_size=tuple(pixels.shape[-2:]),
                    resized_size=inputs[j][1],
                    original_size=(images[i].height, images[i].width),
                    max_per_image=self.max_per_image,
                    score_floor=score_floor,
                )
                results[i] = self._to_detections(pred)
        return results

    def _to_detections(self, pred: dict[str, torch.Tensor]) -> list[dict]:
        order = pred["scores"].argsort(descending=True, stable=True).cpu()
        labels = pred["labels"].cpu()[order].tolist()
        scores = list(pred["scores"].cpu()[order].numpy())  # numpy float32 scalars: the rules compare in float32
        boxes = pred["boxes"].cpu()[order].tolist()
        masks = pred["masks"].cpu()[order].numpy()
        return [
            {"class": self.class_names[lab], "score": s, "box": b, "mask": m, "color": None}
            for lab, s, b, m in zip(labels, scores, boxes, masks)
        ]


def _same_size_batches(images: Sequence[Image.Image], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` images that share one size."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.size, []).append(i)
    return [idx[s : s + batch_size] for idx in groups.values() for s in range(0, len(idx), batch_size)]
