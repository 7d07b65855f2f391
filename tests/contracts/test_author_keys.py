"""The MIRO authors' reward keys and scales, owned by the reward contract."""

import numpy as np
import pytest

from miro.contracts.rewards import AUTHOR_KEYS, REWARDS, author_value, from_author_key
from miro.sampling.targets import canonical_reward


def test_author_scales_are_their_formulas():
    raw = np.array([21.5, np.nan])
    np.testing.assert_allclose(author_value("pickscore", raw), [0.215, np.nan])
    np.testing.assert_allclose(author_value("imagereward", [-2.0, 0.0, 2.0]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(author_value("aesthetic", [6.5]), [0.65])
    np.testing.assert_allclose(author_value("hpsv2", [0.27]), [0.27])
    with pytest.raises(ValueError, match="not one of the MIRO authors' rewards"):
        author_value("sharpness", [1.0])


def test_author_keys_map_to_ours_and_our_names_win():
    assert AUTHOR_KEYS["pick_a_score_score"] == "pickscore" and AUTHOR_KEYS["aesthetic_score"] == "aesthetic"
    assert all(REWARDS[ours].author_key == theirs for theirs, ours in AUTHOR_KEYS.items())
    assert from_author_key("image_reward_score", ["imagereward", "hpsv2"]) == "imagereward"
    assert from_author_key("hpsv2", ["hpsv2"]) == "hpsv2"
    assert from_author_key("image_reward_score", ["hpsv2"]) is None
    # sampling resolves keys through the same table
    assert canonical_reward("aesthetic_score", ["aesthetic", "pickscore"]) == "aesthetic"


def test_annotation_and_training_configs_take_the_authors_keys():
    from annotate.config import AnnotateConfig
    from miro.train.config import TrainConfig

    cfg = AnnotateConfig(rewards=["image_reward_score", "pick_a_score_score", "sharpness"])
    assert list(cfg.rewards) == ["imagereward", "pickscore", "sharpness"]
    train = TrainConfig(reward_names=["aesthetic_score", "hpsv2_score", "clip_score"])
    assert train.reward_names == ["aesthetic", "hpsv2", "clip_score"]  # our clip_score keeps its meaning


def test_our_names_and_a_reward_named_twice():
    from annotate.config import AnnotateConfig
    from miro.contracts.rewards import our_names
    from miro.utils.config import ConfigError

    assert our_names(["vqa_score", "sciscore_score", "clip_score", "nope"]) == ["vqascore", "sciscore", "clip_score", "nope"]
    assert our_names(["clip_score"], ["jina_clip", "aesthetic"]) == ["jina_clip"]
    with pytest.raises(ConfigError, match="rewards=.*names one reward twice"):
        AnnotateConfig(rewards=["aesthetic", "aesthetic_score"])


def test_our_keys_maps_a_dicts_keys_and_refuses_a_reward_named_twice():
    from miro.contracts.rewards import our_keys
    from miro.utils.config import ConfigError

    weights = {"pick_a_score_score": 2.0, "sharpness": 1.0, "nope": 3.0}
    assert our_keys(weights) == {"pickscore": 2.0, "sharpness": 1.0, "nope": 3.0}  # unknown keys left to the caller
    assert list(our_keys(weights)) == ["pickscore", "sharpness", "nope"]  # order kept
    assert our_keys({"clip_score": 1}, ["jina_clip"]) == {"jina_clip": 1}
    with pytest.raises(ConfigError, match=r"verifier.weights=\['aesthetic', 'aesthetic_score'\]: names one reward twice"):
        our_keys({"aesthetic": 1.0, "aesthetic_score": 2.0}, key="verifier.weights")


def test_allowed_rewards_names_the_authors_keys_of_the_names_given():
    from miro.contracts.rewards import REWARD_NAMES, allowed_rewards

    text = allowed_rewards()
    assert text.startswith(f"one of {list(REWARD_NAMES)}") and "'pick_a_score_score'" in text
    assert "'clip_score', 'hpsv2_score'" not in text  # their clip_score is our clip_score where ours is allowed
    assert allowed_rewards(["aesthetic", "sharpness"]) == (
        "one of ['aesthetic', 'sharpness'] (or the MIRO authors' keys ['aesthetic_score'], mapped to ours)")
    assert allowed_rewards(["sharpness"]) == "one of ['sharpness']"
