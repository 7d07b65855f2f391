import torch

from miro.flow import LinearPath, loss_per_time_bin, velocity_loss
from tests.flow.gaussian import irreducible_loss, optimal_velocity

MU, S = 0.7, 0.4


def _batch(t_value, n=200_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = MU + S * torch.randn(n, 1, generator=g, dtype=torch.float64)
    t = torch.full((n,), t_value, dtype=torch.float64)
    return LinearPath().sample(x0, t, torch.randn(n, 1, generator=g, dtype=torch.float64))


def test_optimal_velocity_reaches_closed_form_loss():
    for t in (0.1, 0.5, 0.9):
        s = _batch(t)
        loss = velocity_loss(optimal_velocity(s.x_t, s.t, MU, S), s.target).mean().item()
        expected = irreducible_loss(torch.tensor(t, dtype=torch.float64), S).item()
        assert abs(loss - expected) < 0.01 * expected + 2e-3, (t, loss, expected)


def test_optimal_velocity_is_the_minimiser():
    s = _batch(0.4, n=100_000, seed=3)
    v = optimal_velocity(s.x_t, s.t, MU, S)
    best = velocity_loss(v, s.target).mean()
    for delta in (0.05, -0.05):
        assert velocity_loss(v + delta, s.target).mean() > best
        assert velocity_loss(v * (1 + delta), s.target).mean() > best


def test_weighted_loss_and_bins():
    pred, target = torch.ones(4, 2), torch.zeros(4, 2)
    torch.testing.assert_close(velocity_loss(pred, target, torch.tensor([1.0, 2.0, 0.0, 1.0])), torch.tensor([1.0, 2.0, 0.0, 1.0]))
    sums, counts = loss_per_time_bin(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.05, 0.07, 0.55, 1.0]), 10)
    assert counts.tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert sums[0].item() == 3.0 and sums[9].item() == 4.0


def test_loss_is_fp32_under_bf16_inputs():
    out = velocity_loss(torch.ones(2, 3, dtype=torch.bfloat16), torch.zeros(2, 3, dtype=torch.bfloat16))
    assert out.dtype == torch.float32
