"""The ODE-to-SDE step for this project's flow convention (Flow-GRPO's), with the log-probability of each step.

Two users: the stochastic sampler (``miro.flow.solvers``, ``sampler="sde"``), and test-time RL
(``miro.testtime.sde``: rollouts whose steps have a density).  Why an SDE for GRPO: it needs a policy with a
density.  The probability-flow ODE of ``miro.flow`` is deterministic given the initial noise, so its steps have
no likelihood to form a ratio with; Flow-GRPO (Liu et al. 2025,
``flow_grpo/diffusers_patch/sd3_sde_with_logprob.py``) replaces it by an SDE with the same marginals, whose
Euler-Maruyama steps are Gaussian.

Derivation in the convention of ``miro.flow`` (x_t = (1 - t) x0 + t eps, t = 1 noise, v = eps - x0, sampling
runs t downwards so dt = t_next - t < 0):

- The network's velocity is v(x, t) = E[eps - x0 | x_t = x].  With eps_hat = E[eps | x], x0_hat = E[x0 | x],
  x = (1 - t) x0_hat + t eps_hat and v = eps_hat - x0_hat, so eps_hat = x + (1 - t) v, and Tweedie's formula
  for the Gaussian part t eps gives the score  grad log p_t(x) = -eps_hat / t = -(x + (1 - t) v) / t.
- For any g(t) >= 0 the reverse-time SDE  dx = [v - g^2 / 2 * score] dt + g dW  (dt < 0) has the ODE's
  marginals: in s = -t the Fokker-Planck equation gives d q/ds = div(q v) - g^2/2 lap q + g^2/2 lap q, the
  ODE's own equation.  Substituting the score:

      mean = x + (v + g^2 / (2 t) * (x + (1 - t) v)) * dt,        noise std = g * sqrt(-dt)

  which is Flow-GRPO's ``x (1 + g^2 dt / (2 sigma)) + v (1 + g^2 (1 - sigma) / (2 sigma)) dt``: SD3's path
  is this project's (``sigma`` = t).  ``tests/flow/test_sde.py`` (the sampler) and ``tests/testtime/test_sde.py``
  (the rollouts) check it on Gaussian data, where the exact velocity is known; a wrong factor or sign fails them.
- Flow-GRPO's noise schedule: g = a * sqrt(t / (1 - t)) with ``a = sde_noise`` (~0.7).  At t = 1 it is infinite,
  so the (1 - t) under the root takes the next level t_next there (Flow-GRPO's clamp ``sigma == 1 ->
  sigmas[1]``); elsewhere the step is exact in the formula above.  a = 0 is the Euler step of the ODE.

The log-probability of a realised next state is the Gaussian log-density ``-(x' - mean)^2 / (2 s^2) - log s -
log sqrt(2 pi)`` per element, reduced over the non-batch dimensions by the MEAN (``reduce="mean"``, as
Flow-GRPO does) by default: the ratio exp(logp_new - logp_old) is then the geometric mean of the per-element
ratios, whose size does not grow with the image size, so one clip range serves every resolution.
``reduce="sum"`` gives the true log-density of the step (the ratio of the full Gaussians).

Everything is fp32 whatever the model's dtype (the velocity functions of ``miro.sampling.sampler`` return fp32);
noise is drawn on the CPU from a ``torch.Generator`` and moved, so CPU and CUDA rollouts agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
REDUCTIONS = ("mean", "sum")
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def time_vector(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The noise level t as the [B] fp32 vector a velocity function takes for the batch x."""
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)


def _check(sde_noise: float, reduce: str) -> None:
    if not (math.isfinite(sde_noise) and sde_noise >= 0):
        raise ValueError(f"sde_noise={sde_noise!r}: must be a finite number >= 0 (0 is the ODE's Euler step)")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}: must be one of {list(REDUCTIONS)}")


def sde_std(t: float, t_next: float, sde_noise: float) -> float:
    """g(t) = a sqrt(t / (1 - t)), with t_next in the denominator at t = 1 (see the module docstring)."""
    if not 0.0 <= t_next < t <= 1.0:
        raise ValueError(f"an SDE step needs 0 <= t_next < t <= 1, got t={t}, t_next={t_next}")
    denom = 1.0 - (t_next if t >= 1.0 else t)
    return float(sde_noise) * math.sqrt(t / denom)


def sde_mean(
    x: torch.Tensor, v: torch.Tensor, t: float, t_next: float, sde_noise: float
) -> tuple[torch.Tensor, float]:
    """The Gaussian step's mean (fp32) and its noise std ``g sqrt(-dt)`` for state x and velocity v at t."""
    _check(sde_noise, "mean")
    g = sde_std(t, t_next, sde_noise)
    dt = t_next - t
    x, v = x.float(), v.float()
    mean = x + (v + (g * g / (2.0 * t)) * (x + (1.0 - t) * v)) * dt
    return mean, g * math.sqrt(-dt)


def gaussian_log_prob(
    x_next: torch.Tensor, mean: torch.Tensor, std: float, reduce: str = "mean"
) -> torch.Tensor:
    """log N(x_next; mean, std^2 I) per batch row [B] (fp32), mean or sum over the other dimensions."""
    _check(0.0, reduce)
    if not std > 0:
        raise ValueError(
            f"the step's noise std is {std}: a deterministic step (sde_noise=0) has no log-density"
        )
    elem = -((x_next.float() - mean) ** 2) / (2.0 * std * std) - math.log(std) - _LOG_SQRT_2PI
    elem = elem.flatten(1)
    return elem.mean(1) if reduce == "mean" else elem.sum(1)


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: float, reduce: str = "mean") -> torch.Tensor:
    """KL between two Gaussian steps of equal std: ||mean - mean_ref||^2 / (2 std^2) per row [B], reduced over the
    element dimensions as ``gaussian_log_prob`` (the KL of the policy whose log-probs those are)."""
    _check(0.0, reduce)
    elem = ((mean.float() - mean_ref.float()) ** 2).flatten(1) / (2.0 * std * std)
    return elem.mean(1) if reduce == "mean" else elem.sum(1)


def sde_step(velocity_fn: VelocityFn, x: torch.Tensor, t: float, t_next: float, sde_noise: float,
             generator: torch.Generator | None = None, reduce: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One stochastic step from t to t_next: (next state fp32, its log-probability [B]; zeros when sde_noise = 0)."""
    mean, std = sde_mean(x, velocity_fn(x, time_vector(t, x)), t, t_next, sde_noise)
    if std == 0.0:
        return mean, torch.zeros(x.shape[0], device=x.device)
    z = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device)
    x_next = mean + std * z
    return x_next, gaussian_log_prob(x_next, mean, std, reduce)


__all__ = ["REDUCTIONS", "VelocityFn", "gaussian_kl", "gaussian_log_prob", "sde_mean", "sde_std", "sde_step",
           "time_vector"]  # fmt: skip
