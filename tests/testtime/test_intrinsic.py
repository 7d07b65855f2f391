from types import SimpleNamespace

import numpy as np
import pytest
import torch

from miro.testtime.intrinsic import IntrinsicVerifier, RubricVerifier, counterfactual_probes
from miro.utils.config import ConfigError
from tests.testtime.conftest import stub_pipe

BRIGHT, DARK = 0.8, -0.8


class RewardStub(torch.nn.Module):
    """A velocity network whose data estimate for reward ``judged`` is known: x0_hat = s DARK... BRIGHT, i.e.
    s * BRIGHT + (1 - s) * DARK (the reward's null embedding: 0.5), whatever the other rewards; the velocity is
    the exact one for that estimate, v = (x_t - x0_hat) / t, so ||v - u||^2 = ||x_0 - x0_hat||^2 / t^2."""

    def __init__(self, names, judged):
        super().__init__()
        self.config = SimpleNamespace(reward_names=list(names))
        self.k = list(names).index(judged)
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.rows = 0

    @property
    def dtype(self):
        return self.anchor.dtype

    @property
    def device(self):
        return self.anchor.device

    def forward(self, x, t, text, text_mask, rewards=None, reward_mask=None, drop_text=None):
        self.rows += x.shape[0]
        s = torch.where(reward_mask[:, self.k], rewards[:, self.k], torch.full_like(rewards[:, self.k], 0.5))
        s = s.view(-1, 1, 1, 1)
        x0_hat = s * BRIGHT + (1 - s) * DARK
        return (x - x0_hat) / t.view(-1, 1, 1, 1)


def test_the_sign_and_size_of_the_reward_likelihood_ratio_are_right():
    names = ["sharpness", "aesthetic"]
    model = RewardStub(names, "aesthetic")
    judge = IntrinsicVerifier(stub_pipe(model, names), draws=3, batch_size=5)
    alphas = torch.linspace(0, 1, 5)
    latents = (alphas * BRIGHT + (1 - alphas) * DARK).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    out = judge.score_latents_dict(latents, ["p"] * 5)
    t, _ = judge._draws((3, 4, 4), latents.device)
    # ||x - DARK||^2 - ||x - BRIGHT||^2 per element = (2 alpha - 1) (BRIGHT - DARK)^2, weighted by mean 1 / t^2
    want = (2 * alphas - 1) * (BRIGHT - DARK) ** 2 * (1 / t**2).mean()
    torch.testing.assert_close(out["intrinsic_aesthetic"], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(out["intrinsic_sharpness"], torch.zeros(5))  # the model ignores this reward
    assert model.rows == judge.nfe(["p"] * 5) == 5 * 2 * 2 * 3  # images x rewards x {0, 1} x draws
    # on PIL images through the scorer API: the same ordering
    from miro.testtime.render import to_pil

    got = judge.score_dict(to_pil((latents + 1) / 2), ["p"] * 5)["intrinsic_aesthetic"]
    assert np.all(np.diff(got) > 0) and got[0] < 0 < got[-1]


def test_the_draws_are_fixed_and_shared():
    names = ["aesthetic"]
    judge = IntrinsicVerifier(
        stub_pipe(RewardStub(names, "aesthetic"), names), draws=4, t_range=(0.2, 0.6), seed=7
    )
    t, eps = judge._draws((3, 4, 4), "cpu")
    assert ((t >= 0.2) & (t < 0.6)).all() and (t.diff() > 0).all()  # stratified
    other = IntrinsicVerifier(
        stub_pipe(RewardStub(names, "aesthetic"), names), draws=4, t_range=(0.2, 0.6), seed=7
    )
    assert torch.equal(other._draws((3, 4, 4), "cpu")[1], eps)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(judge.score_latents_dict(x, ["a", "b"])["intrinsic_aesthetic"],
                               other.score_latents_dict(x, ["a", "b"])["intrinsic_aesthetic"])  # fmt: skip


def test_a_rewards_own_noise_band_moves_only_its_draws():
    """t_ranges: the judged reward's draws sit in its band (the same eps and strata), the others keep t_range, and
    the score is the closed form with the band's t; the per-draw differences average to the score."""
    names = ["sharpness", "aesthetic"]
    model = RewardStub(names, "aesthetic")
    plain = IntrinsicVerifier(stub_pipe(model, names), draws=3, batch_size=4)
    banded = IntrinsicVerifier(stub_pipe(model, names), draws=3, batch_size=4, t_ranges={"aesthetic": [0.02, 0.1]})
    latents = torch.full((2, 3, 4, 4), BRIGHT)
    latents[1] = DARK
    t = banded.reward_t_draws(latents)
    u = (plain._draws((3, 4, 4), "cpu")[0] - 0.1) / 0.8  # the default band's strata positions
    assert t.shape == (2, 3) and torch.allclose(t[0], plain._draws((3, 4, 4), "cpu")[0])
    torch.testing.assert_close(t[1], 0.02 + 0.08 * u)  # same strata, mapped into [0.02, 0.1]
    d = banded.differences(latents, ["p", "p"])
    assert d.shape == (2, 3, 2)
    want = torch.tensor([1.0, -1.0]) * (BRIGHT - DARK) ** 2 * (1 / t[1] ** 2).mean()
    got = banded.score_latents_dict(latents, ["p", "p"])
    torch.testing.assert_close(got["intrinsic_aesthetic"], want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(d.mean(1)[:, 1], got["intrinsic_aesthetic"])
    # low t weighs 1 / t^2 more: the banded score is larger than the plain one, with the same sign
    assert (got["intrinsic_aesthetic"].abs() > plain.score_latents_dict(latents, ["p", "p"])["intrinsic_aesthetic"].abs()).all()
    for bad, match in (({"pickscore": [0.1, 0.2]}, "does not judge"), ({"aesthetic": [0.3, 0.2]}, "t_lo < t_hi"),
                       ({"aesthetic": "low"}, "t_lo < t_hi"), ([0.1, 0.2], "mapping")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            IntrinsicVerifier(stub_pipe(model, names), t_ranges=bad)


class ColourStub(torch.nn.Module):
    """A text-conditioned stub: the prompt's (first) colour word is its data estimate, v = (x_t - colour) / t."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(reward_names=[])
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    dtype = property(lambda self: self.anchor.dtype)
    device = property(lambda self: self.anchor.device)

    def forward(self, x, t, text, text_mask, rewards=None, reward_mask=None, drop_text=None):
        colour = text[:, 0, :3].view(-1, 3, 1, 1)
        return (x - colour) / t.view(-1, 1, 1, 1)


def colour_encoder(prompts):
    from miro.data.shapes.vocab import COLORS, PALETTE

    emb = torch.zeros(len(prompts), 1, 3)
    for i, p in enumerate(prompts):
        word = next((c for c in COLORS if f" {c} " in f" {p} "), None)
        if word:
            emb[i, 0] = torch.tensor(PALETTE[word], dtype=torch.float32) / 127.5 - 1
    return emb, torch.ones(len(prompts), 1, dtype=torch.bool)


def test_rubric_prefers_the_prompt_that_names_the_images_colour():
    from miro.data.shapes.vocab import PALETTE

    judge = RubricVerifier(stub_pipe(ColourStub(), [], colour_encoder), draws=2, max_counterfactuals=3, aggregate="mean")
    red, green = (torch.tensor(PALETTE[c], dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 4, 4) / 127.5 - 1
                  for c in ("red", "green"))  # fmt: skip
    x = torch.cat([red, green])
    score = judge.score_latents_dict(x, ["a red circle", "a red circle"])["rubric"]
    assert score[0] > 0 > score[1]  # the red image fits its prompt better than every counterfactual
    margins = judge.margins(x, ["a red circle", "a red circle"])
    probes = judge.probes("a red circle")
    colour = [i for i, p in enumerate(probes) if p.kind == "color"]
    cls = [i for i, p in enumerate(probes) if p.kind == "class"]
    # stub ignores class
    assert (margins[0][colour] > 0).all() and torch.equal(margins[0][cls], torch.zeros(len(cls)))
    g = [i for i, p in enumerate(probes) if p.replacement == "green"][0]
    assert margins[1][g] < 0  # for the green image, "a green circle" beats "a red circle"
    assert judge.nfe(["a red circle"]) == 2 * (1 + len(probes)) and judge.nfe(["hello"]) == 0
    assert np.isnan(judge.score_latents_dict(x[:1], ["hello world"])["rubric"][0].item())
    # per draw: [draws, probes] whose mean over draws is the margin; t of each draw inside t_range
    per = judge.margins(x, ["a red circle", "hello"], per_draw=True)
    assert per[0].shape == (2, len(probes)) and per[1].shape == (2, 0)
    torch.testing.assert_close(per[0].mean(0), margins[0])
    # the worst probe as the score: the red image's smallest margin, the green image's most negative one
    worst = RubricVerifier(stub_pipe(ColourStub(), [], colour_encoder), draws=2, max_counterfactuals=3)  # the default
    torch.testing.assert_close(worst.score_latents_dict(x, ["a red circle"] * 2)["rubric"],
                               torch.stack([margins[0].min(), margins[1].min()]))  # fmt: skip
    with pytest.raises(ConfigError, match="rubric.aggregate"):
        RubricVerifier(stub_pipe(ColourStub(), [], colour_encoder), aggregate="median")
    t = judge.t_draws(x)
    assert t.shape == (2,) and bool(((t > judge.t_range[0]) & (t < judge.t_range[1])).all())


def test_counterfactual_probes():
    probes = counterfactual_probes("a photo of a red circle left of two blue stars", max_per_word=2)
    got = {(p.kind, p.word, p.replacement): p.prompt for p in probes}
    # article fixed
    assert got[("color", "red", "orange")] == "a photo of an orange circle left of two blue stars"
    assert got[("class", "stars", "hexagons")] == "a photo of a red circle left of two blue hexagons"
    assert got[("count", "two", "three")] == "a photo of a red circle left of three blue stars"
    assert got[("relation", "left of", "right of")] == "a photo of a red circle right of two blue stars"
    assert all(
        p.replacement not in ("red", "blue", "circle", "circles")
        for p in probes
        if p.kind in ("color", "class")
    )
    assert counterfactual_probes("a sunset") == []


def test_intrinsic_on_the_tiny_pipeline_counts_its_rows(tiny_pipe, rows):
    judge = IntrinsicVerifier(tiny_pipe, rewards=["aesthetic", "pickscore"], draws=2, batch_size=3)
    from miro.testtime.render import to_pil

    images = to_pil(torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    a = judge.score_dict(images, ["a red circle"] * 3)
    assert rows.forward == judge.nfe(["p"] * 3) == 3 * 2 * 2 * 2
    b = judge.score_dict(images, ["a red circle"] * 3)
    assert set(a) == {"intrinsic_aesthetic", "intrinsic_pickscore"}
    assert all(np.array_equal(a[k], b[k]) and np.isfinite(a[k]).all() for k in a)  # deterministic
    rub = RubricVerifier(tiny_pipe, draws=1)
    before = rows.forward
    rub.score(images[:1], ["a red circle"])
    assert rows.forward - before == rub.nfe(["a red circle"])


@pytest.mark.parametrize("kwargs,match", [
    ({"rewards": ["nope"]}, r"intrinsic.rewards=\['nope'\]: must be a non-empty subset"),
    ({"draws": 0}, "draws=0: must be a positive integer"),
    ({"t_range": (0.0, 0.5)}, "t_range"),
    ({"others": 2.0}, "intrinsic.others=2.0"),
])  # fmt: skip
def test_bad_intrinsic_arguments(kwargs, match):
    names = ["aesthetic"]
    with pytest.raises(ConfigError, match=match):
        IntrinsicVerifier(stub_pipe(RewardStub(names, "aesthetic"), names), **kwargs)


def test_the_authors_keys_name_the_judged_rewards():
    names = ["sharpness", "aesthetic"]
    judge = IntrinsicVerifier(stub_pipe(RewardStub(names, "aesthetic"), names), rewards=["aesthetic_score"], draws=2)
    assert judge.rewards == ["aesthetic"] and judge.outputs == ("intrinsic_aesthetic",)
    with pytest.raises(ConfigError, match="intrinsic.rewards.*each once"):
        IntrinsicVerifier(stub_pipe(RewardStub(names, "aesthetic"), names), rewards=["aesthetic", "aesthetic_score"])
