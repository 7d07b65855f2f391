import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from miro.eval.geneval.detector import (
    HF_CHECKPOINT,
    MMDET_MEAN,
    MMDET_STD,
    DetectorUnavailable,
    Mask2FormerDetector,
    instance_postprocess,
    masks_to_boxes,
    preprocess,
    rescale_size,
)
from miro.eval.geneval.prompts import GENEVAL_CLASSES
from tests.eval.tiny_models import save_tiny_mask2former


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return save_tiny_mask2former(tmp_path_factory.mktemp("m2f") / "ckpt", boost_class=3)


SMALL_SCALE = (133, 80)  # where the resize limits do not matter, a small input keeps the tests fast


@pytest.fixture(scope="module")
def detector(tiny_checkpoint):
    return Mask2FormerDetector.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def small_detector(tiny_checkpoint):
    return Mask2FormerDetector.from_pretrained(tiny_checkpoint, test_scale=SMALL_SCALE)


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "size, expected",
    [((512, 512), (800, 800)), ((640, 480), (1067, 800)), ((2000, 500), (1333, 333)), ((100, 70), (1143, 800))],
)
def test_rescale_size_matches_mmcv_rounding(size, expected):
    # scale = min(1333 / long, 800 / short); new = int(side * scale + 0.5)
    assert rescale_size(*size) == expected


def test_preprocess_normalises_and_pads_to_multiple_of_32():
    image = _image(100, 70)
    x, (h, w) = preprocess(image)
    assert (h, w) == (800, 1143)
    assert x.shape == (3, 800, 1152)  # 1143 -> 1152
    assert torch.all(x[:, :, w:] == 0)
    # Undo the normalisation: the valid region holds integer grey levels in 0..255.
    mean = torch.tensor(MMDET_MEAN).view(3, 1, 1)
    std = torch.tensor(MMDET_STD).view(3, 1, 1)
    raw = x[:, :h, :w] * std + mean
    assert torch.allclose(raw, raw.round(), atol=1e-3)
    assert raw.min() >= -1e-3 and raw.max() <= 255 + 1e-3


def test_preprocess_without_resize_is_exact_normalisation():
    image = _image(800, 800)  # already at the test scale
    x, hw = preprocess(image)
    assert hw == (800, 800)
    expected = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() - torch.tensor(MMDET_MEAN).view(3, 1, 1)) / torch.tensor(
        MMDET_STD
    ).view(3, 1, 1)
    assert torch.equal(x, expected)


def test_preprocess_resize_matches_cv2_within_one_level():
    cv2 = pytest.importorskip("cv2")
    image = _image(96, 64, seed=3)
    x, (h, w) = preprocess(image)
    ours = (x[:, :h, :w] * torch.tensor(MMDET_STD).view(3, 1, 1) + torch.tensor(MMDET_MEAN).view(3, 1, 1)).round()
    ref = cv2.resize(np.asarray(image), (w, h), interpolation=cv2.INTER_LINEAR)
    diff = np.abs(ours.permute(1, 2, 0).numpy() - ref.astype(np.float32))
    assert diff.max() <= 1.0


def _mask2bbox_loop(masks):
    """mmdet's mask2bbox as written there (loop, torch.where)."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.where(m)
        if len(xs):
            boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    return boxes


def test_masks_to_boxes_matches_loop_including_empty_masks():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 13, 17)) > 0.97
    masks[2] = False
    masks[4] = False
    masks[4, 5, 9] = True
    assert np.array_equal(masks_to_boxes(torch.from_numpy(masks)).numpy(), _mask2bbox_loop(masks))
    assert masks_to_boxes(torch.zeros((0, 4, 4), dtype=torch.bool)).shape == (0, 4)


def _reference_postprocess(cls_logits, mask_logits, padded, resized, original, max_per_image=100):
    """Step by step as mmdet: upsample every query, crop, resize, top-k, threshold, score, boxes."""
    masks = F.interpolate(mask_logits[None].double(), size=padded, mode="bilinear", align_corners=False)[0]
    masks = masks[:, : resized[0], : resized[1]]
    masks = F.interpolate(masks[:, None], size=original, mode="bilinear", align_corners=False)[:, 0]
    probs = torch.softmax(cls_logits.double(), -1)[:, :-1]
    num_classes = probs.shape[1]
    scores, idx = probs.flatten().topk(min(max_per_image, probs.numel()), sorted=False)
    out = []
    for s, i in zip(scores.tolist(), idx.tolist()):
        q, label = divmod(i, num_classes)
        binary = (masks[q] > 0).numpy()
        sig = torch.sigmoid(masks[q]).numpy()
        mask_score = (sig * binary).sum() / (binary.sum() + 1e-6)
        out.append((label, s * mask_score, _mask2bbox_loop(binary[None])[0], binary))
    return sorted(out, key=lambda r: (r[0], -r[1]))


@pytest.fixture(scope="module")
def raw_outputs(detector):
    """The tiny model's raw outputs at the real test scale: 100 x 70 -> 1143 x 800, padded to 1152."""
    x, resized = preprocess(_image(100, 70, seed=1))
    with torch.no_grad():
        out = detector.model(pixel_values=x[None])
    return out.class_queries_logits[0], out.masks_queries_logits[0], tuple(x.shape[-2:]), resized


def test_postprocess_matches_stepwise_mmdet_on_tiny_model_outputs(raw_outputs):
    cls_logits, mask_logits, padded, resized = raw_outputs
    assert mask_logits.shape[-2:] == (200, 288)  # 1/4 of the padded input
    ref = _reference_postprocess(cls_logits, mask_logits, padded, resized, (70, 100))
    got = instance_postprocess(cls_logits, mask_logits, padded, resized, (70, 100))
    assert len(got["labels"]) == len(ref) == 100  # 10 queries x 80 classes -> top 100
    order = sorted(range(len(ref)), key=lambda i: (got["labels"][i].item(), -got["scores"][i].item()))
    for i, (label, score, box, mask) in zip(order, ref):
        assert got["labels"][i].item() == label
        assert got["scores"][i].item() == pytest.approx(score, rel=1e-5, abs=1e-9)
        assert np.array_equal(got["boxes"][i].numpy(), box)
        assert np.array_equal(got["masks"][i].numpy(), mask)
    assert got["masks"].shape == (100, 70, 100)


def test_padding_crop_changes_the_result(raw_outputs):
    """Guard: skipping the crop (HF's post-processing) gives different masks on a padded input."""
    cls_logits, mask_logits, padded, resized = raw_outputs
    cropped = instance_postprocess(cls_logits, mask_logits, padded, resized, (70, 100))
    uncropped = instance_postprocess(cls_logits, mask_logits, padded, padded, (70, 100))
    assert not torch.equal(cropped["masks"], uncropped["masks"])


def test_score_floor_is_exact_pruning(small_detector):
    image = _image(64, 48, seed=2)
    full = small_detector.detect([image])[0]
    floor = 0.5
    pruned = small_detector.detect([image], score_floor=floor)[0]
    above = [d for d in full if d["score"] > floor]
    assert len(above) > 0
    assert [(d["class"], d["box"]) for d in pruned if d["score"] > floor] == [(d["class"], d["box"]) for d in above]
    assert [d["score"] for d in pruned if d["score"] > floor] == pytest.approx([d["score"] for d in above])


def test_detect_output_follows_the_contract(small_detector):
    images = [_image(64, 48, seed=2), _image(40, 60, seed=4)]
    dets = small_detector.detect(images)
    for image, found in zip(images, dets):
        assert len(found) == 100  # top 100 of 10 queries x 80 classes
        scores = [d["score"] for d in found]
        assert scores == sorted(scores, reverse=True)
        for d in found:
            assert set(d) == {"class", "score", "box", "mask", "color"}
            assert d["class"] in GENEVAL_CLASSES and d["color"] is None
            assert d["mask"].dtype == bool and d["mask"].shape == (image.height, image.width)
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height
    # The boosted class (index 3) dominates: every query predicts it first.
    assert dets[0][0]["class"] == GENEVAL_CLASSES[3] and dets[0][0]["score"] > 0.3


def test_same_size_batch_equals_one_by_one(tiny_checkpoint):
    single = Mask2FormerDetector.from_pretrained(tiny_checkpoint, batch_size=1, test_scale=SMALL_SCALE)
    batched = Mask2FormerDetector.from_pretrained(tiny_checkpoint, batch_size=4, test_scale=SMALL_SCALE)
    images = [_image(64, 48, seed=s) for s in range(3)] + [_image(48, 64, seed=9)]
    a = single.detect(images, score_floor=0.3)
    b = batched.detect(images, score_floor=0.3)
    for da, db in zip(a, b):
        assert [d["class"] for d in da] == [d["class"] for d in db]
        assert [d["score"] for d in da] == pytest.approx([d["score"] for d in db], abs=1e-5)


def test_missing_checkpoint_names_what_to_download(tmp_path):
    with pytest.raises(DetectorUnavailable, match=HF_CHECKPOINT) as err:
        Mask2FormerDetector.from_pretrained(tmp_path / "nowhere")
    assert "Detectron2" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DetectorUnavailable, match="mask2former-swin-small-coco-instance"):
        Mask2FormerDetector.from_pretrained(empty)
    with pytest.raises(DetectorUnavailable):
        Mask2FormerDetector.from_pretrained("someone/not-in-the-cache")


def test_class_count_mismatch_is_rejected(tiny_checkpoint):
    with pytest.raises(ValueError, match="80 classes"):
        Mask2FormerDetector.from_pretrained(tiny_checkpoint, class_names=("a", "b"))
