import pytest
import torch

from miro.models import sample_condition_dropout


def test_rates_are_per_sample_and_per_reward():
    g = torch.Generator().manual_seed(0)
    keep, drop_text = sample_condition_dropout(20000, 4, p_reward=0.3, p_text=0.1, generator=g, keep_at_least_one=False)
    assert keep.shape == (20000, 4) and keep.dtype == torch.bool and drop_text.shape == (20000,)
    torch.testing.assert_close(keep.float().mean(0), torch.full((4,), 0.7), atol=0.015, rtol=0)
    assert abs(drop_text.float().mean().item() - 0.1) < 0.01
    # independent across rewards: P(both kept) = 0.49
    assert abs((keep[:, 0] & keep[:, 1]).float().mean().item() - 0.49) < 0.015
    assert 0 < drop_text[:100].sum() < 100  # not one coin flip per batch


def test_keep_at_least_one():
    g = torch.Generator().manual_seed(1)
    keep, _ = sample_condition_dropout(5000, 3, p_reward=0.9, generator=g)
    assert keep.any(1).all()
    # P(all dropped) = 0.729; those samples keep exactly one, uniformly
    one = keep.sum(1) == 1
    assert one.float().mean() > 0.729
    counts = keep[one].float().mean(0)
    torch.testing.assert_close(counts, torch.full((3,), 1 / 3), atol=0.03, rtol=0)


def test_edges():
    keep, drop = sample_condition_dropout(8, 0, p_reward=0.5, p_text=1.0)
    assert keep.shape == (8, 0) and drop.all()
    keep, drop = sample_condition_dropout(8, 2)
    assert keep.all() and not drop.any()
    with pytest.raises(ValueError, match="p_reward"):
        sample_condition_dropout(8, 2, p_reward=1.5)
    with pytest.raises(ValueError, match="p_text"):
        sample_condition_dropout(8, 2, p_text=-0.1)
