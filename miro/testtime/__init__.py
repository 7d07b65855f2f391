"""Test-time scaling for a reward-conditioned flow model: verifiers, the model as its own judge, search over
noises and reward conditions, and gradient optimisation of the noise, all under one compute budget.

    from miro.testtime import Budget, Verifier, best_of_n
    images, trace = best_of_n(pipe, ["a red circle"], Verifier(scorers), Budget(samples=8), seeds=0)

Modules: ``budget`` (NFE-eq accounting, ``Budget``, ``Trace``), ``render`` (candidates through the pipeline's
sampler), ``verifier`` (z-normalised weighted rewards, held-out rewards, the GenEval judge), ``differentiable``
(torch forms of the weight-free rewards), ``intrinsic`` (the model's own likelihood ratios), ``methods``
(best-of-N, noise search, reward-condition search), ``reno`` (noise optimisation), ``cli`` (``python -m
miro.testtime``).  The names below load on first use.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "Budget": "budget", "BudgetError": "budget", "BudgetExceeded": "budget", "Trace": "budget",
    "SearchTrace": "budget", "Candidate": "budget",
    "Renderer": "render", "Condition": "render",
    "Verifier": "verifier", "VerifierError": "verifier", "RewardNorm": "verifier", "GenEvalScorer": "verifier",
    "norms_from_reward_stats": "verifier", "load_prompt_metadata": "verifier",
    "IntrinsicVerifier": "intrinsic", "RubricVerifier": "intrinsic", "counterfactual_probes": "intrinsic",
    "differentiable_reward": "differentiable",
    "best_of_n": "methods", "noise_search": "methods", "condition_search": "methods", "run_method": "methods",
    "METHODS": "methods", "reno_optimize": "reno",
    "ttrl_adapt": "ttrl", "TTRLResult": "ttrl", "sde_rollout": "sde", "step_log_prob": "sde", "Rollout": "sde",
}  # fmt: skip

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"miro.testtime.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'miro.testtime' has no attribute {name!r}")
