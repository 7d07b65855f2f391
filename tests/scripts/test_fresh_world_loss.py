"""scripts/experiments/fresh_world_loss.py: the per-noise-level loss against a closed form, chunking and seeding."""

import pytest
import torch

from tests.scripts.loader import load_script

fw = load_script("experiments/fresh_world_loss.py")


def batch(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, "text": torch.zeros(n, 2, 5),
            "text_mask": torch.ones(n, 2, dtype=torch.bool), "rewards": torch.zeros(n, 5),
            "reward_mask": torch.ones(n, 5, dtype=torch.bool)}  # fmt: skip


def zero_model(x_t, t, text, text_mask, rewards=None, reward_mask=None):
    return torch.zeros_like(x_t)


def test_a_zero_velocity_scores_the_mean_square_of_the_target():
    """Linear path: the target velocity is noise - x, whatever t, so the zero model's loss is E||noise - x||^2."""
    b = batch()
    noise = torch.randn(b["x"].shape, generator=torch.Generator().manual_seed(1))
    expected = (noise - b["x"]).pow(2).mean().item()
    for t in fw.TIMES:
        assert fw.mean_loss(zero_model, b, t, seed=1) == pytest.approx(expected, rel=1e-5)


def test_chunks_and_seed():
    b = batch()
    model = lambda x_t, t, *a, **k: x_t * t.view(-1, 1, 1, 1)  # noqa: E731  (depends on x_t and t)
    whole = fw.mean_loss(model, b, 0.3, seed=2)
    assert fw.mean_loss(model, b, 0.3, seed=2, chunk=3) == pytest.approx(whole, rel=1e-6)
    assert fw.mean_loss(model, b, 0.3, seed=3) != pytest.approx(whole, rel=1e-3)  # another noise draw
