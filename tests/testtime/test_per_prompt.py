"""Per-prompt test-time training (miro.testtime.per_prompt) on the tiny random pipeline."""

import numpy as np
import pytest
import torch

from miro.models.lora import LoraSpec, adapter_names
from miro.testtime.per_prompt import TTTSettings, borda, ttt_per_prompt
from miro.testtime.render import Renderer
from miro.testtime.verifier import RewardNorm, Scores, Verifier
from miro.utils.config import ConfigError
from tests.testtime.conftest import SETTINGS, Brightness

PROMPTS = ["a red circle", "two blue squares"]


def verifier():
    return Verifier([Brightness()], norms={"brightness": RewardNorm(0.5, 0.1, "x")})


def small(**kw):
    base = dict(n_pseudo=6, top_k=3, steps=12, lr=3e-3, batch_size=3, val_every=4, val_draws=4, final_samples=4,
                patience=8, lora=LoraSpec(rank=2, alpha=2))  # fmt: skip
    return TTTSettings(**{**base, **kw})


def test_nfe_is_what_the_network_evaluated_and_the_model_is_left_as_it_was(tiny_pipe, rows):
    model = tiny_pipe.transformer
    x = torch.randn(1, 3, 8, 8)
    args = (x, torch.tensor([0.5]), torch.randn(1, 3, 384), torch.ones(1, 3, dtype=torch.bool))
    with torch.no_grad():
        before_out = model(*args)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    start = rows.nfe()
    images, trace = ttt_per_prompt(
        tiny_pipe, PROMPTS, verifier(), seeds=[0, 1], config=small(), settings=SETTINGS
    )
    assert rows.nfe() - start == pytest.approx(trace.nfe + trace.report_nfe)
    one = Renderer(tiny_pipe, SETTINGS).one_sample_nfe()  # 6
    for s in trace.searches:
        e = s.extra
        n_val = len(e["val_loss"])
        # 6 demos + 4 finals rendered, every training row 1 forward + 1 backward (2), every validation draw 1
        assert s.nfe == pytest.approx((6 + 4) * one + 3 * 3 * e["steps_run"] + 4 * n_val)
        assert [c.extra["stage"] for c in s.candidates] == ["pseudo"] * 6 + ["final"] * 4
        assert s.chosen >= 6 and e["chosen_score"] == s.candidates[s.chosen].score
        assert e["best_demo_score"] == max(c.score for c in s.candidates[:6])
        assert e["beats_best_demo"] == (e["chosen_score"] > e["best_demo_score"])
        assert len(e["demos"]) == 3 and e["held_out_demo"] == e["demos"][-1]
    assert trace.searches[0].extra["augmentations"] == ["hflip", "translate", "crop"]  # "a red circle"
    assert trace.searches[1].extra["augmentations"] == ["hflip"]  # "two blue squares": counts and a colour
    assert len(images) == 2 and images[0].size == (8, 8)
    # the adapter is gone and the transformer is what it was
    assert adapter_names(model) == []
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    with torch.no_grad():
        assert torch.equal(model(*args), before_out)


def test_training_lowers_the_held_out_demos_loss_and_lr_zero_changes_nothing(tiny_pipe):
    _, trained = ttt_per_prompt(
        tiny_pipe, PROMPTS[:1], verifier(), config=small(steps=20, patience=20), settings=SETTINGS
    )
    e = trained.searches[0].extra
    assert e["best_val_loss"] < 0.95 * e["val_loss"][0] and e["best_step"] > 0
    # lr = 0: the adapter stays a no-op, so the final candidates are the base model's samples of those noises
    _, frozen = ttt_per_prompt(
        tiny_pipe, PROMPTS[:1], verifier(), config=small(lr=0.0, augment="none"), settings=SETTINGS
    )
    e0 = frozen.searches[0].extra
    assert e0["best_step"] == 0 and len(set(e0["val_loss"])) == 1
    r = Renderer(tiny_pipe, SETTINGS)
    noise = torch.cat([r.noise(0, j) for j in range(6, 10)])  # augment="none": no mirrored views either
    base, _ = r.render(PROMPTS[0], noise, r.default)
    got = [c.rewards["brightness"] for c in frozen.searches[0].candidates[6:]]
    from miro.testtime.render import to_pil

    want = Brightness().score(to_pil(base), [PROMPTS[0]] * 4)
    np.testing.assert_allclose(got, want)


def test_deterministic_for_a_seed(tiny_pipe):
    a_img, a = ttt_per_prompt(tiny_pipe, PROMPTS[:1], verifier(), seeds=3, config=small(), settings=SETTINGS)
    b_img, b = ttt_per_prompt(tiny_pipe, PROMPTS[:1], verifier(), seeds=3, config=small(), settings=SETTINGS)
    assert [c.rewards for c in a.searches[0].candidates] == [c.rewards for c in b.searches[0].candidates]
    assert np.array_equal(np.asarray(a_img[0]), np.asarray(b_img[0]))


def test_borda_sums_weighted_ranks():
    raw = np.array([[1.0, 0.0], [2.0, 5.0], [3.0, 1.0]])
    s = Scores(["a", "b"], raw, raw, raw @ np.array([1.0, 1.0]))
    # ranks a: 0, 1, 2; b: 0, 2, 1 -> sums 0, 3, 3; the tie goes to the higher score (7 against 4)
    assert int(np.argmax(borda(s, {"a": 1.0, "b": 1.0}))) == 1
    assert int(np.argmax(borda(s, {"a": 1.0, "b": 0.0}))) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_k": 7}, "ttt.top_k"),
        ({"top_k": 1}, "held out for validation"),
        ({"vote": "majority"}, "ttt.vote"),
        ({"steps": 0}, "ttt.steps"),
        ({"lr": -1.0}, "ttt.lr"),
    ],
)
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        small(**kwargs)


def test_bad_calls_are_clear_errors(tiny_pipe):
    with pytest.raises(ValueError, match="left/right relation"):
        ttt_per_prompt(
            tiny_pipe,
            ["a circle left of a star"],
            verifier(),
            config=small(augment=["hflip"]),
            settings=SETTINGS,
        )
    with pytest.raises(ValueError, match="non-empty list"):
        ttt_per_prompt(tiny_pipe, [], verifier(), config=small(), settings=SETTINGS)
    assert adapter_names(tiny_pipe.transformer) == []


@pytest.mark.parametrize("samples", [4, 8, 16, 37])
def test_settings_for_a_budget_fit_it(samples):
    from miro.testtime.per_prompt import settings_for_budget

    cfg = settings_for_budget(samples, 75, 0)
    assert cfg.planned_nfe(75, 0) <= samples * 75 and cfg.steps >= 1
    assert (
        cfg.n_pseudo == samples // 2
        and cfg.final_samples == max(1, samples // 4)
        and cfg.top_k <= cfg.n_pseudo
    )


def test_a_budget_too_small_to_train_is_refused():
    from miro.testtime.budget import BudgetError
    from miro.testtime.per_prompt import settings_for_budget

    with pytest.raises(BudgetError, match="at least 4 samples"):
        settings_for_budget(2, 75, 0)
