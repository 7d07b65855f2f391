"""``python -m miro.eval`` takes the MIRO authors' reward keys wherever it takes our reward names: the reward group
of the ``rewards`` command and the ``sliders`` command's scorers."""

import pytest

import miro.eval.cli as cli
from miro.eval.config import EvalConfig
from miro.utils.config import ConfigError


def _typed(monkeypatch, args: list[str]) -> EvalConfig:
    """The typed config ``python -m miro.eval <args>`` builds (the real argv rewrite and yaml; the command not run)."""
    seen = []
    monkeypatch.setattr(cli, "run", seen.append)
    cli.main(args)
    return seen[0]


def test_the_rewards_command_takes_the_authors_keys(monkeypatch, tmp_path):
    theirs = _typed(monkeypatch, ["rewards", f"image_dir={tmp_path}", "rewards=[pick_a_score_score,aesthetic_score]",
                                  "rewards.aesthetic_score.batch_size=2"])  # fmt: skip
    ours = _typed(monkeypatch, ["rewards", f"image_dir={tmp_path}", "rewards=[pickscore,aesthetic]",
                                "rewards.aesthetic.batch_size=2"])  # fmt: skip
    assert theirs == ours and list(theirs.rewards) == ["pickscore", "aesthetic"]
    assert theirs.rewards["aesthetic"]["batch_size"] == 2
    assert EvalConfig(command="rewards", rewards=["vqa_score"]) == EvalConfig(command="rewards", rewards=["vqascore"])


def test_the_sliders_scorers_take_the_authors_keys(monkeypatch, tmp_path):
    theirs = _typed(monkeypatch, ["sliders", f"image_dir={tmp_path}", "sliders.scorers=[hpsv2_score,contrast]"])
    ours = _typed(monkeypatch, ["sliders", f"image_dir={tmp_path}", "sliders.scorers=[hpsv2,contrast]"])
    assert theirs == ours and theirs.sliders.scorers == ["hpsv2", "contrast"]


def test_an_unknown_reward_still_names_the_key_and_value(monkeypatch, tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*'rewards/beauty'.*available: aesthetic"):
        _typed(monkeypatch, ["rewards", f"image_dir={tmp_path}", "rewards=[aesthetic_score,beauty]"])
    with pytest.raises(SystemExit, match=r"^error: sliders.scorers='beauty': must be one of .*'hpsv2_score'"):
        _typed(monkeypatch, ["sliders", f"image_dir={tmp_path}", "sliders.scorers=[hpsv2_score,beauty]"])
    with pytest.raises(ConfigError, match=r"rewards='beauty': must be one of \[.*\(or the MIRO authors' keys"):
        EvalConfig(command="rewards", rewards={"beauty": {}})
    with pytest.raises(ConfigError, match=r"rewards=\['aesthetic', 'aesthetic_score'\]: names one reward twice"):
        EvalConfig(command="rewards", rewards=["aesthetic", "aesthetic_score"])
