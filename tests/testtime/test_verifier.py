import json

import numpy as np
import pytest
import torch
from PIL import Image

from miro.testtime.verifier import GenEvalScorer, RewardNorm, Verifier, VerifierError, norms_from_reward_stats
from tests.testtime.conftest import Brightness, Likes


def solid(value: int, size: int = 8) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8))


class Const:
    def __init__(self, name, values):
        self.name, self.values = name, list(values)

    def score(self, images, prompts):
        return np.array(
            [self.values[int(np.asarray(im)[0, 0, 0]) % len(self.values)] for im in images], dtype=float
        )


def test_z_normalisation_from_stats_and_from_a_reference_batch(tmp_path):
    stats = {"format": 1, "num_bins": 2, "rewards": {
        "brightness": {"edges": [0.0, 0.5, 1.0], "mean": 0.5, "std": 0.25, "count": 10},
        "other": {"edges": [0.0, 0.5, 1.0], "mean": None, "std": None, "count": 0}}}  # fmt: skip
    (tmp_path / "reward_stats.json").write_text(json.dumps(stats))
    norms = norms_from_reward_stats(tmp_path)
    assert norms["brightness"].mean == 0.5 and norms["brightness"].std == 0.25 and "other" not in norms
    v = Verifier([Brightness(), Const("flat", [3.0])], weights={"brightness": 2.0}, norms=norms)
    s = v.score([solid(0), solid(255)], ["p", "p"])
    np.testing.assert_allclose(s.raw[:, 0], [0.0, 1.0])
    np.testing.assert_allclose(s.z[:, 0], [-2.0, 2.0])  # (r - 0.5) / 0.25
    np.testing.assert_allclose(s.score, [-4.0, 4.0])  # weight 2; "flat" is reported, not a chooser
    # a reference batch sets the rewards without stats: mean and sample std; a constant reward keeps std 1
    ref = [solid(v) for v in (0, 51, 102)]
    v.calibrate(ref, ["p"] * 3)
    assert v.norms["brightness"].source.startswith("reward_stats")  # only_missing: stats kept
    assert v.norms["flat"] == RewardNorm(3.0, 1.0, "reference batch of 3 images (constant: std set to 1)")
    v.calibrate(ref, ["p"] * 3, only_missing=False)
    x = np.array([0, 51, 102]) / 255
    assert v.norms["brightness"].mean == pytest.approx(x.mean()) and v.norms[
        "brightness"
    ].std == pytest.approx(x.std(ddof=1))


def test_a_verifier_picks_the_image_it_prefers_and_held_out_rewards_do_not_choose():
    images = [solid(v) for v in (10, 200, 120)]
    likes = Likes(images[2])
    v = Verifier([likes, Brightness()], held_out=["brightness"])
    s = v.score(images, ["p"] * 3)
    assert int(np.argmax(s.score)) == 2  # the liked image, though brightness prefers image 1
    assert s.column("brightness").argmax() == 1 and v.choosers == ["likes"]
    assert v.describe()["brightness"] == {
        "role": "held_out",
        "weight": 0.0,
        "mean": 0.0,
        "std": 1.0,
        "norm_source": "none",
    }
    # the held-out reward is scored (reported) for every image
    assert set(s.rewards(0)) == {"likes", "brightness"} and not np.isnan(s.column("brightness")).any()


def test_scoring_is_batched_in_chunks_with_the_same_numbers():
    images = [solid(v) for v in range(0, 250, 25)]
    big, small = Likes(images[3]), Likes(images[3])
    a = Verifier([big], batch_size=16).score(images, ["p"] * 10)
    b = Verifier([small], batch_size=3).score(images, ["p"] * 10)
    assert big.calls == [10] and small.calls == [3, 3, 3, 1]
    np.testing.assert_array_equal(a.raw, b.raw)


def test_nan_rewards_count_as_average():
    v = Verifier([Const("a", [1.0, np.nan])], norms={"a": RewardNorm(1.0, 1.0, "x")})
    s = v.score([solid(0), solid(1)], ["p", "p"])
    assert s.score.tolist() == [0.0, 0.0] and np.isnan(s.raw[1, 0])


@pytest.mark.parametrize("kwargs,match", [
    ({"scorers": []}, "no scorers given"),
    ({"weights": {"nope": 1.0}}, r"verifier.weights: unknown rewards \['nope'\]; the scorers give \['brightness', 'likes'\]"),
    ({"held_out": ["nope"]}, r"verifier.held_out=\['nope'\]: unknown rewards"),
    ({"weights": {"likes": 1.0}, "held_out": ["likes"]}, r"\['likes'\] is held out and also a chooser"),
    ({"held_out": ["brightness", "likes"]}, "no reward chooses"),
    ({"weights": {"likes": 0.0}}, "no reward chooses"),
    ({"scorers": "dup"}, "given by more than one scorer"),
    ({"batch_size": 0}, "verifier.batch_size=0"),
])  # fmt: skip
def test_bad_verifiers_give_clear_errors(kwargs, match):
    scorers = [Brightness(), Likes(solid(0))]
    if kwargs.get("scorers") == "dup":
        kwargs["scorers"] = [Brightness(), Brightness()]
    kwargs.setdefault("scorers", scorers)
    with pytest.raises(VerifierError, match=match):
        Verifier(**kwargs)


def test_differentiable_objective_uses_torch_forms_of_weight_free_choosers():
    from annotate.scorers.registry import build_scorers

    pixels = build_scorers(["colorfulness", "contrast"])  # one PixelScorer with two outputs
    v = Verifier([*pixels, Likes(solid(0))], weights={"colorfulness": 1.0, "contrast": 2.0, "likes": 1.0},
                 norms={"colorfulness": RewardNorm(10.0, 5.0, "x")})  # fmt: skip
    terms = v.differentiable_terms()
    assert sorted(terms) == ["colorfulness", "contrast"]  # "likes" has no torch form
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    obj = v.objective(x, ["p", "p"])
    (g,) = torch.autograd.grad(obj.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    with pytest.raises(VerifierError, match="no chooser of this verifier is differentiable"):
        Verifier([Likes(solid(0))]).objective(x, ["p", "p"])


def test_geneval_judge_reads_the_metadata_file(tmp_path):
    from miro.eval.geneval.shapes_oracle import oracle_generate_fn

    rows = [{"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}], "prompt": "a photo of a red circle"},
            {"tag": "counting", "include": [{"class": "star", "count": 2}], "exclude": [{"class": "star", "count": 3}],
             "prompt": "a photo of two stars"}]  # fmt: skip
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = oracle_generate_fn(resolution=64)
    red = gen(rows[0]["prompt"], 1, torch.Generator().manual_seed(0))[0]
    stars = gen(rows[1]["prompt"], 1, torch.Generator().manual_seed(0))[0]
    blank = solid(128, 64)
    judge = GenEvalScorer.from_file(path)
    prompts = [
        rows[0]["prompt"],
        rows[1]["prompt"],
        rows[0]["prompt"],
        rows[1]["prompt"],
        "a sunset over the sea",
    ]
    got = judge.score([red, stars, blank, red, red], prompts)
    assert got[:4].tolist() == [1.0, 1.0, 0.0, 0.0] and np.isnan(got[4])  # no metadata: NaN
    soft = GenEvalScorer(rows, soft=True).score([red, blank], prompts[:1] * 2)
    assert soft[0] == 1.0 and 0.0 <= soft[1] < 1.0
    # a shapes caption outside the file is parsed back into metadata
    assert GenEvalScorer().score([red], ["a red circle"]).tolist() == [1.0]
    v = Verifier([Brightness(), judge], held_out=["geneval"])
    assert v.score([red, blank], prompts[:1] * 2).column("geneval").tolist() == [1.0, 0.0]
