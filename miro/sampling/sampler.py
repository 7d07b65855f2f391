"""The batched sampling loop: every guidance branch of a step in one forward pass.

The network follows the model-call contract (docs/contracts.md)::

    velocity = model(x, t, text, text_mask, rewards=..., reward_mask=..., drop_text=...)

A step at noise level t evaluates the branches of the guidance (``Guidance.branches``; only the positive
one outside the guidance interval) by concatenating them along the batch (branch-major: rows
[i B, (i + 1) B) are branch i), splitting the output and combining the velocities with the branch
coefficients in fp32.  The conditioning tensors of each branch set are built
once per run; only x and t change per step.  The ODE state stays fp32 whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from miro.flow import integrate
from miro.flow.solvers import DEFAULT_SDE_NOISE
from miro.sampling.guidance import Branch, Guidance

Model = Callable[..., torch.Tensor]


@dataclass
class Conditions:
    """The conditioning of B images: text tokens and both reward target vectors with their masks.

    ``pos_mask`` / ``neg_mask`` False means "no target for this reward" (its learned null embedding).
    """

    text: torch.Tensor  # [B, L, D]
    text_mask: torch.Tensor  # [B, L] bool
    pos_rewards: torch.Tensor  # [B, R] float in [0, 1]
    pos_mask: torch.Tensor  # [B, R] bool
    neg_rewards: torch.Tensor  # [B, R]
    neg_mask: torch.Tensor  # [B, R] bool

    def __post_init__(self):
        b, r = self.pos_rewards.shape
        shapes = {
            "text": (self.text.shape[0],),
            "text_mask": (self.text_mask.shape[0],),
            "pos_mask": tuple(self.pos_mask.shape),
            "neg_rewards": tuple(self.neg_rewards.shape),
            "neg_mask": tuple(self.neg_mask.shape),
        }
        expected = {"text": (b,), "text_mask": (b,), "pos_mask": (b, r), "neg_rewards": (b, r), "neg_mask": (b, r)}
        bad = {k: v for k, v in shapes.items() if v != expected[k]}
        if bad:
            raise ValueError(f"conditions do not match pos_rewards [B={b}, R={r}]: {bad}")

    @property
    def batch_size(self) -> int:
        return self.pos_rewards.shape[0]

    def branch(self, branch: Branch) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for one branch."""
        sel = torch.tensor(branch.positive, dtype=torch.bool, device=self.pos_rewards.device)
        mask = torch.where(sel, self.pos_mask, self.neg_mask)
        rewards = torch.where(sel, self.pos_rewards, self.neg_rewards)
        return {
            "text": self.text,
            "text_mask": self.text_mask,
            "rewards": torch.where(mask, rewards, torch.zeros_like(rewards)),  # a masked value is never read
            "reward_mask": mask,
            "drop_text": torch.full((self.batch_size,), not branch.text, dtype=torch.bool, device=self.text.device),
        }


def _merge_identical(conds: Conditions, branches: list[Branch]) -> tuple[list[float], list[dict]]:
    """Branch inputs with coefficients, evaluating a condition once even if two branches coincide
    (e.g. a reward whose positive and negative targets are equal) and skipping zero totals."""
    coefs: list[float] = []
    inputs: list[dict] = []
    for b in branches:
        cur = conds.branch(b)
        for i, prev in enumerate(inputs):
            if all(torch.equal(cur[k], prev[k]) for k in ("rewards", "reward_mask", "drop_text")):
                coefs[i] += b.coef
                break
        else:
            coefs.append(b.coef)
            inputs.append(cur)
    keep = [i for i, c in enumerate(coefs) if c != 0.0]
    return [coefs[i] for i in keep], [inputs[i] for i in keep]


def _branch_key(inputs: dict[str, torch.Tensor]) -> tuple:
    """A branch condition's identity (which text, which targets), to carry its self-conditioning latents from
    one step to the next even when the set of branches changes (the guidance interval)."""
    return tuple(tuple(inputs[k].flatten().tolist()) for k in ("drop_text", "rewards", "reward_mask"))


def _concat(inputs: list[dict], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    out = {k: torch.cat([d[k] for d in inputs]) for k in inputs[0]}
    if dtype is not None:
        out["text"] = out["text"].to(dtype)
    return out


def guided_velocity(
    model: Model,
    conds: Conditions,
    guidance: Guidance,
    dtype: torch.dtype | None = None,
    batch_branches: bool = True,
    cache_condition: bool = True,
    autocast: torch.dtype | None = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``velocity_fn(x, t)`` for ``miro.flow`` solvers: the guided velocity of ``Guidance`` at t.

    ``dtype`` is the dtype the model's inputs are cast to (its weights' dtype); ``batch_branches=False``
    evaluates the branches in separate forward passes (the reference the batched pass must equal).
    A model with ``encode_condition(text, text_mask, rewards, reward_mask, drop_text) -> dict`` and
    ``velocity(x, t, **that dict)`` (``MiroTransformer``) has its condition, which depends on
    neither x nor t, computed once per run instead of once per step (``cache_condition=False``: call the
    model's plain forward every time).  ``autocast`` (e.g. ``torch.bfloat16``) runs the network under
    ``torch.autocast`` in that dtype, mixed precision with the fp32 weights; the state and the guidance sum
    stay fp32.  A model with ``self_conditioning`` True (``MiroRINTransformer``) is called with
    ``return_latents=True`` and fed, as ``previous_latents``, the latents each branch condition produced at
    the previous call (none at the first): the returned function then has state and is called once per
    solver evaluation, in order (the MIRO authors' sampler carries them the same way).
    """
    split = cache_condition and all(callable(getattr(model, m, None)) for m in ("encode_condition", "velocity"))
    carry = bool(getattr(model, "self_conditioning", False))
    plans: dict[bool, tuple[list[float], list[dict], list[tuple]]] = {}
    latents: dict[tuple, torch.Tensor] = {}  # self-conditioning: each branch condition's latents of the last call

    def plan(active: bool) -> tuple[list[float], list[dict], list[tuple]]:
        if active not in plans:
            coefs, inputs = _merge_identical(conds, guidance.branches(active))
            keys = [_branch_key(inp) for inp in inputs] if carry else []
            groups = [inputs] if batch_branches and inputs else [[inp] for inp in inputs]
            inputs = [_concat(group, dtype) for group in groups]
            if split:
                with _autocast(inputs[0]["text"].device if inputs else None, autocast):
                    inputs = [model.encode_condition(**inp) for inp in inputs]
            plans[active] = (coefs, inputs, keys)
        return plans[active]

    def forward(x: torch.Tensor, t: torch.Tensor, inputs: dict, keys: list[tuple]) -> torch.Tensor:
        x = x if dtype is None else x.to(dtype)
        extra = {}
        if carry:  # the latents each branch produced at the previous call (zeros before the first: None)
            known = [latents.get(k) for k in keys]
            if any(z is not None for z in known):
                ref = next(z for z in known if z is not None)
                extra["previous_latents"] = torch.cat([z if z is not None else torch.zeros_like(ref) for z in known])
            extra["return_latents"] = True
        with _autocast(x.device, autocast):
            out = model.velocity(x, t, **inputs, **extra) if split else model(x, t, **inputs, **extra)
        if carry:
            out, z = out
            latents.update(zip(keys, z.chunk(len(keys))))
        return out.float()

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        coefs, inputs, keys = plan(guidance.active(float(t[0])))
        n = len(coefs)
        if n == 0:  # every coefficient cancelled: the guided velocity is identically zero
            return torch.zeros_like(x, dtype=torch.float32)
        if batch_branches:
            vs = forward(torch.cat([x] * n), t.repeat(n), inputs[0], keys).chunk(n)
        else:
            vs = [forward(x, t, inp, keys[i : i + 1] if carry else []) for i, inp in enumerate(inputs)]
        v = vs[0] if coefs[0] == 1.0 else coefs[0] * vs[0]
        for c, vi in zip(coefs[1:], vs[1:]):
            v = v.add(vi, alpha=c)
        return v

    return velocity


def _autocast(device: torch.device | None, dtype: torch.dtype | None):
    if dtype is None or device is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def total_nfe(guidance: Guidance, sigmas: torch.Tensor, method: str = "euler") -> int:
    """Network evaluations (per image) of a run: the branches at every evaluated noise level, following
    ``miro.flow``'s steps (Heun also evaluates at t_next, except on the last step to t = 0).  An upper
    bound when coinciding conditions are merged."""
    ts = [float(s) for s in sigmas]
    total = 0
    for t, t_next in zip(ts[:-1], ts[1:]):
        total += guidance.nfe(t)
        if method == "heun" and t_next != 0:
            total += guidance.nfe(t_next)
    return total


def sample(
    model: Model,
    noise: torch.Tensor,
    conds: Conditions,
    guidance: Guidance,
    sigmas: torch.Tensor,
    method: str = "euler",
    dtype: torch.dtype | None = None,
    batch_branches: bool = True,
    cache_condition: bool = True,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    autocast: torch.dtype | None = None,
    sde_noise: float = DEFAULT_SDE_NOISE,
    noise_fn: Callable[[], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate from ``noise`` (at sigmas[0]) along the decreasing grid ``sigmas`` with guided velocities.

    Returns the fp32 state at sigmas[-1] (the data estimate when the grid ends at 0).  Grad mode is the
    caller's: wrap in ``torch.no_grad()`` for plain sampling.  ``sde_noise`` / ``noise_fn``: the ``sde``
    method's noise scale and fresh-noise draws (``miro.flow.solvers.integrate``).
    """
    if noise.shape[0] != conds.batch_size:
        raise ValueError(f"noise has batch {noise.shape[0]} but the conditions have {conds.batch_size}")
    velocity = guided_velocity(model, conds, guidance, dtype, batch_branches, cache_condition, autocast)
    return integrate(velocity, noise.float(), sigmas, method, callback, sde_noise, noise_fn)
