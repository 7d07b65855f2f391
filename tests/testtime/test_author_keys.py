"""Test-time search takes the MIRO authors' reward keys wherever it takes our reward names: ``verifier.rewards``,
``verifier.weights``, ``verifier.held_out``, ``verifier.configs``, ``track.rewards`` and the ``Verifier`` itself."""

import numpy as np
import pytest
from omegaconf import OmegaConf

import miro.testtime.cli as cli
from miro.testtime.adapt import AdaptConfig, TrackConfig
from miro.testtime.config import TestTimeConfig, VerifierConfig
from miro.testtime.verifier import Verifier
from miro.utils.config import ConfigError, to_typed
from tests.testtime.test_verifier import Const, solid


def _typed(monkeypatch, tmp_path, args: list[str]) -> TestTimeConfig:
    """The typed config ``python -m miro.testtime <args>`` builds (the shipped yaml; the search not run)."""
    seen = []

    def fake_run(cfg):
        seen.append(cfg)
        return {"mean_kept_rewards": {}, "searches": 0, "nfe": 0, "one_sample_nfe": 0}

    monkeypatch.setattr(cli, "run", fake_run)
    cli.main(["pipeline=p", "prompts=[a]", f"out_dir={tmp_path}", "hydra/job_logging=none", "hydra/hydra_logging=none",
              *args])  # fmt: skip
    return seen[0]


def test_the_verifier_config_takes_the_authors_keys(monkeypatch, tmp_path):
    theirs = _typed(monkeypatch, tmp_path, [
        "verifier.rewards=[pick_a_score_score,aesthetic_score,sharpness,intrinsic]",
        "verifier.weights={pick_a_score_score: 2.0, sharpness: 1.0}", "verifier.held_out=[aesthetic_score]",
        "verifier.configs={pick_a_score_score: {batch_size: 2}}"])  # fmt: skip
    ours = _typed(monkeypatch, tmp_path, [
        "verifier.rewards=[pickscore,aesthetic,sharpness,intrinsic]", "verifier.weights={pickscore: 2.0, sharpness: 1.0}",
        "verifier.held_out=[aesthetic]", "verifier.configs={pickscore: {batch_size: 2}}"])  # fmt: skip
    assert theirs == ours
    v = theirs.verifier
    assert v.rewards == ["pickscore", "aesthetic", "sharpness", "intrinsic"] and v.held_out == ["aesthetic"]
    assert v.weights == {"pickscore": 2.0, "sharpness": 1.0} and v.configs == {"pickscore": {"batch_size": 2}}


def test_an_unknown_reward_still_names_the_key_and_value():
    with pytest.raises(ConfigError, match=r"verifier.rewards=\['pickscore', 'beauty'\]: 'beauty' is not a reward; "
                                          r"allowed: one of \[.*'geneval'\] \(or the MIRO authors' keys \["):
        VerifierConfig(rewards=["pick_a_score_score", "beauty"])
    with pytest.raises(ConfigError, match=r"verifier.weights=\['beauty'\]: 'beauty' is not among verifier.rewards"):
        VerifierConfig(rewards=["aesthetic_score"], weights={"beauty": 1.0})
    with pytest.raises(ConfigError, match=r"verifier.weights=\['aesthetic', 'aesthetic_score'\]: names one reward twice"):
        VerifierConfig(rewards=["aesthetic"], weights={"aesthetic": 1.0, "aesthetic_score": 2.0})
    with pytest.raises(ConfigError, match=r"verifier.rewards=\['aesthetic', 'aesthetic'\]: lists a reward twice"):
        VerifierConfig(rewards=["aesthetic", "aesthetic_score"])


def test_cohort_rl_tracks_and_judges_by_the_authors_keys():
    base = {"pipeline": "p", "prompts": ["a"], "monitor": "rewards"}
    theirs = to_typed(OmegaConf.create({**base, "verifier": {"rewards": ["hpsv2_score"], "weights": {"hpsv2_score": 1.0}},
                                        "track": {"rewards": ["vqa_score", "contrast"]}}), AdaptConfig)  # fmt: skip
    ours = to_typed(OmegaConf.create({**base, "verifier": {"rewards": ["hpsv2"], "weights": {"hpsv2": 1.0}},
                                      "track": {"rewards": ["vqascore", "contrast"]}}), AdaptConfig)  # fmt: skip
    assert theirs == ours and theirs.track.rewards == ["vqascore", "contrast"]
    with pytest.raises(ConfigError, match=r"track.rewards=\['vqascore', 'beauty'\]: 'beauty' is not a reward"):
        TrackConfig(rewards=["vqa_score", "beauty"])


def test_the_verifier_api_takes_the_authors_keys():
    scorers = [Const("pickscore", [1.0, 3.0]), Const("aesthetic", [5.0, 2.0])]
    theirs = Verifier(scorers, weights={"pick_a_score_score": 2.0}, held_out=["aesthetic_score"])
    ours = Verifier(scorers, weights={"pickscore": 2.0}, held_out=["aesthetic"])
    assert theirs.describe() == ours.describe() and theirs.held_out == ["aesthetic"]
    images = [solid(0), solid(1)]
    np.testing.assert_array_equal(theirs.score(images, ["p", "p"]).score, ours.score(images, ["p", "p"]).score)
    with pytest.raises(ConfigError, match=r"verifier.held_out=\['beauty'\]: unknown rewards \['beauty'\]"):
        Verifier(scorers, held_out=["beauty"])


def test_one_weight_at_a_time_on_the_command_line(monkeypatch, tmp_path):
    one = _typed(monkeypatch, tmp_path, ["verifier.rewards=[aesthetic_score,contrast]",
                                         "+verifier.weights.aesthetic_score=2.0"])  # fmt: skip
    assert one.verifier.weights == {"aesthetic": 2.0} and one.verifier.rewards == ["aesthetic", "contrast"]
    default = _typed(monkeypatch, tmp_path, [])
    assert default.verifier.weights == {}  # null in the yaml: every reward that is not held out chooses
