"""ODE steps for dx/dt = v(x, t), integrated from t = 1 (noise) to t = 0 (data).

``velocity_fn(x, t)`` takes the batch and a [B] tensor of noise levels.  NFE per step: Euler 1, Heun 2
(Heun's last step, to t = 0, falls back to Euler as in Karras et al. and diffusers' Heun scheduler).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METHODS = ("euler", "heun")


def _tvec(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)


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


def integrate(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    method: str = "euler",
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Integrate along the decreasing grid ``sigmas`` (e.g. ``flow_sigmas(n)``), returning x at sigmas[-1]."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}: must be one of {list(METHODS)}")
    step = euler_step if method == "euler" else heun_step
    ts = [float(s) for s in sigmas]
    for i in range(len(ts) - 1):
        x = step(velocity_fn, x, ts[i], ts[i + 1])
        if callback is not None:
            callback(i, x)
    return x
