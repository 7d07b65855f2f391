"""Steps from t = 1 (noise) to t = 0 (data): the ODE dx/dt = v(x, t), and an SDE with the same marginals.

``velocity_fn(x, t)`` takes the batch and a [B] tensor of noise levels.  NFE per step: Euler 1, Heun 2, SDE 1.
Heun's last step, to t = 0, falls back to Euler as in Karras et al. and diffusers' Heun scheduler; so does the
SDE's, whose step to t = 0 would otherwise add noise that no later step removes.

``sde`` is the Euler-Maruyama step of the reverse-time SDE of ``miro.flow.sde`` (Flow-GRPO's noise schedule
g = a sqrt(t / (1 - t)), ``a = sde_noise``): every step removes part of the current noise estimate and adds fresh
noise, so errors of earlier steps can be corrected, which a deterministic sampler carries to the end (the
stochastic samplers of SiT and Karras et al.); a = 0 is the Euler sampler.  Its fresh noise comes from
``noise_fn()`` (a standard normal draw of the state's shape; the pipeline draws it from the call's generators).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from miro.flow.sde import VelocityFn, sde_mean
from miro.flow.sde import time_vector as _tvec

METHODS = ("euler", "heun", "sde")
DEFAULT_SDE_NOISE = 0.7  # Flow-GRPO's a
NoiseFn = Callable[[], torch.Tensor]


def euler_step(velocity_fn: VelocityFn, x: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    v = velocity_fn(x, _tvec(t, x))
    return x + (t_next - t) * v.to(x.dtype)


def heun_step(velocity_fn: VelocityFn, x: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    v = velocity_fn(x, _tvec(t, x)).to(x.dtype)
    x_euler = x + (t_next - t) * v
    if t_next == 0:
        return x_euler
    v_next = velocity_fn(x_euler, _tvec(t_next, x)).to(x.dtype)
    return x + (t_next - t) * 0.5 * (v + v_next)


def sde_sample_step(velocity_fn: VelocityFn, x: torch.Tensor, t: float, t_next: float, sde_noise: float,
                    noise_fn: NoiseFn) -> torch.Tensor:  # fmt: skip
    """One stochastic step (fp32); the step to t = 0 is Euler's (see the module docstring)."""
    if t_next == 0:
        return euler_step(velocity_fn, x, t, t_next)
    mean, std = sde_mean(x, velocity_fn(x, _tvec(t, x)), t, t_next, sde_noise)
    if std == 0.0:
        return mean
    return mean + std * noise_fn().to(device=mean.device, dtype=mean.dtype)


def integrate(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    method: str = "euler",
    callback: Callable[[int, torch.Tensor], None] | None = None,
    sde_noise: float = DEFAULT_SDE_NOISE,
    noise_fn: NoiseFn | None = None,
) -> torch.Tensor:
    """Integrate along the decreasing grid ``sigmas`` (e.g. ``flow_sigmas(n)``), returning x at sigmas[-1].

    ``sde_noise`` and ``noise_fn`` are the ``sde`` method's (ignored by the others); ``noise_fn=None`` draws
    from torch's global generator."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: must be one of {list(METHODS)}")
    if method == "sde":
        if noise_fn is None:
            noise_fn = partial(torch.randn, x.shape, device=x.device)
        step = partial(sde_sample_step, sde_noise=float(sde_noise), noise_fn=noise_fn)
    else:
        step = euler_step if method == "euler" else heun_step
    ts = [float(s) for s in sigmas]
    for i in range(len(ts) - 1):
        x = step(velocity_fn, x, ts[i], ts[i + 1])
        if callback is not None:
            callback(i, x)
    return x
