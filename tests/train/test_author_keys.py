"""Training takes the MIRO authors' reward keys in ``reward_names`` and ``recommended_reward_targets``, and keeps
our names in the run's config.yaml."""

import pytest
from omegaconf import OmegaConf

from miro.train.config import TrainConfig
from miro.utils.config import ConfigError
from tests.train.test_config import typed


def test_the_authors_keys_give_the_same_run_config():
    theirs = typed("reward_names=[aesthetic_score,image_reward_score,sharpness]",
                   "recommended_reward_targets={aesthetic_score: 0.6, image_reward_score: 0.9}")  # fmt: skip
    ours = typed("reward_names=[aesthetic,imagereward,sharpness]",
                 "recommended_reward_targets={aesthetic: 0.6, imagereward: 0.9}")  # fmt: skip
    assert theirs == ours and theirs.reward_names == ["aesthetic", "imagereward", "sharpness"]
    written = OmegaConf.to_yaml(OmegaConf.structured(theirs))  # what the run writes as config.yaml
    assert "aesthetic_score" not in written and "imagereward: 0.9" in written


def test_a_recommended_target_may_leave_a_reward_free():
    cfg = typed("reward_names=[aesthetic,sharpness]", "recommended_reward_targets={aesthetic_score: null, sharpness: 1}")
    assert cfg.recommended_reward_targets == {"aesthetic": None, "sharpness": 1.0}


def test_an_unknown_reward_still_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"reward_names=\['aesthetic', 'beauty'\]: unknown reward\(s\) \['beauty'\]: "
                                          r"each must be one of \[.*\] \(or the MIRO authors' keys \["):
        TrainConfig(reward_names=["aesthetic_score", "beauty"])
    with pytest.raises(ConfigError, match=r"reward_names=\['aesthetic', 'aesthetic'\]: lists a reward twice"):
        TrainConfig(reward_names=["aesthetic", "aesthetic_score"])
    with pytest.raises(ConfigError, match=r"recommended_reward_targets=.*names rewards the run is not conditioned on"):
        TrainConfig(reward_names=["aesthetic_score"], recommended_reward_targets={"pick_a_score_score": 0.5})
    with pytest.raises(ConfigError, match=r"recommended_reward_targets=\['aesthetic', 'aesthetic_score'\]: names one"):
        TrainConfig(reward_names=["aesthetic"], recommended_reward_targets={"aesthetic": 0.5, "aesthetic_score": 0.6})
