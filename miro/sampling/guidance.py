"""THE guidance formula: which conditions a step evaluates and how their velocities are combined.

Scales follow the MIRO authors' convention, where a scale of 0 means "no guidance" (not the diffusers
convention, where 1 does).  Write c for the prompt, ∅ for the learned null text, s+ for the positive
reward targets and s- for the negative ones.

Joint guidance (the authors' pipeline, one scale w; the negative branch drops the text AND uses s-)::

    v = v(c, s+) + w (v(c, s+) - v(∅, s-)) = (1 + w) v(c, s+) - w v(∅, s-)                  NFE 2

Decoupled and per-reward guidance are one telescoping chain of conditions from (∅, s-) to (c, s+):
switch the text on first, then the rewards from s- to s+ one group at a time, groups formed by equal
weight and taken in order of decreasing weight (u_1 > u_2 > ... > u_m)::

    z_0 = (∅, s-),   z_1 = (c, s-),   z_{1+j} = (c, groups 1..j at s+, the others at s-),   z_{1+m} = (c, s+)

    v = v(c, s+) + w_text (v(z_1) - v(z_0)) + sum_j u_j (v(z_{1+j}) - v(z_j))

Each term is the effect of one switch, so with w_text == every reward weight == w the sum telescopes to
exactly the joint formula (and costs its 2 NFE, because the coefficient of every intermediate condition
is the difference of the weights on either side of it, and zero coefficients are not evaluated).  With a
single reward scale (``reward_scale``) this is the decoupled form::

    v = v(c, s+) + w_text (v(c, s-) - v(∅, s-)) + w_reward (v(c, s+) - v(c, s-))            NFE 3

(2 when w_text == w_reward, where it is the joint formula, or when w_text == 0; 1 when both are 0).
The text direction is measured at s- and the reward direction at c, as in InstructPix2Pix's two-condition
guidance, so a reward direction is prompt-specific (the paper's per-reward "isolation" contrasts).  A reward weight of
0 leaves that reward unpushed: the guidance direction never moves it, while the base velocity still
conditions on its target; a target of ``None`` instead drops the reward (its learned null embedding).

NFE per step = the number of conditions with a nonzero coefficient: 1 without guidance, at most
2 + (number of distinct reward weights).  Outside the guidance interval [t_lo, t_hi] (noise level t, the
convention of ``miro.flow``) only v(c, s+) is evaluated (NFE 1).  Heun doubles every count (except on
its last step).  The conditions of a step are batched into one forward pass (``miro.sampling.sampler``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Branch:
    """One condition evaluated in a step and its coefficient in the guided velocity.

    ``text`` False means the learned null text; ``positive[k]`` says whether reward k takes its positive
    target (True) or its negative one (False).
    """

    text: bool
    positive: tuple[bool, ...]
    coef: float


@dataclass(frozen=True)
class Guidance:
    """Resolved guidance: a text scale, one scale per reward (model order) and the interval in t."""

    text_scale: float
    reward_scales: tuple[float, ...]
    interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        scales = {"text_scale": self.text_scale, **{f"reward_scales[{i}]": w for i, w in enumerate(self.reward_scales)}}
        for name, w in scales.items():
            if not math.isfinite(w):
                raise ValueError(f"guidance {name}={w}: must be a finite number")
        lo, hi = self.interval
        if not (0.0 <= lo <= hi <= 1.0):
            raise ValueError(f"guidance_interval={self.interval}: must be (t_lo, t_hi) with 0 <= t_lo <= t_hi <= 1")

    @classmethod
    def joint(cls, scale: float, num_rewards: int, interval: tuple[float, float] = (0.0, 1.0)) -> Guidance:
        """The authors' single scale for text and rewards together."""
        return cls(float(scale), (float(scale),) * num_rewards, tuple(map(float, interval)))

    @classmethod
    def resolve(
        cls,
        reward_names: Sequence[str],
        guidance_scale: float = 7.0,
        text_guidance_scale: float | None = None,
        reward_guidance_scale: float | None = None,
        reward_guidance_weights: Mapping[str, float] | None = None,
        guidance_interval: Sequence[float] | None = None,
    ) -> Guidance:
        """From the pipeline's arguments: unset text/reward scales fall back to ``guidance_scale``, unset
        per-reward weights to the reward scale.  Weight keys must be reward names (already de-aliased)."""
        weights = dict(reward_guidance_weights or {})
        unknown = sorted(set(weights) - set(reward_names))
        if unknown:
            raise ValueError(
                f"reward_guidance_weights has rewards this model was not trained with: {unknown}; "
                f"allowed: {list(reward_names)}"
            )
        text = guidance_scale if text_guidance_scale is None else text_guidance_scale
        reward = guidance_scale if reward_guidance_scale is None else reward_guidance_scale
        interval = (0.0, 1.0) if guidance_interval is None else tuple(float(v) for v in guidance_interval)
        if len(interval) != 2:
            raise ValueError(f"guidance_interval={guidance_interval}: must be a pair (t_lo, t_hi)")
        return cls(float(text), tuple(float(weights.get(n, reward)) for n in reward_names), interval)

    def active(self, t: float) -> bool:
        """Whether guidance applies at noise level t."""
        return self.interval[0] <= t <= self.interval[1]

    def branches(self, guided: bool = True) -> list[Branch]:
        """The conditions a step evaluates, with their coefficients; only v(c, s+) when not ``guided``."""
        num_rewards = len(self.reward_scales)
        if not guided:
            return [Branch(True, (True,) * num_rewards, 1.0)]
        weights = sorted(set(self.reward_scales), reverse=True)  # one group per distinct weight
        nodes = [(False, ()), (True, ())]  # (text, weights switched to s+ so far)
        coefs = [-self.text_scale, self.text_scale]
        for i, u in enumerate(weights):
            nodes.append((True, tuple(weights[: i + 1])))
            coefs[-1] -= u
            coefs.append(u)
        coefs[-1] += 1.0
        out = []
        for (text, on), coef in zip(nodes, coefs):
            if coef != 0.0:
                out.append(Branch(text, tuple(w in on for w in self.reward_scales), coef))
        return out

    def nfe(self, t: float | None = None) -> int:
        """Network evaluations per Euler step at noise level t (inside the interval if t is None)."""
        return len(self.branches(t is None or self.active(t)))
