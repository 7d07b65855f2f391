"""scripts/experiments/binding_likelihood.py: the swapped and recoloured captions, the reward conditions, the paired
margins (a closed form on a fake judge) and the script end to end on a tiny pipeline."""

import json

import numpy as np
import pytest
import torch

from tests.sampling.conftest import REWARDS, text_encoder  # noqa: F401
from tests.scripts.loader import load_script

bl = load_script("experiments/binding_likelihood.py")

ROW = {"tag": "color_attr", "prompt": "a photo of a red square and a blue hexagon",
       "include": [{"class": "square", "count": 1, "color": "red"}, {"class": "hexagon", "count": 1, "color": "blue"}]}  # fmt: skip


def test_swapped_and_recoloured_captions():
    assert bl.swapped(ROW)["prompt"] == "a photo of a blue square and a red hexagon"
    assert bl.swapped(bl.swapped(ROW)) == ROW
    control = bl.recoloured(ROW)
    assert control["include"][1] == ROW["include"][1] and control["include"][0]["color"] not in ("red", "blue")
    assert control["prompt"].endswith(f"{control['include'][0]['color']} square and a blue hexagon")
    same = {**ROW, "include": [ROW["include"][0], {**ROW["include"][1], "color": "red"}]}
    with pytest.raises(ValueError, match="two different named colours"):
        bl.swapped(same)


def test_probe_items_name_every_binding_once_and_flag_the_test_pairs(tmp_path):
    captions, items = bl.probe_items(["red", "orange", "blue"], ["circle", "square"], {("orange", "circle")})
    assert len(captions) == 3 * 2 * 2 * 1 and len(items) == 2 * len(captions)
    assert captions[0] == "a photo of a red circle and an orange square"
    assert items[:2] == [(0, 0, 0, False), (0, 1, 1, False)]
    flagged = {(captions[k], obj) for k, obj, _, test in items if test}
    assert flagged == {(c, obj) for c in captions for obj, phrase in enumerate(c[11:].split(" and "))
                       if phrase.endswith("orange circle")}  # fmt: skip
    assert len(flagged) == 4  # orange circle first or second, with each of the two other colours on the square
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"config": {"heldout": {"color_class": ["purple triangle", "green star"]}}}))
    assert bl.world_heldout_pairs(tmp_path) == [("purple", "triangle"), ("green", "star")]
    assert bl.world_heldout_pairs(tmp_path / "nowhere") == []
    splits = bl.probe_splits(tmp_path, 0, ["red", "green", "blue"], ["circle", "star"])
    assert splits["world held-out pairs"] == [("green", "star")] and len(splits["random pairs"]) == 1


def test_the_probe_reads_a_linear_binding_and_not_a_missing_one():
    """A token that holds its class (one-hot plus noise) is read on unseen items; a token without it is at chance."""
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=gen)
    other = (y + torch.randint(1, 4, (400,), generator=gen)) % 4
    bound = torch.nn.functional.one_hot(y, 4).float() * 2 + 0.5 * torch.randn(400, 4, generator=gen)
    unbound = torch.randn(400, 4, generator=gen)
    for feats, low, high in ((bound, 95, 100), (unbound, 35, 65)):
        probe = bl.fit_probe(feats[:300], y[:300], 4)
        two_way, top1 = bl._probe_scores(probe(feats[300:]), y[300:], other[300:])
        assert low <= two_way <= high, two_way


def test_conditions_set_only_the_alignment_reward():
    values, mask = bl.conditions(["sharpness", "alignment"], "cpu")
    assert mask.tolist() == [[False, False], [False, True], [False, True]]
    assert values[:, 1].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(SystemExit, match="no alignment reward"):
        bl.conditions(["sharpness"], "cpu")


class FakeJudge:
    """errors() = a per-text constant plus a per-condition offset: the margins have a closed form."""

    draws = 3

    class pipe:  # noqa: N801
        reward_names = ["alignment"]

    def encode(self, prompts):
        return torch.tensor([float(len(p)) for p in prompts]), None

    def errors(self, x0, img, draw, text_idx, texts, cond_idx, conds):
        lengths = texts[0]
        return lengths[text_idx] + 10.0 * cond_idx.float() + 0.0 * draw.float()


def test_margins_pair_each_row_with_its_swap():
    margin, base = bl.margins(FakeJudge(), torch.zeros(2, 1), ["ab", "abcd"], ["abc", "a"])
    assert margin.shape == (2, 3, 3)
    assert np.allclose(margin[0], 1.0) and np.allclose(margin[1], -3.0)  # len(swap) - len(true), every condition
    assert np.allclose(base[0, :, 0], [2.0, 12.0, 22.0])  # the true caption's error under each condition
    out = bl.summarise(margin, base, np.array([0.2, 0.6, 0.9]))
    assert out["text only"]["all"]["true_preferred_pct"] == 50.0
    assert out["text only"]["t >= 0.5"]["mean_relative_margin_pct"] == pytest.approx(100 * (1 / 2 - 3 / 4) / 2, abs=0.01)


def test_end_to_end_on_a_tiny_pipeline(text_encoder, tmp_path):  # noqa: F811
    """A random pipeline with an alignment reward at 32 px: the scenes rendered, both captions scored, JSON written;
    a pipeline without the alignment reward is refused before any work."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from miro.models.config import AutoencoderConfig, TextEncoderConfig
    from miro.models.transformer import MiroTransformer
    from miro.sampling.pipeline import MiroPipeline

    def save(rewards, name):
        torch.manual_seed(0)
        model = MiroTransformer(in_channels=3, sample_size=32, patch_size=4, width=32, depth=1, num_heads=2,
                                text_dim=384, reward_names=list(rewards), reward_fourier_dim=16, cond_refiner_depth=1,
                                time_frequency_dim=32)  # fmt: skip
        pipe = MiroPipeline(transformer=model,
                            scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),
                            text_encoder_config=TextEncoderConfig(kind="minilm", max_length=16),
                            autoencoder_config=AutoencoderConfig(kind="identity"), num_bins=8,
                            text_encoder=text_encoder)  # fmt: skip
        pipe.save_pretrained(tmp_path / name)
        return tmp_path / name

    data = tmp_path / "world"
    (data / "heldout").mkdir(parents=True)
    (data / "heldout" / "evaluation_metadata.jsonl").write_text(json.dumps(ROW) + "\n")
    args = ["--data", str(data), "--images", "2", "--draws", "2", "--threads", "1", "--probe-vocab", "3", "3",
            "--out", str(tmp_path / "r.json")]  # fmt: skip
    out = bl.main(["--pipeline", str(save([*REWARDS, "alignment"], "with")), *args])
    assert out["scenes"] == 2 and len(out["t"]) == 2 and out["prompts"] == 1
    assert set(out["conditions"]) == {*bl.CONDITIONS, "alignment_gap"}
    shift = out["text_encoder_token_shift"]  # MiniLM's colour tokens carry their context; the same words, swapped
    assert set(shift) == {"colour words", "class words", "other tokens"} and shift["colour words"] > shift["class words"] > 0
    probe = out["binding_probe"]  # no world.json: the random split only, every token kind read out
    assert set(probe) == {"chance_top1_pct", "random pairs"} and probe["chance_top1_pct"] == pytest.approx(33.3)
    split = probe["random pairs"]
    assert len(split["test_pairs"]) == 2 and split["train_items"] + split["test_items"] <= 2 * 36
    assert {"text encoder", "random projection", "projected", "condition tokens"} <= set(split)
    assert json.loads((tmp_path / "r.json").read_text()) == out
    with pytest.raises(SystemExit, match="no alignment reward"):
        bl.main(["--pipeline", str(save(REWARDS, "without")), *args])
    # --probe-only: the same probe, no scenes and no likelihood, so a model without the alignment reward is read too
    only = bl.main(["--pipeline", str(tmp_path / "with"), *args, "--probe-only"])
    assert set(only) == {"pipeline", "seed", "binding_probe"} and only["binding_probe"] == probe
    assert set(bl.main(["--pipeline", str(tmp_path / "without"), *args, "--probe-only"])["binding_probe"]) == set(probe)
