"""Flow-GRPO rollouts (miro.testtime.sde): marginal preservation on Gaussian data whose exact velocity field is
known in closed form, and the deterministic last step.  The step itself: tests/flow/test_sde.py."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from miro.flow import euler_step, flow_sigmas
from miro.testtime.sde import sde_rollout
from tests.flow.gaussian import optimal_velocity

MU, S = 1.5, 0.4  # data x0 ~ N(MU, S^2) per coordinate
exact_velocity = partial(optimal_velocity, mu=MU, s=S)


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


def test_a_noise_window_draws_noise_in_the_leading_steps_only():
    """``sde_steps=k``: the first k steps are the SDE's (the same draws as a full rollout), every later step is the
    Euler step with log-prob 0, and only the first k are policy steps; a window outside the grid is refused."""
    def vel(x, t):
        return 0.5 * x - 0.2

    sigmas = torch.tensor([1.0, 0.8, 0.6, 0.25, 0.0])
    noise = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    r = sde_rollout(vel, noise, sigmas, 0.7, torch.Generator().manual_seed(1), ode_last=True, sde_steps=2)
    assert r.steps == 4 and r.stochastic_steps == 2 and torch.all(r.log_probs[2:] == 0)
    assert torch.all(r.log_probs[:2] != 0)
    full = sde_rollout(vel, noise, sigmas, 0.7, torch.Generator().manual_seed(1))
    assert torch.equal(full.states[:3], r.states[:3])
    for i in (2, 3):
        x, x_next, t, t_next = r.transition(i)
        torch.testing.assert_close(x_next, euler_step(vel, x, t, t_next))
    assert sde_rollout(vel, noise, sigmas, 0.7, sde_steps=4).stochastic is None  # the whole grid: a full rollout
    assert sde_rollout(vel, noise, sigmas, 0.7, ode_last=True, sde_steps=4).stochastic_steps == 3
    for bad in (0, 5, 1.5):
        with pytest.raises(ValueError, match=f"sde_steps={bad}: must be an integer in \\[1, 4\\]"):
            sde_rollout(vel, noise, sigmas, 0.7, sde_steps=bad)

