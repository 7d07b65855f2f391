import math

import numpy as np
import pytest
import torch

from miro.sampling.settings import SamplingSettings
from miro.testtime.budget import Budget
from miro.testtime.intrinsic import IntrinsicVerifier
from miro.testtime.render import Renderer
from miro.testtime.reno import chi_nll, reno_optimize
from miro.testtime.verifier import RewardNorm, Verifier, VerifierError
from tests.testtime.conftest import Brightness, Likes


def brightness():
    return Verifier([Brightness()], norms={"brightness": RewardNorm(0.5, 0.05, "x")})


def test_chi_prior_is_minimal_on_the_shell():
    d = 192
    radii = torch.linspace(5, 25, 201)
    values = torch.stack([chi_nll(r * torch.ones(d) / math.sqrt(d)) for r in radii])
    assert abs(float(radii[values.argmin()]) - math.sqrt(d - 1)) < 0.11


def test_reno_raises_a_toy_reward_and_keeps_the_noise_on_the_shell(renderer):
    def run(reg):
        return reno_optimize(renderer, ["a red circle"], brightness(), Budget(samples=40), seeds=0, steps=2, lr=5.0,
                             reg_weight=reg)[1].searches[0]  # fmt: skip

    s, free = run(1.0), run(0.0)
    shell = math.sqrt(renderer.noise_dim)
    drift = [abs(c.noise["norm"] / shell - 1) for c in s.candidates]
    assert max(drift) < 0.06  # ||z|| stays near sqrt(D) ...
    # ... which it does not without the prior
    assert max(abs(c.noise["norm"] / shell - 1) for c in free.candidates) > 0.2
    iterates = [c for c in s.candidates if c.extra["phase"] == "iterate"]
    assert len(iterates) == s.extra["iterations"] >= 10
    scores = [c.score for c in iterates]
    assert max(scores) > scores[0] + 1.0 and scores[-1] > scores[0]  # the verifier's score rises (z units)
    final = s.candidates[-1]
    # re-rendered with settings.steps
    assert final.extra["phase"] == "final_render" and s.chosen == final.index
    assert final.noise["iteration"] == int(np.argmax(scores)) and final.noise["steps"] == 3
    assert abs(s.noise_norm / shell - 1) < 0.06


def test_reno_nfe_counts_forward_and_backward_rows_and_s_plus_stays_in_range(tiny_pipe, rows):
    renderer = Renderer(tiny_pipe, SamplingSettings(steps=3, reward_targets={"pickscore": None}))
    judge = IntrinsicVerifier(tiny_pipe, rewards=["aesthetic"], draws=1)
    v = Verifier([Brightness(), judge], weights={"brightness": 1.0, "intrinsic_aesthetic": 0.5},
                 norms={"brightness": RewardNorm(0.5, 0.05, "x")})  # fmt: skip
    _, trace = reno_optimize(renderer, ["a red circle", "a star"], v, Budget(samples=12), seeds=[0, 1], steps=2,
                    optimize_s_plus=True, s_plus_lr=0.5)  # fmt: skip
    assert rows.forward + 2 * rows.backward == trace.nfe + trace.report_nfe
    for s in trace.searches:
        assert s.nfe <= s.budget_nfe and s.extra["iterations"] >= 1
        # per iteration: (2 steps x 2 NFE + 2 judge rows) x (1 forward + 2 backward) + 2 to score the iterate
        assert s.extra["iteration_nfe"] == 6 * 3 + 2
        targets = [c.condition["reward_targets"] for c in s.candidates]
        assert all(0.0 <= t[r] <= 1.0 for t in targets for r in ("sharpness", "aesthetic"))
        assert all(t["pickscore"] is None for t in targets)  # a free reward stays free
    assert trace.options["differentiable_terms"] == ["brightness", "intrinsic_aesthetic"]


def test_reno_with_one_sample_is_the_baseline_and_needs_a_differentiable_chooser(renderer, tiny_pipe):
    images, trace = reno_optimize(renderer, ["a red circle"], brightness(), Budget(samples=1), seeds=4)
    want = tiny_pipe("a red circle", settings=renderer.settings, generator=torch.Generator().manual_seed(4))[
        0
    ]
    assert trace.searches[0].extra["iterations"] == 0 and np.array_equal(
        np.asarray(images[0]), np.asarray(want)
    )
    with pytest.raises(VerifierError, match="no chooser of this verifier is differentiable"):
        reno_optimize(renderer, ["a red circle"], Verifier([Likes(want)]), Budget(samples=4))
