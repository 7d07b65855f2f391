"""scripts/experiments/rubric_probes.py: the probes' truth from the detector, and the selection statistics."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from miro.testtime.intrinsic import counterfactual_probes
from tests.scripts.loader import load_script

rp = load_script("experiments/rubric_probes.py")


def test_probe_truths_follow_what_the_detector_reads():
    from miro.eval.geneval.shapes_oracle import oracle_generate_fn

    gen = oracle_generate_fn(resolution=64)
    red_circle = gen("a photo of a red circle", 1, torch.Generator().manual_seed(0))[0]
    blue_square = gen("a photo of a blue square", 1, torch.Generator().manual_seed(0))[0]
    rows = [{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}],
             "prompt": "a photo of a red circle"}]  # fmt: skip
    judge = SimpleNamespace(probes=lambda p: counterfactual_probes(p, 1000))
    passes, truths = rp.probe_truths(rows, {(0, 0): [red_circle, blue_square]}, judge)
    probes = judge.probes(rows[0]["prompt"])
    assert passes[0, 0].tolist() == [1.0, 0.0]
    assert truths[0, 0].shape == (2, len(probes))
    assert (truths[0, 0][0] == 1).all()  # the red circle: the prompt beats every counterfactual
    j = [k for k, p in enumerate(probes) if p.prompt == "a photo of a red square"][0]
    assert truths[0, 0][1, j] == -1  # the blue square is closer to "a red square" (its class) than to "a red circle"
    c = [k for k, p in enumerate(probes) if p.prompt == "a photo of a green circle"][0]
    assert truths[0, 0][1, c] == 0  # neither a red nor a green circle: undecidable


def test_pairwise_auc_and_image_scores():
    # group 1: the passing candidate scores highest (2 pairs won); group 2: a tie (1/2) and a loss
    groups = [(np.array([3.0, 1.0, 2.0]), np.array([1.0, 0.0, 0.0])), (np.array([1.0, 1.0, 2.0]), np.array([1.0, 0.0, 0.0]))]
    auc, pairs = rp.pairwise_auc(groups)
    assert pairs == 4 and auc == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert np.isnan(rp.pairwise_auc([(np.array([1.0]), np.array([1.0]))])[0])  # no mixed group: undefined
    margins = np.array([[0.1, 0.3, -0.2], [0.2, 0.2, 0.2]])
    kinds = ["color", "color", "class"]
    np.testing.assert_allclose(rp.image_score(margins, kinds, "mean"), [(-0.2 + 0.2) / 2, 0.2])  # kinds alike
    np.testing.assert_allclose(rp.image_score(margins, kinds, "min"), [-0.2, 0.2])
    np.testing.assert_allclose(rp.image_score(margins, kinds, "wins"), [2 / 3, 1.0])
