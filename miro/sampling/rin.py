"""Sampling the authors' RIN (``MiroRIN``) as their ``flow_euler_sampler`` does, on this package's guidance.

The MIRO authors' sampler (``miro-t2i`` 0.1.4, ``models/sampler.py`` ``FlowEulerSampler``, read, not
imported: their package is also named ``miro``) differs from ``miro.sampling.sampler.sample`` in three ways
that matter for matching their images to 1e-4, so the RIN has this loop of its own:

* **The grid is uniform in gamma** (signal level, ``1 - t``): ``gamma_i = LinearScheduler(1 - i / N)``
  computed in fp32 (``authors_gammas``), the first value clamped to ``clip_min`` = 1e-9, and the Euler update
  is ``x <- x - F (gamma_{i+1} - gamma_i)``.  It is not ``miro.flow.flow_sigmas(N)``: diffusers' grid (which
  ours follows) spaces N levels from 1 to 1/1000 and then jumps to 0, so it differs from ``1 - i / N`` by up
  to ~1/N.
* **Self-conditioning latents are state**: each step feeds every branch the final latents that the same
  branch produced at the previous step (their ``[latents_cond, latents_uncond]``), zeros at the first step
  (``FlowPrecond`` fills them).  ``miro.flow``'s solvers take a stateless ``velocity(x, t)``, so
  ``RINGuidedVelocity`` keeps the latents per branch condition and is called once per step, in order.
* **The null text is a token sequence**, the empty prompt's FLAN-T5 tokens (``uncond_embedding.npy``), not
  a learned null embedding; it is zero-padded to the prompt's length with its mask False on the padding (or
  the prompt padded to its length), as their ``_prepare_embeddings`` / ``_prepare_mask`` do.

What is shared with the rest of the package: the guidance formula and its branches (``Guidance``, so the
decoupled, per-reward and interval forms work with the RIN too; the authors' call is ``Guidance.joint``),
the condition container (``Conditions``) and the merging of coinciding branches.  The joint guidance
``(1 + w) F(c, s+) - w F(null, s-)`` evaluates its two branches in one batch, the positive rows first, as
theirs stacks them.  A guidance scale w <= 0 is their "no guidance" (one branch, ``F(c, s+)``): the caller
passes ``Guidance.joint(max(w, 0), K)``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from miro.sampling.guidance import Guidance
from miro.sampling.sampler import Conditions, _branch_key, _merge_identical


def authors_gammas(
    num_steps: int,
    start: float = 1.0,
    end: float = 0.0,
    shift: float = 1.0,
    clip_min: float = 1e-9,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The ``num_steps + 1`` signal levels of their sampler (``LinearScheduler(start, end, shift, clip_min)``
    of ``1 - i / N``, fp32), increasing from ``clip_min`` to 1 for the released ``start=1, end=0``."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r}: must be an int >= 1")
    steps = 1 - torch.arange(num_steps + 1, dtype=torch.float32, device=device) / num_steps
    out = (end - start) * steps + start
    if shift > 1:
        out = shift * out / (1 + (shift - 1) * out)
    return torch.clamp(out, min=clip_min)


def pad_null_text(
    text: torch.Tensor, text_mask: torch.Tensor, null_text: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(text, text_mask, null, null_mask)`` of one length: the shorter side zero-padded, its mask False on
    the padding.  ``null_text`` is [L0, D] (one sequence for every image) or [B, L0, D]."""
    b, length, dim = text.shape
    null = null_text if null_text.dim() == 3 else null_text[None].expand(b, -1, -1)
    if null.shape[0] != b or null.shape[2] != dim:
        raise ValueError(
            f"null text {list(null_text.shape)} does not fit the prompts' tokens {list(text.shape)}"
        )
    null = null.to(device=text.device, dtype=text.dtype)
    n0 = null.shape[1]
    null_mask = torch.zeros(b, max(length, n0), dtype=torch.bool, device=text.device)
    null_mask[:, :n0] = True
    if length > n0:
        null = torch.cat([null, null.new_zeros(b, length - n0, dim)], dim=1)
    elif length < n0:
        text = torch.cat([text, text.new_zeros(b, n0 - length, dim)], dim=1)
        text_mask = torch.cat([text_mask, text_mask.new_zeros(b, n0 - length)], dim=1)
    return text, text_mask, null.contiguous(), null_mask


class RINGuidedVelocity:
    """``v = velocity(x, gamma)``: the guided preconditioned output of a ``MiroRIN`` at signal level gamma,
    with each branch's self-conditioning latents carried to the next call (call it once per step, in order).

    ``conds`` holds the prompts' tokens and both reward target vectors; ``null_text`` the empty prompt's
    tokens (the negative branch's text).  ``autocast`` runs the network under ``torch.autocast`` in that dtype
    (their sampler does on CUDA); the guidance sum stays fp32.  After a call, ``branch_outputs`` holds
    ``[(coefficient, F, latents)]`` of that step, positive branch first (what the parity test compares).
    ``cache_condition``: run the condition mixer (reward embedders, text projection, 2 transformer layers)
    once per run and per set of branches instead of at every step: its output depends on neither x nor
    gamma (the time token is put in front of it inside the network), so the result is the same.
    """

    def __init__(
        self,
        model,
        conds: Conditions,
        null_text: torch.Tensor,
        guidance: Guidance,
        autocast: torch.dtype | None = None,
        cache_condition: bool = True,
    ):
        self.model = model
        self.guidance = guidance
        self.autocast = autocast
        self.cache_condition = cache_condition
        text, text_mask, null, null_mask = pad_null_text(conds.text, conds.text_mask, null_text)
        self.conds = Conditions(
            text, text_mask, conds.pos_rewards, conds.pos_mask, conds.neg_rewards, conds.neg_mask
        )
        self.null, self.null_mask = null, null_mask
        self.latents: dict[tuple, torch.Tensor] = {}
        self.branch_outputs: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        self._plans: dict[bool, tuple[list[float], list[tuple], dict[str, torch.Tensor]]] = {}

    def _plan(self, active: bool):
        if active not in self._plans:
            # positive branch first: the row order of their stacked batch
            coefs, inputs = _merge_identical(self.conds, list(reversed(self.guidance.branches(active))))
            keys = [_branch_key(inp) for inp in inputs]
            batch = {}
            for inp in inputs:
                drop = inp["drop_text"][:, None]
                inp["text"] = torch.where(drop[..., None], self.null, inp["text"])
                inp["text_mask"] = torch.where(drop, self.null_mask, inp["text_mask"])
            for k in ("text", "text_mask", "rewards", "reward_mask"):
                batch[k] = torch.cat([inp[k] for inp in inputs]) if inputs else None
            batch["condition"] = None
            if self.cache_condition and inputs:
                with self._autocast(batch["text"].device):
                    batch["condition"] = self.model.encode_condition(
                        batch["text"], batch["text_mask"], batch["rewards"], batch["reward_mask"]
                    )
            self._plans[active] = (coefs, keys, batch)
        return self._plans[active]

    def _autocast(self, device: torch.device):
        return nullcontext() if self.autocast is None else torch.autocast(device.type, dtype=self.autocast)

    def reset(self) -> None:
        """Forget the carried latents (a new trajectory)."""
        self.latents.clear()

    def __call__(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        coefs, keys, batch = self._plan(self.guidance.active(1.0 - float(gamma)))
        n, b = len(coefs), x.shape[0]
        if n == 0:
            self.branch_outputs = []
            return torch.zeros_like(x, dtype=torch.float32)
        prev = None
        if any(k in self.latents for k in keys):
            ref = next(self.latents[k] for k in keys if k in self.latents)
            prev = torch.cat([self.latents.get(k, torch.zeros_like(ref)) for k in keys])
        with self._autocast(x.device):
            out, z = self.model.precondition(
                torch.cat([x] * n),
                gamma.expand(n * b),
                batch["text"],
                batch["text_mask"],
                batch["rewards"],
                batch["reward_mask"],
                prev,
                batch["condition"],
            )
        outs, zs = out.float().chunk(n), z.chunk(n)
        self.latents = dict(zip(keys, zs))
        self.branch_outputs = list(zip(coefs, outs, zs))
        v = outs[0] * coefs[0]
        for c, o in zip(coefs[1:], outs[1:]):
            v = v + o * c
        return v


def sample_rin(
    model,
    noise: torch.Tensor,
    conds: Conditions,
    null_text: torch.Tensor,
    guidance: Guidance,
    gammas: torch.Tensor,
    autocast: torch.dtype | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor, RINGuidedVelocity], None] | None = None,
    cache_condition: bool = True,
) -> torch.Tensor:
    """Their Euler loop: from ``noise`` at ``gammas[0]`` (~0) to ``gammas[-1]`` (1), ``x <- x - v dgamma``.

    ``callback(i, x_next, v, velocity)`` after step i (``velocity.branch_outputs`` has the step's branches).
    Returns the fp32 state at the last gamma.  Grad mode is the caller's."""
    if noise.shape[0] != conds.batch_size:
        raise ValueError(f"noise has batch {noise.shape[0]} but the conditions have {conds.batch_size}")
    if gammas.dim() != 1 or gammas.numel() < 2:
        raise ValueError(f"gammas must be a 1-d grid of at least 2 values, got shape {list(gammas.shape)}")
    velocity = RINGuidedVelocity(model, conds, null_text, guidance, autocast, cache_condition)
    x = noise.float()
    gammas = gammas.to(device=x.device, dtype=torch.float32)
    for i in range(gammas.numel() - 1):
        v = velocity(x, gammas[i])
        x = x - v * (gammas[i + 1] - gammas[i])
        if callback is not None:
            callback(i, x, v, velocity)
    return x
