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


@pytest.mark.parametrize("kind, shift", [("uniform", 1.0), ("logit_normal", 1.0), ("logit_normal", 3.0), ("mode", 1.0)])
def test_a_band_of_noise_levels_is_the_distribution_conditioned_on_it(kind, shift):
    """``low`` / ``high``: every draw is in the band, and the draws follow the full distribution conditioned on
    the band (its conditional CDF at five points, from 400k unrestricted draws, within 0.01)."""
    full = TimeSampler(kind, mean=-0.3, shift=shift)
    band = TimeSampler(kind, mean=-0.3, shift=shift, low=0.5, high=0.9)
    ref = full(400_000, torch.Generator().manual_seed(0))
    ref = ref[(ref >= 0.5) & (ref <= 0.9)]
    t = band(100_000, torch.Generator().manual_seed(1))
    assert 0.5 <= t.min() and t.max() <= 0.9
    for q in (0.55, 0.6, 0.7, 0.8, 0.85):
        assert abs((t <= q).float().mean() - (ref <= q).float().mean()) < 0.01, q
    # the uniform band is uniform on it: mean 0.7, standard deviation 0.4 / sqrt(12)
    u = TimeSampler("uniform", low=0.2, high=0.6)(100_000, torch.Generator().manual_seed(2))
    assert abs(u.mean() - 0.4) < 0.003 and abs(u.std() - 0.4 / 12**0.5) < 0.003
    # no band: the draws of the sampler as it was before the option (runs resume bit for bit)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(TimeSampler("logit_normal")(64, g1), torch.sigmoid(torch.randn(64, generator=g2)).clamp(1e-5, 1 - 1e-5))
    with pytest.raises(ValueError, match="low=0.6, high=0.6"):
        TimeSampler(low=0.6, high=0.6)


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
