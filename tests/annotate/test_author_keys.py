"""``python -m annotate`` takes the MIRO authors' reward keys wherever it takes our reward names."""

import pytest

from annotate.__main__ import _argv
from annotate.config import AnnotateConfig, StatsConfig
from miro.utils.config import ConfigError, entry_point


def _typed(args: list[str], tmp_path) -> AnnotateConfig:
    """The typed config the command builds from ``args`` (the real argv rewrite and yaml, nothing run)."""
    seen = []
    main = entry_point("annotate", AnnotateConfig, seen.append, argv=_argv)
    main([f"data.shards={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}", "hydra/job_logging=none",
          "hydra/hydra_logging=none", *args])  # fmt: skip
    return seen[0]


def test_the_authors_keys_select_our_reward_groups_on_the_command_line(tmp_path):
    theirs = _typed(["rewards=[image_reward_score,sharpness]", "rewards.image_reward_score.batch_size=3",
                     "stats.rewards=[image_reward_score]"], tmp_path)  # fmt: skip
    ours = _typed(["rewards=[imagereward,sharpness]", "rewards.imagereward.batch_size=3",
                   "stats.rewards=[imagereward]"], tmp_path)  # fmt: skip
    assert theirs == ours
    assert list(theirs.rewards) == ["imagereward", "sharpness"] and theirs.rewards["imagereward"]["batch_size"] == 3
    assert theirs.stats.rewards == ["imagereward"]


def test_an_unknown_reward_still_names_the_key_and_value(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*'rewards/beauty'.*available: aesthetic"):
        _typed(["rewards=[aesthetic_score,beauty]"], tmp_path)
    with pytest.raises(ConfigError, match=r"rewards='beauty': must be one of \[.*\] \(or the MIRO authors' keys \["):
        AnnotateConfig(rewards={"aesthetic_score": {}, "beauty": {}})
    with pytest.raises(ConfigError, match=r"stats.rewards='beauty': must be one of .*'pick_a_score_score'"):
        StatsConfig(rewards=["pick_a_score_score", "beauty"])
    assert StatsConfig(rewards=["pick_a_score_score", "clip_score"]).rewards == ["pickscore", "clip_score"]
