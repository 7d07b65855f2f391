"""The slider app takes the MIRO authors' reward keys wherever it takes our reward names: ``scorers`` (a list or a
dict of settings) and ``sweep.reward``."""

import pytest

import miro.app.core as core
from miro.utils.config import ConfigError
from tests.app.conftest import app_config


def test_the_scorers_take_the_authors_keys():
    assert app_config(scorers=["pick_a_score_score", "sharpness"]) == app_config(scorers=["pickscore", "sharpness"])
    theirs = app_config(scorers={"hpsv2_score": {"version": "v2.0"}, "image_reward_score": None})
    assert theirs == app_config(scorers={"hpsv2": {"version": "v2.0"}, "imagereward": None})
    assert theirs.scorers == {"hpsv2": {"version": "v2.0"}, "imagereward": {}}


def test_an_unknown_scorer_still_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"scorers=\['aesthetic', 'beauty'\]: has \['beauty'\], not rewards; "
                                          r"allowed: one of \[.*\] \(or the MIRO authors' keys \[.*'aesthetic_score'"):
        app_config(scorers=["aesthetic_score", "beauty"])
    with pytest.raises(ConfigError, match=r"scorers=\['aesthetic', 'aesthetic_score'\]: names one reward twice"):
        app_config(scorers=["aesthetic", "aesthetic_score"])


class _Model:
    """Stands in for a pipeline: the app checks the configured names against ``reward_names``."""

    reward_names = ["sharpness", "aesthetic"]
    recommended_reward_targets = None


def test_the_sweep_reward_takes_the_authors_key_of_a_model_reward(monkeypatch, tmp_path):
    monkeypatch.setattr(core, "load_app_pipeline", lambda *args, **kwargs: _Model())
    cfg = app_config(pipeline=str(tmp_path), scorers=["sharpness"], sweep={"reward": "aesthetic_score"})
    assert core.prepare(cfg, tmp_path).cfg.sweep.reward == "aesthetic"
    with pytest.raises(core.AppError, match=r"sweep.reward='beauty': this model has \['sharpness', 'aesthetic'\]"):
        core.prepare(app_config(pipeline=str(tmp_path), scorers=["sharpness"], sweep={"reward": "beauty"}), tmp_path)
