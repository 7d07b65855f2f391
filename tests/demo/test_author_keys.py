"""The demo takes the MIRO authors' reward keys in ``rewards`` and ``high_targets``."""

import pytest

from miro.demo.config import DemoConfig
from miro.utils.config import ConfigError


def test_the_authors_keys_give_the_same_demo_config():
    theirs = DemoConfig(rewards=["sharpness", "aesthetic_score"], high_targets={"aesthetic_score": 0.7, "sharpness": 0.8})
    ours = DemoConfig(rewards=["sharpness", "aesthetic"], high_targets={"aesthetic": 0.7, "sharpness": 0.8})
    assert theirs == ours and theirs.rewards == ["sharpness", "aesthetic"]
    with pytest.raises(ConfigError, match=r"rewards=\['aesthetic', 'aesthetic'\]: must be a non-empty list of distinct"):
        DemoConfig(rewards=["aesthetic", "aesthetic_score"])
