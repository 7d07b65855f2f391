import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from miro.testtime.differentiable import DIFFERENTIABLE, differentiable_reward, pil_to_tensor


@pytest.fixture(scope="module")
def images():
    from miro.eval.geneval.shapes_oracle import oracle_generate_fn

    rng = np.random.default_rng(0)
    ims = oracle_generate_fn(resolution=32)(
        "a photo of a red circle and a blue square", 2, torch.Generator().manual_seed(0)
    )
    noisy = np.clip(np.asarray(ims[0], dtype=float) + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
    return [*ims, ims[0].filter(ImageFilter.GaussianBlur(1.5)), Image.fromarray(noisy),
            Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8))]  # fmt: skip


def test_torch_forms_equal_annotates_weight_free_rewards(images):
    from annotate.scorers.registry import build_scorers

    (pixels,) = build_scorers(list(DIFFERENTIABLE))
    for size in (32, 8):
        batch = [im for im in images if im.size == (size, size)]
        want = pixels.score_dict(batch, [None] * len(batch))
        for name in DIFFERENTIABLE:
            got = differentiable_reward(name).score(batch)
            np.testing.assert_allclose(got, want[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_gradients_are_finite_even_on_a_flat_image(images):
    x = torch.cat([pil_to_tensor(images[3:4]), torch.full((1, 3, 32, 32), 0.5)]).requires_grad_(True)
    for name in DIFFERENTIABLE:
        (g,) = torch.autograd.grad(differentiable_reward(name).score_tensor(x).sum(), x)
        assert torch.isfinite(g).all(), name
        assert g[0].abs().sum() > 0, name


def test_annotate_config_keys_are_accepted():
    assert differentiable_reward("sharpness", size=64, median=3, max_side=512).size == 64
    assert differentiable_reward("alignment") is None
