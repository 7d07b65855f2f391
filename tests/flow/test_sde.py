"""The ODE-to-SDE step (miro.flow.sde): its log-density, the ODE limit, the noise schedule; and the stochastic
sampler built on it (miro.flow.solvers, method "sde"): the flow's marginals on Gaussian data, whose exact velocity
field is known in closed form."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from miro.flow import euler_step, flow_sigmas, integrate
from miro.flow.sde import gaussian_kl, gaussian_log_prob, sde_mean, sde_std, sde_step
from miro.testtime.sde import step_log_prob
from tests.flow.gaussian import marginal_var, optimal_velocity

MU, S = 1.5, 0.4  # data x0 ~ N(MU, S^2) per coordinate
velocity = partial(optimal_velocity, mu=MU, s=S)


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
        x_next, lp = sde_step(velocity, x, t, t_next, 0.0)
        torch.testing.assert_close(x_next, euler_step(velocity, x, t, t_next), rtol=1e-6, atol=1e-6)
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


@pytest.mark.parametrize("sde_noise", [0.7, 1.5])
def test_the_sde_sampler_keeps_the_flow_marginals_and_ends_without_noise(sde_noise):
    """20,000 one-dimensional samples from N(0, 1) with the exact velocity end at N(MU, S^2), as the ODE's do,
    along different paths; the last step is Euler's, so the end point is the data estimate of its state."""
    n, steps = 20_000, 50
    noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(0))
    fresh = torch.Generator().manual_seed(1)
    states = []
    final = integrate(velocity, noise, flow_sigmas(steps), "sde", lambda i, x: states.append(x), sde_noise,
                      partial(torch.randn, (n, 1), generator=fresh)).squeeze(1)  # fmt: skip
    assert final.mean().item() == pytest.approx(MU, abs=0.02)
    assert final.std().item() == pytest.approx(S, abs=0.02)
    t = float(flow_sigmas(steps)[steps // 2 + 1])
    assert states[steps // 2].std().item() == pytest.approx(math.sqrt(marginal_var(t, S)), abs=0.03)
    ode = integrate(velocity, noise, flow_sigmas(steps)).squeeze(1)
    assert (final - ode).abs().mean() > 0.05
    sigmas = flow_sigmas(steps)
    torch.testing.assert_close(states[-1], euler_step(velocity, states[-2], float(sigmas[-2]), 0.0))


def test_the_sde_sampler_is_fixed_by_its_noise_and_zero_noise_is_euler():
    sigmas = flow_sigmas(8)
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(3))

    def draws(seed):
        return partial(torch.randn, x.shape, generator=torch.Generator().manual_seed(seed))

    a = integrate(velocity, x, sigmas, "sde", noise_fn=draws(0))
    assert torch.equal(a, integrate(velocity, x, sigmas, "sde", noise_fn=draws(0)))
    assert not torch.allclose(a, integrate(velocity, x, sigmas, "sde", noise_fn=draws(1)))
    torch.testing.assert_close(integrate(velocity, x, sigmas, "sde", sde_noise=0.0, noise_fn=draws(0)),
                               integrate(velocity, x, sigmas, "euler"), rtol=1e-6, atol=1e-6)  # fmt: skip
    torch.manual_seed(0)
    assert integrate(velocity, x, sigmas, "sde").shape == x.shape  # noise_fn=None: torch's global generator
    with pytest.raises(ValueError, match="sde_noise"):
        integrate(velocity, x, sigmas, "sde", sde_noise=-1.0, noise_fn=draws(0))
