"""Flow-GRPO rollouts: trajectories of the ODE-to-SDE step (``miro.flow.sde``, which derives the step and its
log-probability) with every step's log-probability, and the log-probability of a stored step under a changed model.

Everything is fp32 whatever the model's dtype (the velocity functions of ``miro.sampling.sampler`` return fp32);
noise is drawn on the CPU from a ``torch.Generator`` and moved, so CPU and CUDA rollouts agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from miro.flow.sde import (
    VelocityFn,
    _check,
    gaussian_kl,
    gaussian_log_prob,
    sde_mean,
    sde_std,
    sde_step,
    time_vector,
)


@dataclass
class Rollout:
    """One batch of SDE trajectories: ``states`` [T + 1, B, ...] (fp32; states[0] the initial noise, states[-1]
    the final sample), ``log_probs`` [T, B] of each realised step, and the grid ``sigmas`` [T + 1]."""

    states: torch.Tensor
    log_probs: torch.Tensor
    sigmas: torch.Tensor
    stochastic: int | None = None  # the leading steps that drew noise (the rest are Euler steps); None = all

    @property
    def steps(self) -> int:
        return self.log_probs.shape[0]

    @property
    def stochastic_steps(self) -> int:
        """How many leading steps have a log-probability (``sde_rollout(ode_last=True)`` leaves the last out)."""
        return self.steps if self.stochastic is None else self.stochastic

    @property
    def final(self) -> torch.Tensor:
        return self.states[-1]

    def transition(self, i: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """(x, x_next, t, t_next) of step i."""
        return self.states[i], self.states[i + 1], float(self.sigmas[i]), float(self.sigmas[i + 1])


@torch.no_grad()
def sde_rollout(velocity_fn: VelocityFn, noise: torch.Tensor, sigmas: torch.Tensor, sde_noise: float,
                generator: torch.Generator | None = None, reduce: str = "mean", ode_last: bool = False,
                sde_steps: int | None = None) -> Rollout:  # fmt: skip
    """Integrate from ``noise`` (at sigmas[0]) along the decreasing grid ``sigmas`` with SDE steps.

    ``velocity_fn(x, t)`` is e.g. ``miro.sampling.sampler.guided_velocity(...)``: the guided velocity with the
    guidance held fixed, so the policy whose log-probs are recorded is the guided sampler (as Flow-GRPO).
    Runs without gradients; ``step_log_prob`` recomputes a step's log-prob under a changed model.

    ``ode_last``: the last step is the ODE's Euler step (no noise, log-prob 0, not a policy step).  Why: the SDE's
    last step from t to 0 adds noise of std ``a sqrt(t / (1 - t)) sqrt(t)`` (0.094 at 8 steps and a = 0.7) that
    nothing removes, so a reward reads a noisier image than the sampler ever produces; with a deterministic last
    step the final state is the mean, as the ODE sampler would give from the same state.

    ``sde_steps``: only the first ``sde_steps`` steps draw noise, the rest are the ODE's Euler steps (log-prob 0,
    not policy steps); None = every step (but the last with ``ode_last``).  Why: the noise then explores where the
    layout is decided (high t) and the image is finished as the ODE sampler finishes it, so a policy trained on
    these rollouts is judged on images like the ODE sampler's (MixGRPO's sliding window, kept at the start)."""
    _check(sde_noise, reduce)
    ts = [float(s) for s in sigmas]
    steps = len(ts) - 1
    if sde_steps is not None and not (isinstance(sde_steps, int) and 1 <= sde_steps <= steps):
        raise ValueError(
            f"sde_steps={sde_steps!r}: must be an integer in [1, {steps}] (the grid's steps) or None"
        )
    stochastic = steps if sde_steps is None else sde_steps
    if ode_last:
        stochastic = min(stochastic, steps - 1)
    x = noise.float()
    states, logps = [x], []
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        a = sde_noise if i < stochastic else 0.0
        x, lp = sde_step(velocity_fn, x, t, t_next, a, generator, reduce)
        states.append(x)
        logps.append(lp)
    return Rollout(
        torch.stack(states),
        torch.stack(logps),
        torch.tensor(ts, dtype=torch.float32),
        None if stochastic == steps else stochastic,
    )


def step_log_prob(velocity_fn: VelocityFn, x: torch.Tensor, x_next: torch.Tensor, t: float, t_next: float,
                  sde_noise: float, reduce: str = "mean") -> tuple[torch.Tensor, torch.Tensor, float]:  # fmt: skip
    """The log-probability [B] of a stored transition x -> x_next under ``velocity_fn`` (the current, e.g. adapted,
    model: differentiable when grad is enabled), with the step's mean and noise std (for the KL)."""
    mean, std = sde_mean(x, velocity_fn(x, time_vector(t, x)), t, t_next, sde_noise)
    return gaussian_log_prob(x_next, mean, std, reduce), mean, std


__all__ = ["Rollout", "gaussian_kl", "gaussian_log_prob", "sde_mean", "sde_rollout", "sde_std", "sde_step",
           "step_log_prob"]  # fmt: skip
