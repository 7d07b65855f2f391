"""THE sampling settings: the prompt-independent arguments of one ``MiroPipeline`` call, as one schema.

``MiroPipeline.__call__`` takes them (``settings=`` or the same values as keyword arguments), and so do
the sampling command (``settings.*`` in ``miro/conf/sample.yaml``), eval's generate step (``generate.settings.*``
in ``miro/conf/eval.yaml``) and the training grids (``sample.settings.*`` in ``miro/conf/train.yaml``).  The values
are checked here as far as they can be without a model; the reward names and the image size are checked
against the model by the pipeline, which returns the resolved targets and guidance with its images
(``MiroPipelineOutput``), so no caller recomputes them.

Defaults follow the MIRO authors' pipeline: targets 1.0 (missing rewards), negatives 0.0, one joint
guidance scale 7.0, 50 Euler steps.  The guidance formulas and their costs: ``miro.sampling.guidance``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from miro.flow.solvers import DEFAULT_SDE_NOISE, METHODS
from miro.sampling.guidance import Guidance
from miro.sampling.targets import canonical_keys
from miro.utils.config import require

# MiroPipeline.__call__ keyword -> settings field (the pipeline keeps the diffusers / authors' name)
CALL_ALIASES = {"num_inference_steps": "steps"}


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass
class SamplingSettings:
    """What a pipeline call renders, apart from the prompts, the noise and the number of images.

    Fields:
        reward_targets: {reward: target in [0, 1] or None (free: the null embedding)}; missing = 1.0.
            The authors' key names are accepted.
        negative_reward_targets: the same for the negative branch; missing = 0.0.
        guidance_scale: the joint scale w of (1 + w) v(c, s+) - w v(null, s-); 0 = no guidance.
        text_guidance_scale / reward_guidance_scale: decoupled scales (None = ``guidance_scale``).
        reward_guidance_weights: {reward: scale}, per-reward scales (missing = the reward scale).
        guidance_interval: [t_lo, t_hi], the noise levels t where guidance applies.
        steps: sampling steps (the pipeline's ``num_inference_steps``).
        sampler: a ``miro.flow.solvers.METHODS`` name: "euler" (1 evaluation per branch and step), "heun" (2),
            "sde" (1: the stochastic sampler with the ODE's marginals; its fresh noise comes from the call's generator).
        sde_noise: the ``sde`` sampler's noise scale a (g(t) = a sqrt(t / (1 - t)); 0 = Euler); unused otherwise.
        height / width: image size in pixels (None = the model's training size).
    """

    # The mappings are typed Any and null in the yaml so that hydra can set a whole mapping without `+`
    # (`settings.reward_targets={aesthetic: 0.625}`) as well as one key (`+settings.reward_targets.aesthetic=0.6`);
    # None means {} and the values are checked below.
    reward_targets: Any = None  # dict[str, float | None]
    negative_reward_targets: Any = None  # dict[str, float | None]
    guidance_scale: float = 7.0
    text_guidance_scale: float | None = None
    reward_guidance_scale: float | None = None
    reward_guidance_weights: Any = None  # dict[str, float]
    guidance_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])
    steps: int = 50
    sampler: str = "euler"
    sde_noise: float = DEFAULT_SDE_NOISE
    height: int | None = None
    width: int | None = None

    def __post_init__(self):
        for key in ("reward_targets", "negative_reward_targets", "reward_guidance_weights"):
            value = getattr(self, key)
            setattr(self, key, {} if value is None else dict(value) if isinstance(value, Mapping) else value)
        for key in ("reward_targets", "negative_reward_targets"):
            targets = getattr(self, key)
            require(isinstance(targets, Mapping), f"settings.{key}", targets,
                    "must be a mapping {reward: target in [0, 1] or null}")  # fmt: skip
            for name, value in targets.items():
                require(value is None or (_number(value) and 0.0 <= float(value) <= 1.0), f"settings.{key}.{name}",
                        value, "must be in [0, 1] (0 = lowest bucket, 1 = highest), or null (free)")  # fmt: skip
        require(_number(self.guidance_scale), "settings.guidance_scale", self.guidance_scale, "must be a finite number")
        for key in ("text_guidance_scale", "reward_guidance_scale"):
            value = getattr(self, key)
            require(value is None or _number(value), f"settings.{key}", value,
                    "must be a finite number, or null (= guidance_scale)")  # fmt: skip
        weights = self.reward_guidance_weights
        require(isinstance(weights, Mapping), "settings.reward_guidance_weights", weights, "must be a mapping {reward: scale}")
        for name, value in weights.items():
            require(_number(value), f"settings.reward_guidance_weights.{name}", value, "must be a finite number")
        interval = self.guidance_interval
        require(isinstance(interval, Sequence) and len(interval) == 2 and all(_number(v) for v in interval)
                and 0.0 <= interval[0] <= interval[1] <= 1.0, "settings.guidance_interval", interval,
                "must be [t_lo, t_hi] with 0 <= t_lo <= t_hi <= 1")  # fmt: skip
        require(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 1,
                "settings.steps", self.steps, "must be >= 1 (an integer)")  # fmt: skip
        require(self.sampler in METHODS, "settings.sampler", self.sampler, f"must be one of {list(METHODS)}")
        require(_number(self.sde_noise) and self.sde_noise >= 0, "settings.sde_noise", self.sde_noise,
                "must be a finite number >= 0 (0 = the Euler sampler)")  # fmt: skip
        for key in ("height", "width"):
            value = getattr(self, key)
            require(value is None or (isinstance(value, int) and value >= 1), f"settings.{key}", value,
                    "must be a positive number of pixels, or null (the model's training size)")  # fmt: skip

    # ------------------------------------------------------------------ resolution against a model
    def guidance(self, reward_names: Sequence[str]) -> Guidance:
        """The guidance these settings apply to a model trained with ``reward_names`` (weight keys de-aliased;
        unset text / reward scales fall back to ``guidance_scale``, unset per-reward weights to the reward
        scale)."""
        weights = canonical_keys(self.reward_guidance_weights, reward_names, "reward_guidance_weights")
        return Guidance.resolve(
            reward_names, self.guidance_scale, self.text_guidance_scale, self.reward_guidance_scale, weights,
            self.guidance_interval,
        )

    # ------------------------------------------------------------------ conversions
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def updated(self, **overrides: Any) -> SamplingSettings:
        """A copy with some fields replaced (pipeline keyword names such as ``num_inference_steps``
        accepted); the copy is checked again."""
        changes = {CALL_ALIASES.get(k, k): v for k, v in overrides.items()}
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise TypeError(f"not sampling settings: {unknown}; allowed: {list(self.field_names())}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (mappings and lists copied)."""
        return asdict(self)
