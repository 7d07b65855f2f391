"""Rendering candidates for a search: the pipeline's own sampling loop, with per-candidate conditions, explicit
initial noise, a count of every network evaluation, and an optional differentiable path.

Why not call ``MiroPipeline.__call__``: a search renders many candidates of ONE prompt that differ in their
initial noise and their reward condition (s+, s-, w), must know exactly how many network rows it spent, and
ReNO needs gradients (the pipeline call runs under ``no_grad``).  ``Renderer`` builds the same ``Conditions``
and calls the same ``miro.sampling.sampler.sample`` with the same sigma grid, precision and decoding as the
pipeline, so ``render(prompt, noise(seed), [default])`` is bit-identical to
``pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="pt")`` (tested).

Noise: candidate 0 of seed s is what the pipeline draws from ``torch.Generator().manual_seed(s)`` (the
one-sample baseline of every method); candidate j > 0 comes from a generator seeded from (s, stream, j).
Noise is drawn on the CPU in fp32 and moved, so CPU and CUDA runs start from the same noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from miro.sampling.guidance import Guidance
from miro.sampling.sampler import Conditions, sample, total_nfe
from miro.sampling.settings import SamplingSettings
from miro.sampling.targets import canonical_keys, reward_tensors, target_dicts
from miro.utils.config import ConfigError
from miro.utils.precision import precision_dtype, resolve_precision

NOISE_STREAMS = {"candidate": 0, "neighbour": 1}


@dataclass(frozen=True)
class Condition:
    """One reward condition of a candidate: positive targets s+, negative targets s- (one value per model reward,
    None = the reward's null embedding) and the guidance scale w: the joint scale, or the text scale when the
    renderer's settings decouple text and reward guidance (``Renderer.scale_field``)."""

    reward_targets: tuple[tuple[str, float | None], ...]
    negative_reward_targets: tuple[tuple[str, float | None], ...]
    guidance_scale: float

    @property
    def s_plus(self) -> dict[str, float | None]:
        return dict(self.reward_targets)

    @property
    def s_minus(self) -> dict[str, float | None]:
        return dict(self.negative_reward_targets)

    def replace(
        self, s_plus: Mapping | None = None, s_minus: Mapping | None = None, w: float | None = None
    ) -> Condition:
        """A copy with some targets (merged into the current ones) or the scale replaced."""
        pos = {**self.s_plus, **(s_plus or {})}
        neg = {**self.s_minus, **(s_minus or {})}
        return Condition(
            tuple(pos.items()), tuple(neg.items()), float(self.guidance_scale if w is None else w)
        )

    def to_dict(self) -> dict:
        return {"reward_targets": self.s_plus, "negative_reward_targets": self.s_minus,
                "guidance_scale": self.guidance_scale}  # fmt: skip


class NFECounter:
    """Rows that went through the velocity network (forward), and rows differentiated through (backward)."""

    def __init__(self):
        self.forward = 0
        self.backward = 0

    def nfe(self) -> float:
        from miro.testtime.budget import BACKWARD, FORWARD

        return FORWARD * self.forward + BACKWARD * self.backward


class CountingModel:
    """Wraps the transformer for ``sample``: counts the rows of every ``velocity`` / forward call."""

    def __init__(self, model, counter: NFECounter):
        self._model = model
        self._counter = counter

    def __call__(self, x, t, *args, **kwargs):
        self._counter.forward += int(x.shape[0])
        return self._model(x, t, *args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self._model, name)
        if name != "velocity":
            return attr

        def velocity(x, t, *args, **kwargs):
            self._counter.forward += int(x.shape[0])
            return attr(x, t, *args, **kwargs)

        return velocity


def derived_seed(seed: int, stream: int, index: int) -> int:
    """A 63-bit seed for candidate ``index`` of noise ``stream`` (independent streams per (seed, stream, index))."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, stream, index]).generate_state(
        2, np.uint32
    )
    return int((int(state[0]) << 31) ^ int(state[1]))


def decode_differentiable(autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """``autoencoder.decode`` with gradients (the KL autoencoder's ``decode`` is wrapped in ``no_grad``; its
    undecorated function is called instead)."""
    fn = getattr(type(autoencoder).decode, "__wrapped__", None)
    return fn(autoencoder, latents) if fn is not None else autoencoder.decode(latents)


def to_unit_images(decoded: torch.Tensor) -> torch.Tensor:
    """Decoder output in [-1, 1] -> [0, 1] images, as the pipeline's ``VaeImageProcessor`` denormalises."""
    return (decoded / 2 + 0.5).clamp(0, 1)


def to_pil(images: torch.Tensor) -> list:
    """[N, 3, H, W] in [0, 1] -> PIL images, rounded as diffusers' ``numpy_to_pil``."""
    import PIL.Image

    arr = (images.detach().float().permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
    return [PIL.Image.fromarray(a) for a in arr]


class Renderer:
    """Renders candidates of one pipeline with one set of sampling settings (see the module docstring).

    ``pipe`` is a ``MiroPipeline``; ``settings`` its prompt-independent settings (default ``SamplingSettings()``,
    the pipeline's defaults); ``mixed_precision`` as the pipeline's argument.
    """

    def __init__(self, pipe, settings: SamplingSettings | None = None, mixed_precision: str = "auto"):
        self.pipe = pipe
        self.settings = settings if settings is not None else SamplingSettings()
        if self.settings.sampler == "sde":
            raise ConfigError(
                "settings.sampler='sde': test-time search needs a candidate to be a function of its initial noise "
                "(noise search moves it, ReNO differentiates through the sampler); use 'euler' or 'heun'"
            )
        self.names = list(pipe.reward_names)
        h, w = pipe._image_shape(self.settings.height, self.settings.width)
        self.latent_shape = (int(pipe.transformer.config.in_channels), h, w)
        self.counter = NFECounter()
        self.model = CountingModel(pipe.transformer, self.counter)
        self.autocast = None
        device = pipe.transformer.device
        if pipe.transformer.dtype == torch.float32:
            precision = resolve_precision(mixed_precision, device.type)
            self.autocast = None if precision == "no" else precision_dtype(precision)
        # which settings field a condition's w replaces: with decoupled guidance the joint scale is not used, and
        # a search over it would move nothing; the text scale is the one that trades alignment for diversity
        self.scale_field = "guidance_scale" if self.settings.text_guidance_scale is None else "text_guidance_scale"
        self.default = self.condition()
        self._text: tuple[str, torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ conditions and costs
    @property
    def device(self) -> torch.device:
        return self.pipe.transformer.device

    @property
    def noise_dim(self) -> int:
        c, h, w = self.latent_shape
        return c * h * w

    def condition(self, reward_targets: Mapping | None = None, negative_reward_targets: Mapping | None = None,
                  guidance_scale: float | None = None) -> Condition:  # fmt: skip
        """A condition with the settings' targets and scale as defaults (missing targets 1.0 / 0.0)."""
        pos = self.settings.reward_targets if reward_targets is None else reward_targets
        neg = (
            self.settings.negative_reward_targets
            if negative_reward_targets is None
            else negative_reward_targets
        )
        p, pm = reward_tensors(pos, self.names, 1, 1.0, "reward_targets")
        n, nm = reward_tensors(neg, self.names, 1, 0.0, "negative_reward_targets")
        w = getattr(self.settings, self.scale_field) if guidance_scale is None else guidance_scale
        return Condition(tuple(target_dicts(p, pm, self.names)[0].items()),
                         tuple(target_dicts(n, nm, self.names)[0].items()), float(w))  # fmt: skip

    def guidance(self, condition: Condition | None = None) -> Guidance:
        w = (condition or self.default).guidance_scale
        return self.settings.updated(**{self.scale_field: w}).guidance(self.names)

    def sigmas(self, steps: int | None = None) -> torch.Tensor:
        """The pipeline's sigma grid for ``steps`` (default the settings' steps)."""
        self.pipe.scheduler.set_timesteps(int(steps or self.settings.steps))
        return self.pipe.scheduler.sigmas.float().cpu()

    def nfe(self, condition: Condition | None = None, steps: int | None = None) -> int:
        """NFE-eq of one image with ``condition`` (an upper bound: coinciding branches may be merged)."""
        return total_nfe(self.guidance(condition), self.sigmas(steps), self.settings.sampler)

    def one_sample_nfe(self) -> int:
        """NFE-eq of one sample with the settings' own condition: the unit of ``Budget(samples=...)``."""
        return self.nfe(self.default)

    def canonical(self, targets: Mapping | None) -> dict:
        return canonical_keys(targets, self.names, "reward_targets")

    # ------------------------------------------------------------------ noise
    def noise(self, seed: int, index: int = 0, stream: str = "candidate") -> torch.Tensor:
        """Initial noise [1, C, h, w] (fp32, CPU) of candidate ``index``; index 0 of the candidate stream is the
        pipeline's own draw for ``torch.Generator().manual_seed(seed)``."""
        s = (
            int(seed)
            if (index == 0 and stream == "candidate")
            else derived_seed(seed, NOISE_STREAMS[stream], index)
        )
        g = torch.Generator().manual_seed(s)
        return torch.randn((1, *self.latent_shape), generator=g, dtype=torch.float32)

    # ------------------------------------------------------------------ text
    def text(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings and mask of ``prompt`` (the last prompt is cached: a search renders one prompt)."""
        if self._text is None or self._text[0] != prompt:
            emb, mask = self.pipe.encode_prompts([prompt])
            self._text = (prompt, emb, mask)
        return self._text[1], self._text[2]

    def conditions(self, prompt: str, conds: Sequence[Condition]) -> Conditions:
        n = len(conds)
        emb, mask = self.text(prompt)
        pos, pm = reward_tensors([c.s_plus for c in conds], self.names, n, 1.0, "reward_targets")
        neg, nm = reward_tensors([c.s_minus for c in conds], self.names, n, 0.0, "negative_reward_targets")
        d = self.device
        return Conditions(text=emb.repeat(n, 1, 1), text_mask=mask.repeat(n, 1), pos_rewards=pos.to(d),
                          pos_mask=pm.to(d), neg_rewards=neg.to(d), neg_mask=nm.to(d))  # fmt: skip

    # ------------------------------------------------------------------ sampling
    def sample(
        self, noise: torch.Tensor, conds: Conditions, guidance: Guidance, steps: int | None = None
    ) -> torch.Tensor:
        """Final latents of ``noise`` under ``conds`` (grad mode is the caller's: differentiable under
        ``torch.enable_grad``); every network row is counted in ``self.counter``."""
        return sample(self.model, noise.to(self.device), conds, guidance, self.sigmas(steps), self.settings.sampler,
                      dtype=self.pipe.transformer.dtype, autocast=self.autocast)  # fmt: skip

    def decode(self, latents: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        """Latents -> [N, 3, H, W] images in [0, 1] (fp32), as the pipeline's ``output_type="pt"``."""
        ae = self.pipe.autoencoder
        weight = next(ae.parameters(), None)
        z = latents if weight is None else latents.to(weight.device)
        decoded = decode_differentiable(ae, z) if differentiable else ae.decode(z)
        return to_unit_images(decoded.float())

    @torch.no_grad()
    def render(self, prompt: str, noise: torch.Tensor, conditions: Sequence[Condition] | Condition,
               steps: int | None = None) -> tuple[torch.Tensor, int]:  # fmt: skip
        """Images [N, 3, H, W] in [0, 1] of ``noise`` [N, C, h, w] under one condition per row (or one for all),
        and the network rows spent.  Rows that share a guidance scale are sampled in one batch."""
        n = noise.shape[0]
        conds = [conditions] * n if isinstance(conditions, Condition) else list(conditions)
        if len(conds) != n:
            raise ValueError(f"{len(conds)} conditions for {n} noises")
        before = self.counter.forward
        out = torch.empty((n, 3, *self._image_size()), dtype=torch.float32)
        groups: dict[float, list[int]] = {}
        for i, c in enumerate(conds):
            groups.setdefault(c.guidance_scale, []).append(i)
        for rows in groups.values():
            latents = self.sample(noise[rows], self.conditions(prompt, [conds[i] for i in rows]),
                                  self.guidance(conds[rows[0]]), steps)  # fmt: skip
            out[rows] = self.decode(latents).cpu()
        return out, self.counter.forward - before

    def _image_size(self) -> tuple[int, int]:
        down = self.pipe.autoencoder.downsample
        return self.latent_shape[1] * down, self.latent_shape[2] * down
