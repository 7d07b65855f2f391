import math

import numpy as np
import pytest
import torch

from miro.testtime.budget import Budget, BudgetError, BudgetExceeded
from miro.testtime.intrinsic import IntrinsicVerifier
from miro.testtime.methods import best_of_n, condition_search, noise_search, run_method
from miro.testtime.render import Renderer, to_pil
from miro.testtime.verifier import RewardNorm, Verifier
from miro.utils.config import ConfigError
from tests.testtime.conftest import SETTINGS, Brightness, Likes

PROMPTS = ["a red circle", "two blue squares"]
SEARCHES = {
    "best_of_n": {},
    "noise_search/random": {"algo": "random"},
    "noise_search/zero_order": {"algo": "zero_order", "neighbors": 2, "step": 0.5},
    "condition_search": {"w_max": 8.0},
}


def run(name, pipe, verifier, budget, **kw):
    method = name.split("/")[0]
    return run_method(method, pipe, PROMPTS, verifier, budget, **{**SEARCHES[name], **kw})


def brightness_verifier(pipe=None, draws=1):
    scorers = [Brightness()]
    if pipe is not None:
        scorers.append(IntrinsicVerifier(pipe, rewards=["aesthetic"], draws=draws, batch_size=4))
    return Verifier(scorers, norms={"brightness": RewardNorm(0.5, 0.1, "x")})


@pytest.mark.parametrize("name", list(SEARCHES))
def test_the_traces_nfe_is_what_the_network_evaluated(name, renderer, tiny_pipe, rows):
    """Forward hooks on the transformer count every row; the trace's NFE (charged + report-only) is that count,
    the charged part never exceeds the budget, and held-out scoring is not charged."""
    v = brightness_verifier(tiny_pipe)  # the intrinsic judge runs the network: 2 x 1 draw = 2 NFE per image
    v_held = Verifier(v.scorers, held_out=["intrinsic_aesthetic"])
    for verifier, budget in ((v, Budget(samples=4)), (v_held, Budget(nfe=20)), (v, Budget(samples=1))):
        before = rows.forward
        images, trace = run(name, renderer, verifier, budget, seeds=[0, 1], batch_size=3)
        assert rows.forward - before == trace.nfe + trace.report_nfe
        for s in trace.searches:
            assert s.nfe <= s.budget_nfe + 1e-9
            # (6 + 2) per candidate
            assert len(s.candidates) == {4: 3, 20: 3, 1: 1}[int(budget.samples or budget.nfe)]
        assert len(images) == 2 and images[0].size == (8, 8)
    # budget 1
    assert trace.searches[0].extra["scored_for_choice"] is False and trace.searches[0].report_nfe == 2


@pytest.mark.parametrize("name", list(SEARCHES))
def test_deterministic_for_a_seed_and_the_budget_of_one_sample_is_the_baseline(name, renderer, tiny_pipe):
    v = brightness_verifier()
    a_img, a = run(name, renderer, v, Budget(samples=5), seeds=[3, 4])
    b_img, b = run(name, renderer, v, Budget(samples=5), seeds=[3, 4])
    for x, y in zip(a.searches, b.searches):
        assert [c.rewards for c in x.candidates] == [c.rewards for c in y.candidates]
        assert (
            x.chosen == y.chosen
            and x.chosen_condition == y.chosen_condition
            and x.chosen_noise == y.chosen_noise
        )
    assert all(np.array_equal(np.asarray(i), np.asarray(j)) for i, j in zip(a_img, b_img))
    _, c = run(name, renderer, v, Budget(samples=5), seeds=[5, 6])
    assert [x.rewards for x in c.searches[0].candidates] != [x.rewards for x in a.searches[0].candidates]
    # one sample: the plain sample of the seed with the settings' condition
    one, t = run(name, renderer, v, Budget(samples=1), seeds=[3, 4])
    want = tiny_pipe(PROMPTS, settings=SETTINGS, generator=[torch.Generator().manual_seed(s) for s in (3, 4)])
    assert all(np.array_equal(np.asarray(i), np.asarray(j)) for i, j in zip(one, want))
    assert t.nfe == 2 * renderer.one_sample_nfe()
    # candidate 0 = baseline
    assert a.searches[0].candidates[0].rewards == t.searches[0].candidates[0].rewards


def test_best_of_n_picks_the_image_the_verifier_prefers(renderer):
    target = to_pil(renderer.render(PROMPTS[0], renderer.noise(7, 3), renderer.default)[0])[0]
    likes = Likes(target)
    images, trace = best_of_n(renderer, PROMPTS[:1], Verifier([likes, Brightness()], held_out=["brightness"]),
                              Budget(samples=6), seeds=7, batch_size=4)  # fmt: skip
    s = trace.searches[0]
    assert len(s.candidates) == 6 and s.chosen == 3 and s.chosen_noise == {"seed": 7, "index": 3}
    assert np.array_equal(np.asarray(images[0]), np.asarray(target))
    assert likes.calls == [4, 2]  # scored chunk by chunk, as rendered (memory flat in N)
    # the held-out reward was scored for every candidate but did not choose: it prefers another one
    bright = [c.rewards["brightness"] for c in s.candidates]
    assert all(not math.isnan(b) for b in bright) and int(np.argmax(bright)) != 3
    assert trace.verifier["brightness"]["role"] == "held_out" and s.nfe == 6 * renderer.one_sample_nfe()


def test_candidates_are_rendered_a_chunk_at_a_time(tiny_pipe):
    seen = []

    class Spy(Renderer):
        def render(self, prompt, noise, conditions, steps=None):
            seen.append(noise.shape[0])
            return super().render(prompt, noise, conditions, steps)

    spy = Spy(tiny_pipe, SETTINGS)
    for method, kw in (
        ("best_of_n", {}),
        ("condition_search", {"search_w": False}),
        ("noise_search", {"neighbors": 5}),
    ):
        seen.clear()
        run_method(method, spy, PROMPTS[:1], brightness_verifier(), Budget(samples=12), batch_size=4, **kw)
        assert sum(seen) == 12 and max(seen) <= 4, (method, seen)


def test_zero_order_neighbours_stay_on_the_gaussian_shell(renderer):
    _, trace = noise_search(renderer, PROMPTS[:1], brightness_verifier(), Budget(samples=9), seeds=0, neighbors=4,
                            step=0.9)  # fmt: skip
    s = trace.searches[0]
    assert [c.noise.get("iteration") for c in s.candidates] == [None, 0, 0, 0, 0, 1, 1, 1, 1]
    # the first round is drawn around the seed's noise
    assert all(c.noise["pivot"] == 0 for c in s.candidates[1:5])
    assert s.candidates[5].noise["pivot"] == (int(np.argmax([c.score for c in s.candidates[:5]])))
    assert abs(s.noise_norm / math.sqrt(s.noise_dim) - 1) < 0.15
    scores = [c.score for c in s.candidates]
    assert s.chosen == int(np.argmax(scores))


def test_condition_search_stays_in_its_box_and_starts_from_the_default(renderer):
    _, trace = condition_search(renderer, PROMPTS[:1], brightness_verifier(), Budget(samples=10), seeds=0,
                                rewards=["aesthetic", "sharpness"], s_plus_range=(0.5, 1.0), w_max=4.0)  # fmt: skip
    s = trace.searches[0]
    c0 = s.candidates[0].condition
    assert c0 == {"reward_targets": {"sharpness": 1.0, "aesthetic": 1.0, "pickscore": 1.0},
                  "negative_reward_targets": {"sharpness": 0.0, "aesthetic": 0.0, "pickscore": 0.0},
                  "guidance_scale": 7.0}  # fmt: skip
    phases = [c.extra["phase"] for c in s.candidates]
    assert phases[0] == "default" and phases.count("random") == 4 and phases[-1] == "refine"
    for c in s.candidates[1:]:
        cond = c.condition
        assert all(0.5 <= cond["reward_targets"][r] <= 1.0 for r in ("aesthetic", "sharpness"))
        assert (
            cond["reward_targets"]["pickscore"] == 1.0 and cond["negative_reward_targets"]["pickscore"] == 0.0
        )
        assert all(0.0 <= cond["negative_reward_targets"][r] <= 1.0 for r in ("aesthetic", "sharpness"))
        assert 0.0 <= cond["guidance_scale"] <= 4.0
        assert c.noise == {"seed": 0, "index": 0}  # common random numbers
    assert s.chosen == int(np.argmax([c.score for c in s.candidates]))
    assert s.chosen_condition == s.candidates[s.chosen].condition


def test_condition_search_moves_only_the_targets_its_verifier_sees(renderer):
    """By default the searched targets are the model's rewards the verifier chooses with; a held-out reward's
    target stays the settings' (searching it would be blind).  A verifier that chooses by none of the model's
    rewards by name searches them all."""

    class Sharpness(Brightness):
        name = "sharpness"

    class Aesthetic(Brightness):
        name = "aesthetic"

    v = Verifier([Sharpness(), Aesthetic()], held_out=["aesthetic"])
    _, trace = condition_search(renderer, PROMPTS[:1], v, Budget(samples=6), seeds=0, search_w=False)
    assert trace.options["rewards"] == ["sharpness"]
    conds = [c.condition for c in trace.searches[0].candidates]
    assert {c["reward_targets"]["sharpness"] for c in conds} != {1.0}  # searched
    assert {(c["reward_targets"]["aesthetic"], c["reward_targets"]["pickscore"]) for c in conds} == {(1.0, 1.0)}
    _, trace = condition_search(renderer, PROMPTS[:1], brightness_verifier(), Budget(samples=2), seeds=0)
    assert trace.options["rewards"] == ["sharpness", "aesthetic", "pickscore"]


def test_bad_arguments_give_clear_errors(renderer):
    v = brightness_verifier()
    with pytest.raises(BudgetError, match=r"below one sample \(6 NFE-eq"):
        best_of_n(renderer, PROMPTS, v, Budget(nfe=5))
    with pytest.raises(BudgetExceeded, match="best-of-n with n=5 needs 30 NFE-eq per image"):
        best_of_n(renderer, PROMPTS, v, Budget(samples=4), n=5)
    with pytest.raises(ConfigError, match=r"method='nope': must be one of \['best_of_n', 'noise_search'"):
        run_method("nope", renderer, PROMPTS, v, Budget(samples=2))
    with pytest.raises(ConfigError, match="noise_search.algo='hill': must be one of"):
        noise_search(renderer, PROMPTS, v, Budget(samples=2), algo="hill")
    with pytest.raises(ConfigError, match="condition_search.rewards"):
        condition_search(renderer, PROMPTS, v, Budget(samples=2), rewards=["clip_score"])
    with pytest.raises(ConfigError, match="condition_search.s_plus_range"):
        condition_search(renderer, PROMPTS, v, Budget(samples=2), s_plus_range=(0.5, 1.5))
    with pytest.raises(ValueError, match="1 seeds for 2 prompts"):
        best_of_n(renderer, PROMPTS, v, Budget(samples=2), seeds=[1])


def test_a_bfloat16_transformer_searches_and_optimises(text_encoder):
    """Any dtype: the transformer in bf16 (the state, the guidance sum and the judges' errors stay fp32)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.models.config import AutoencoderConfig, TextEncoderConfig
    from miro.sampling.pipeline import MiroPipeline
    from miro.testtime.reno import reno_optimize
    from tests.sampling.conftest import tiny_transformer

    pipe = MiroPipeline(transformer=tiny_transformer().to(torch.bfloat16),
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
                        text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
                        autoencoder_config=AutoencoderConfig(kind="identity"), text_encoder=text_encoder)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    r = Renderer(pipe, SETTINGS)
    v = Verifier([Brightness(), IntrinsicVerifier(pipe, rewards=["aesthetic"], draws=1)],
                 norms={"brightness": RewardNorm(0.5, 0.1, "x")})  # fmt: skip
    _, trace = best_of_n(r, PROMPTS[:1], v, Budget(samples=3))
    assert len(trace.searches[0].candidates) == 2
    assert all(math.isfinite(x) for c in trace.searches[0].candidates for x in c.rewards.values())
    _, trace = reno_optimize(r, PROMPTS[:1], v, Budget(samples=8), steps=2, max_iters=2)
    assert trace.searches[0].extra["iterations"] == 2 and math.isfinite(
        trace.searches[0].candidates[-1].score
    )


def test_condition_search_takes_the_authors_keys(renderer):
    kw = dict(seeds=0, s_plus_range=(0.5, 1.0), w_max=4.0)
    _, ours = condition_search(renderer, PROMPTS[:1], brightness_verifier(), Budget(samples=6), rewards=["aesthetic", "pickscore"], **kw)
    _, theirs = condition_search(renderer, PROMPTS[:1], brightness_verifier(), Budget(samples=6),
                                 rewards=["aesthetic_score", "pick_a_score_score"], **kw)  # fmt: skip
    assert [c.condition for c in theirs.searches[0].candidates] == [c.condition for c in ours.searches[0].candidates]
    assert {c.condition["reward_targets"]["aesthetic"] for c in ours.searches[0].candidates} != {1.0}  # it searched them
    with pytest.raises(ConfigError, match="condition_search.rewards.*twice"):
        condition_search(renderer, PROMPTS, brightness_verifier(), Budget(samples=2), rewards=["aesthetic", "aesthetic_score"])
