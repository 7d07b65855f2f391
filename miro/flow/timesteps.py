"""Training-time distributions over the noise level t (the path's convention is in ``miro.flow``)."""

from __future__ import annotations

import math

import torch

from miro.flow.schedule import shift_time

KINDS = ("uniform", "logit_normal", "mode")


class TimeSampler:
    """Draws t in (0, 1).

    - ``uniform``: t ~ U(0, 1).
    - ``logit_normal`` (default; SD3, MIRO): t = sigmoid(N(mean, std)); MIRO uses mean 0, std 1.
    - ``mode`` (SD3's "mode" density with scale ``mode_scale``): t = 1 - u - s (cos^2(pi u / 2) - 1 + u).
    A ``shift`` > 1 then moves mass toward noise with the same map as sampling (``shift_time``).

    ``low`` / ``high`` restrict t to a band of noise levels, [low, high], drawn from the same distribution
    conditioned on the band (exactly: inverse-CDF sampling between the band's quantiles, no rejection).  That is
    how eDiff-I trains its expert denoisers: each expert sees only its band's noise levels, at the density the
    shared model gave them.  Without a band the draws are the same as before the option existed.
    """

    def __init__(
        self,
        kind: str = "logit_normal",
        mean: float = 0.0,
        std: float = 1.0,
        mode_scale: float = 1.29,
        shift: float = 1.0,
        eps: float = 1e-5,
        low: float = 0.0,
        high: float = 1.0,
    ):
        if kind not in KINDS:
            raise ValueError(f"time sampler kind={kind!r}: must be one of {list(KINDS)}")
        if std <= 0:
            raise ValueError(f"time sampler std={std}: must be > 0")
        if shift <= 0:
            raise ValueError(f"time sampler shift={shift}: must be > 0")
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"time sampler band low={low}, high={high}: must satisfy 0 <= low < high <= 1")
        self.kind, self.mean, self.std, self.mode_scale, self.shift, self.eps = kind, mean, std, mode_scale, shift, eps
        self.low, self.high = low, high
        self._band = None if (low, high) == (0.0, 1.0) else tuple(sorted((self._level(low), self._level(high))))

    def quantile(self, u: torch.Tensor) -> torch.Tensor:
        """t as a function of a uniform u in [0, 1] (before the clamp): increasing for uniform and logit_normal,
        decreasing for mode; its inverse gives a band's quantiles."""
        if self.kind == "uniform":
            t = u
        elif self.kind == "logit_normal":
            t = torch.sigmoid(self.mean + self.std * torch.special.ndtri(u))
        else:
            t = 1 - u - self.mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
        return shift_time(t, self.shift) if self.shift != 1.0 else t

    def _level(self, t: float) -> float:
        """The u in [0, 1] with quantile(u) = t, by bisection in float64 (quantile is monotone)."""
        lo, hi = 0.0, 1.0
        rising = float(self.quantile(torch.tensor(0.75, dtype=torch.float64))) > float(
            self.quantile(torch.tensor(0.25, dtype=torch.float64)))  # fmt: skip
        for _ in range(60):
            mid = (lo + hi) / 2
            below = float(self.quantile(torch.tensor(mid, dtype=torch.float64))) < t
            lo, hi = (mid, hi) if below == rising else (lo, mid)
        return (lo + hi) / 2

    def __call__(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        if self._band is not None:
            u_lo, u_hi = self._band
            u = u_lo + (u_hi - u_lo) * torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
            t = self.quantile(u).float().clamp(self.low, self.high)
        elif self.kind == "logit_normal":  # the normal draw itself, not ndtri(u): the draws runs were trained with
            t = torch.sigmoid(self.mean + self.std * torch.randn(batch, generator=generator, device=device))
            t = shift_time(t, self.shift) if self.shift != 1.0 else t
        else:
            t = self.quantile(torch.rand(batch, generator=generator, device=device))
        return t.clamp(self.eps, 1 - self.eps)

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """Probability density of t (before shift/clamp and without a band); used by tests and for loss-weight
        analysis."""
        if self.kind == "uniform":
            return torch.ones_like(t)
        if self.kind == "logit_normal":
            logit = torch.log(t / (1 - t))
            z = (logit - self.mean) / self.std
            return torch.exp(-0.5 * z**2) / (self.std * math.sqrt(2 * math.pi) * t * (1 - t))
        raise NotImplementedError("closed-form density only for uniform and logit_normal")
