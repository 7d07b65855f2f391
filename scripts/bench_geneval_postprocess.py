"""GenEval detector post-processing: ours against mmdet's order of operations, on the same logits.

mmdet (``Mask2FormerHead.simple_test`` + ``MaskFormerFusionHead``) upsamples all 100 query masks to the padded
input, crops, resizes every one to the image size, and only then takes the top 100 (query, class) pairs.
Ours picks the pairs first, upsamples each chosen query once, and with ``score_floor`` (GenEval's lowest
threshold, 0.3) skips pairs that cannot reach it.  The script checks that the detections above 0.3 are
identical, then times the variants interleaved and prints median milliseconds per image and the ratios.

Logits are synthetic with the shape of Mask2Former Swin-S on a 512 x 512 image (100 queries, 81 classes,
masks at 1/4 of the 800 x 800 padded input): a few confident queries, the rest mostly "no object".

    python scripts/bench_geneval_postprocess.py
    python scripts/bench_geneval_postprocess.py --size 1024 --confident 12 --repeats 7 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from miro.eval.geneval.detector import instance_postprocess, masks_to_boxes, rescale_size


def mmdet_order(cls_logits, mask_logits, padded, resized, original, max_per_image=100):
    """mmdet 2.x's order: every query's mask upsampled, cropped and resized, then the top-k pairs."""
    masks = F.interpolate(mask_logits[None], size=padded, mode="bilinear", align_corners=False)[0]
    masks = masks[:, : resized[0], : resized[1]]
    masks = F.interpolate(masks[:, None], size=original, mode="bilinear", align_corners=False)[:, 0]
    scores = cls_logits.softmax(-1)[:, :-1]
    num_classes = scores.shape[1]
    top_scores, top = scores.flatten().topk(max_per_image, sorted=False)
    labels, queries = top % num_classes, top // num_classes
    masks = masks[queries]
    binary = (masks > 0).float()
    mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    binary = binary.bool()
    return {"labels": labels, "scores": top_scores * mask_scores, "boxes": masks_to_boxes(binary), "masks": binary}


def synthetic_logits(size: int, confident: int, seed: int = 0, queries: int = 100, classes: int = 80):
    g = torch.Generator().manual_seed(seed)
    w, h = rescale_size(size, size)
    padded = (-(-h // 32) * 32, -(-w // 32) * 32)
    cls = torch.randn(queries, classes + 1, generator=g)
    cls[:, -1] += 6.0  # most queries: no object
    picked = torch.randperm(queries, generator=g)[:confident]
    cls[picked, torch.randint(0, classes, (confident,), generator=g)] += 12.0
    mask = torch.randn(queries, padded[0] // 4, padded[1] // 4, generator=g) * 3
    return cls, mask, padded, (h, w), (size, size)


def above(pred, floor):
    keep = pred["scores"] > floor
    order = torch.argsort(pred["scores"][keep], descending=True)
    return [t[keep][order] for t in (pred["labels"], pred["scores"], pred["boxes"], pred["masks"])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--confident", type=int, default=6, help="queries with a confident class")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cls, mask, padded, resized, original = synthetic_logits(args.size, args.confident)
    variants = {
        "mmdet order": lambda: mmdet_order(cls, mask, padded, resized, original),
        "ours (all pairs)": lambda: instance_postprocess(cls, mask, padded, resized, original),
        "ours (score_floor=0.3)": lambda: instance_postprocess(cls, mask, padded, resized, original, score_floor=0.3),
    }
    ref = above(variants["mmdet order"](), 0.3)
    for name, fn in variants.items():
        got = above(fn(), 0.3)
        same = len(got[0]) == len(ref[0]) and all(torch.equal(a, b) if a.dtype == torch.bool else torch.allclose(a, b)
                                                  for a, b in zip(got, ref))  # fmt: skip
        if not same:
            raise SystemExit(f"{name}: detections above 0.3 differ from mmdet's order")
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():  # interleaved, so load changes hit every variant alike
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["mmdet order"])
    print(f"image {args.size}x{args.size}, padded input {padded[1]}x{padded[0]}, {args.confident} confident queries, "
          f"{len(ref[0])} detections > 0.3 (identical in all variants), threads={args.threads}, repeats={args.repeats}")  # fmt: skip
    print("| variant | median ms / image | speed-up vs mmdet order |")
    print("|---|---:|---:|")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"| {name} | {med * 1000:.1f} | {base / med:.1f}x |")


if __name__ == "__main__":
    main()
