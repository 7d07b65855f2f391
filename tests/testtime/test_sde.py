"""The Flow-GRPO SDE step (miro.testtime.sde): its log-density, the ODE limit, and marginal preservation on Gaussian
data whose exact velocity field is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from miro.flow import euler_step, flow_sigmas
from miro.testtime.sde import (
    gaussian_kl,
    gaussian_log_prob,
    sde_mean,
    sde_rollout,
    sde_std,
    sde_step,
    step_log_prob,
)

MU, S = 1.5, 0.4  # data x0 ~ N(MU, S^2) per coordinate


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps - x0 | x_t = x] for x_t = (1 - t) x0 + t eps, x0 ~ N(MU, S^2): x_t and eps - x0 are jointly Gaussian
    with means (1 - t) MU and -MU, var_t = (1 - t)^2 S^2 + t^2 and cov = t - (1 - t) S^2."""
    t = t.view(-1, *([1] * (x.dim() - 1)))
    var = (1 - t) ** 2 * S**2 + t**2
    return -MU + (t - (1 - t) * S**2) / var * (x - (1 - t) * MU)


def linear_velocity(x, t):
    return 0.3 * x - 0.2


def test_log_prob_is_the_normal_density_mean_or_sum_over_elements():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 4, generator=g)
    mean = torch.randn(3, 2, 4, 4, generator=g)
    normal = torch.distributions.Normal(mean, 0.37).log_prob(x).flatten(1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, 0.37), normal.mean(1))
    torch.testing.assert_close(gaussian_log_prob(x, mean, 0.37, reduce="sum"), normal.sum(1))
    # the step's own log-prob is the density of the state it drew, with the mean and std it reports
    x_next, lp = sde_step(linear_velocity, x, 0.6, 0.5, 0.7, torch.Generator().manual_seed(1))
    lp2, m, std = step_log_prob(linear_velocity, x, x_next, 0.6, 0.5, 0.7)
    torch.testing.assert_close(lp, lp2)
    torch.testing.assert_close(lp, torch.distributions.Normal(m, std).log_prob(x_next).flatten(1).mean(1))
    assert std == pytest.approx(0.7 * math.sqrt(0.6 / 0.4) * math.sqrt(0.1))


def test_kl_of_equal_std_gaussians_is_the_closed_form():
    g = torch.Generator().manual_seed(2)
    m1, m2 = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, 0.3), torch.distributions.Normal(m2, 0.3)
    )
    torch.testing.assert_close(gaussian_kl(m1, m2, 0.3), ref.mean(1))
    torch.testing.assert_close(gaussian_kl(m1, m2, 0.3, reduce="sum"), ref.sum(1))


def test_zero_noise_is_the_euler_step():
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    for t, t_next in [(1.0, 0.9), (0.6, 0.45), (0.1, 0.0)]:
        x_next, lp = sde_step(exact_velocity, x, t, t_next, 0.0)
        torch.testing.assert_close(x_next, euler_step(exact_velocity, x, t, t_next), rtol=1e-6, atol=1e-6)
        assert torch.equal(lp, torch.zeros(4))


def test_std_schedule_and_the_clamp_at_pure_noise():
    assert sde_std(0.5, 0.4, 0.7) == pytest.approx(0.7)
    # at t = 1 the (1 - t) under the root takes 1 - t_next
    assert sde_std(1.0, 0.9, 0.7) == pytest.approx(0.7 * math.sqrt(1.0 / 0.1))
    assert math.isfinite(sde_mean(torch.ones(1, 1), torch.ones(1, 1), 1.0, 0.9, 0.7)[0].item())
    with pytest.raises(ValueError, match="sde_noise"):
        sde_step(linear_velocity, torch.ones(1, 1), 0.5, 0.4, -0.1)
    with pytest.raises(ValueError, match="t_next"):
        sde_std(0.4, 0.5, 0.7)
    with pytest.raises(ValueError, match="no log-density"):
        gaussian_log_prob(torch.ones(1, 1), torch.ones(1, 1), 0.0)


@pytest.mark.parametrize("sde_noise", [0.7, 1.0])
def test_sde_rollouts_keep_the_flow_marginals_on_gaussian_data(sde_noise):
    """20,000 one-dimensional trajectories from N(0, 1) with the exact velocity end at N(MU, S^2), and pass through
    the path's marginal at t ~ 0.5 on the way.  A drift with the score term's factor halved or doubled, or its
    sign flipped, ends with a std off by more than 0.1 (tried by hand), far outside these tolerances."""
    n, steps = 20_000, 50
    sigmas = flow_sigmas(steps)
    noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(0))
    roll = sde_rollout(exact_velocity, noise, sigmas, sde_noise, torch.Generator().manual_seed(1))
    assert roll.states.shape == (steps + 1, n, 1) and roll.log_probs.shape == (steps, n)
    final = roll.final.squeeze(1)
    assert final.mean().item() == pytest.approx(MU, abs=0.02)
    assert final.std().item() == pytest.approx(S, abs=0.02)
    mid = steps // 2
    t = float(sigmas[mid])
    x_mid = roll.states[mid].squeeze(1)
    assert x_mid.mean().item() == pytest.approx((1 - t) * MU, abs=0.03)
    assert x_mid.std().item() == pytest.approx(math.sqrt((1 - t) ** 2 * S**2 + t**2), abs=0.03)
    # the stochastic trajectories differ from the ODE's, which the a = 0 rollout follows exactly
    ode = sde_rollout(exact_velocity, noise, sigmas, 0.0).final.squeeze(1)
    assert (final - ode).abs().mean() > 0.05
    assert ode.std().item() == pytest.approx(S, abs=0.02)


def test_a_deterministic_last_step_is_the_euler_step_and_not_a_policy_step():
    from miro.testtime.sde import sde_rollout

    def vel(x, t):
        return 0.5 * x - 0.2

    sigmas = torch.tensor([1.0, 0.6, 0.25, 0.0])
    noise = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    r = sde_rollout(vel, noise, sigmas, 0.7, torch.Generator().manual_seed(1), ode_last=True)
    assert r.steps == 3 and r.stochastic_steps == 2 and torch.all(r.log_probs[-1] == 0)
    x, _, t, t_next = r.transition(2)
    torch.testing.assert_close(r.final, euler_step(vel, x, t, t_next))
    full = sde_rollout(vel, noise, sigmas, 0.7, torch.Generator().manual_seed(1))
    assert full.stochastic_steps == 3 and torch.equal(full.states[:3], r.states[:3])  # the same draws until then
