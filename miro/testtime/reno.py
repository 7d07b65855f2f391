"""ReNO-style reward-based optimisation of the initial noise (and optionally of s+) through a few-step sampler.

Why (ReNO, Eyring et al. 2024; testtime.md 2.3): when the rewards are differentiable, the gradient of the
reward of the final image with respect to the initial noise points to a better noise, far more directly than
random search.  The variable is the initial noise z (and, as only a reward-conditioned model allows, the
positive reward targets s+, a few well-conditioned numbers); the objective is the verifier's differentiable
score (``Verifier.objective``: the weighted z-scores of the choosers that have a torch form: the weight-free
rewards of ``miro.testtime.differentiable``, the intrinsic verifier, or any scorer with ``score_tensor``) minus
a norm prior that keeps z on the Gaussian shell, the negative log-likelihood of ||z|| under a chi distribution
with D degrees of freedom:

    K(z) = ||z||^2 / 2 - (D - 1) log ||z||        (minimal at ||z|| = sqrt(D - 1), i.e. about sqrt(D))

    loss = -objective(decode(sample_K'(z, s+))) + reg_weight K(z)

Each iteration renders z with ``steps`` (K') Euler steps with gradients, takes one SGD step (Nesterov momentum,
gradient norm clipped per variable, ReNO's defaults: lr 5, momentum 0.9, clip 0.1, reg 0.01) and records the
iterate as a candidate scored by the whole verifier.  s+ is clamped to [0, 1] after each step.  The best
iterate is then re-rendered with the settings' full steps (ReNO's ``multi_apply``), which is the output; the
trace holds both scores, so whether the re-render keeps the gain is visible.

Cost per iteration, charged exactly: the forward rows of the few-step sampler and of the differentiable
verifier terms, twice that again for the backward pass, plus the verifier's scoring of the iterate; one full
sample is reserved for the re-render.  A budget of one sample leaves no iteration: the output is then the
seed's plain sample.  Memory: one graph of K' steps for one image (no checkpointing).

The prior's pull on the norm grows with sqrt(D) (its gradient is about 2 (||z|| / sqrt(D) - 1) sqrt(D)), while the
gradient is clipped as a whole: ReNO's weight 0.01 was set for SD-Turbo's D = 16384; on a small latent (the
shapes world's 3 x 32 x 32 or the tests' 3 x 8 x 8) a weight near 1 is needed to hold ||z|| within a few
per cent of sqrt(D) (tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from miro.testtime.budget import BACKWARD, FORWARD, Budget, Trace
from miro.testtime.search import Search, as_renderer, check_positive_int, new_trace, seed_list
from miro.testtime.verifier import Verifier, scorer_nfe
from miro.utils.config import require


def chi_nll(z: torch.Tensor) -> torch.Tensor:
    """ReNO's norm prior: the negative log-density of ||z|| under a chi distribution with D = z.numel() degrees of
    freedom, up to a constant."""
    d = z.numel()
    r = z.float().norm()
    return 0.5 * r**2 - (d - 1) * torch.log(r)


def reno_optimize(pipe, prompts: Sequence[str], verifier: Verifier, budget: Budget, *,
                  seeds: int | Sequence[int] = 0, steps: int = 4, lr: float = 5.0, momentum: float = 0.9,
                  grad_clip: float = 0.1, reg_weight: float = 0.01, optimize_s_plus: bool = False,
                  s_plus_lr: float = 0.05, max_iters: int | None = None, final_render: bool = True, settings=None,
                  batch_size: int = 1, mixed_precision: str = "auto") -> tuple[list, Trace]:  # fmt: skip
    """Optimise the initial noise (and s+) of each prompt's search by gradient ascent (module docstring).

    ``steps``: the few-step sampler's steps; ``max_iters``: at most this many iterations (default: what the
    budget pays for); ``final_render``: re-render the best iterate with the settings' steps (skipped when
    ``steps`` equals them)."""
    check_positive_int("reno.steps", steps)
    for key, value in (("reno.lr", lr), ("reno.grad_clip", grad_clip), ("reno.s_plus_lr", s_plus_lr)):
        require(
            isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
            key,
            value,
            "must be a number > 0",
        )
    require(0.0 <= momentum < 1.0, "reno.momentum", momentum, "must be in [0, 1)")
    require(reg_weight >= 0, "reno.reg_weight", reg_weight, "must be >= 0")
    if max_iters is not None:
        check_positive_int("reno.max_iters", max_iters, 0)
    renderer = as_renderer(pipe, settings, mixed_precision)
    seeds = seed_list(prompts, seeds)
    terms = verifier.differentiable_terms()
    if not terms:
        verifier.objective(None, [], terms=terms)  # raises the VerifierError naming the choosers
    options = {"steps": steps, "lr": lr, "momentum": momentum, "grad_clip": grad_clip, "reg_weight": reg_weight,
               "optimize_s_plus": optimize_s_plus, "s_plus_lr": s_plus_lr, "max_iters": max_iters,
               "final_render": final_render, "differentiable_terms": sorted(terms)}  # fmt: skip
    trace = new_trace("reno", renderer, verifier, budget, options)
    default = renderer.default
    guidance = renderer.guidance(default)
    rerender = final_render and steps != renderer.settings.steps
    names = renderer.names
    images = []
    for prompt, seed in zip(prompts, seeds):
        s = Search(renderer, verifier, budget, prompt, seed)
        unique = {id(t): t for t in terms.values()}.values()
        obj_fwd = float(sum(scorer_nfe(t, [prompt]) for t in unique))
        few = renderer.nfe(default, steps)
        iter_cost = (FORWARD + BACKWARD) * (few + obj_fwd) + s.choose_nfe
        reserve = float(renderer.nfe(default)) if rerender else 0.0
        device = renderer.device
        z = renderer.noise(seed, 0).to(device).requires_grad_(True)
        params = [{"params": [z], "lr": float(lr)}]
        sp_values = [default.s_plus[n] for n in names]
        sp_mask = torch.tensor([v is not None for v in sp_values], device=device)
        sp = torch.tensor([[0.0 if v is None else float(v) for v in sp_values]], device=device)
        if optimize_s_plus:
            sp.requires_grad_(True)
            params.append({"params": [sp], "lr": float(s_plus_lr)})
        opt = torch.optim.SGD(params, lr=float(lr), momentum=float(momentum), nesterov=momentum > 0)

        def condition(sp=sp, sp_mask=sp_mask):
            vals = sp.detach()[0].tolist()
            return default.replace(s_plus={n: (vals[k] if sp_mask[k] else None) for k, n in enumerate(names)})

        iters = 0
        while (max_iters is None or iters < max_iters) and s.meter.can_afford(iter_cost + reserve):
            before = renderer.counter.forward
            with torch.enable_grad():
                conds = renderer.conditions(prompt, [default])
                conds = replace(conds, pos_rewards=torch.where(sp_mask, sp.clamp(0, 1), conds.pos_rewards))
                latents = renderer.sample(z, conds, guidance, steps)
                img = renderer.decode(latents, differentiable=True)
                rendered = renderer.counter.forward - before
                objective = verifier.objective(img, [prompt], latents=latents, terms=terms)[0]
                loss = -objective + reg_weight * chi_nll(z)
                grads = torch.autograd.grad(loss, [p for g in params for p in g["params"]])
            objective, loss = objective.detach(), loss.detach()
            rows = rendered + obj_fwd
            s.meter.charge(FORWARD * rows + BACKWARD * rows, "reno iteration (forward + backward)")
            info = {
                "seed": seed,
                "index": 0,
                "iteration": iters,
                "steps": steps,
                "norm": float(z.detach().norm()),
            }
            s.evaluate(img.detach(), 0.0, True, [condition()], [info], z.detach(),
                       extras=[{"objective": objective.item(), "loss": loss.item(), "phase": "iterate"}])  # fmt: skip
            for p, g in zip([p for grp in params for p in grp["params"]], grads):
                norm = float(g.norm())
                p.grad = g * (grad_clip / norm) if norm > grad_clip else g
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                sp.clamp_(0, 1)
            iters += 1
        if rerender or iters == 0:
            best = s.best_noise if (iters and s.best_noise is not None) else z.detach().cpu()
            cond = default
            if iters and s.trace.chosen_condition is not None:
                cond = renderer.condition(s.trace.chosen_condition["reward_targets"],
                                          s.trace.chosen_condition["negative_reward_targets"],
                                          s.trace.chosen_condition["guidance_scale"])  # fmt: skip
            s.ensure(renderer.nfe(cond), 1, False, "reno final render")
            out, spent = renderer.render(prompt, best, cond)
            info = {"seed": seed, "index": 0, "iteration": s.trace.chosen if iters else None,
                    "steps": renderer.settings.steps, "norm": float(best.norm())}  # fmt: skip
            s.evaluate(
                out, spent, False, [cond], [info], best, extras=[{"phase": "final_render"}], keep="last"
            )
        image, st = s.finish(iterations=iters, iteration_nfe=iter_cost)
        images.append(image)
        trace.searches.append(st)
    return images, trace
