import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from miro.flow import TimeSampler, flow_sigmas, integrate
from tests.flow.gaussian import exact_map, optimal_velocity

MU, S = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.5, 0.05])


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (10, 1.0), (50, 1.0), (28, 3.0), (7, 0.5)])
def test_sigmas_match_diffusers(steps, shift):
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    torch.testing.assert_close(flow_sigmas(steps, shift), sched.sigmas.float(), atol=1e-6, rtol=0)


def test_euler_matches_diffusers_scheduler_step():
    """Our Euler update on the same grid is the diffusers scheduler's step."""
    vel = lambda x, t: optimal_velocity(x, t, MU, S)  # noqa: E731
    x1 = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    ours = integrate(vel, x1.clone(), flow_sigmas(12), "euler")
    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(12)
    x = x1.clone()
    for ts in sched.timesteps:
        x = sched.step(vel(x, torch.full((16,), float(ts) / 1000)), ts, x).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-5, rtol=1e-5)


def _error(method, steps):
    vel = lambda x, t: optimal_velocity(x, t, MU.double(), S.double())  # noqa: E731
    x1 = torch.randn(512, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sig = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    return (integrate(vel, x1, sig, method) - exact_map(x1, MU.double(), S.double())).abs().max().item()


def test_solvers_converge_to_the_exact_flow_map_at_their_order():
    e_euler = [_error("euler", n) for n in (16, 32, 64)]
    e_heun = [_error("heun", n) for n in (16, 32, 64)]
    # Euler is first order: doubling the steps about halves the error; Heun's interior steps are second order
    # (its final Euler step to t=0 keeps the global error small but not exactly quadratic).
    assert 1.7 < e_euler[0] / e_euler[1] < 2.3 and 1.7 < e_euler[1] / e_euler[2] < 2.3
    assert e_heun[2] < e_euler[2] / 5
    assert e_heun[0] / e_heun[2] > 3.5
    assert _error("heun", 512) < 2e-3


def test_unknown_method():
    with pytest.raises(ValueError, match="euler"):
        integrate(lambda x, t: x, torch.zeros(1, 1), flow_sigmas(2), "rk45")


def test_logit_normal_matches_its_density():
    sampler = TimeSampler("logit_normal", mean=0.3, std=0.8)
    t = sampler(400_000, torch.Generator().manual_seed(0))
    hist = torch.histc(t, bins=20, min=0, max=1) / (t.numel() / 20)
    centers = (torch.arange(20) + 0.5) / 20
    torch.testing.assert_close(hist, sampler.density(centers), atol=0.05, rtol=0.05)


def test_time_sampler_range_shift_and_errors():
    t = TimeSampler("uniform", shift=3.0)(100_000, torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1
    assert abs(t.median().item() - 0.75) < 0.01  # shift(0.5) = 1.5 / 2 = 0.75
    m = TimeSampler("mode")(10_000, torch.Generator().manual_seed(0))
    assert 0 < m.min() and m.max() < 1
    with pytest.raises(ValueError, match="kind"):
        TimeSampler("cosine")
    with pytest.raises(ValueError, match="std"):
        TimeSampler(std=0)
