from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from miro.utils.config import ConfigError, require, require_choice, run_typed, to_typed


@dataclass
class Inner:
    kind: str = "a"

    def __post_init__(self):
        require_choice("inner.kind", self.kind, ("a", "b"))


@dataclass
class Outer:
    steps: int = 10
    lr: float = 1e-3
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        require(self.steps > 0, "steps", self.steps, "must be a positive integer")


def test_good_config_builds_dataclasses():
    cfg = to_typed(OmegaConf.create({"steps": 3, "inner": {"kind": "b"}}), Outer)
    assert isinstance(cfg, Outer) and isinstance(cfg.inner, Inner)
    assert cfg.steps == 3 and cfg.inner.kind == "b"


@pytest.mark.parametrize(
    "override,match",
    [
        ({"steps": 0}, r"steps=0: must be a positive integer"),
        ({"steps": "many"}, r"steps"),
        ({"inner": {"kind": "z"}}, r"inner.kind='z': must be one of \['a', 'b'\]"),
        ({"stepz": 3}, r"stepz"),
    ],
)
def test_bad_values_are_rejected_with_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        to_typed(OmegaConf.create(override), Outer)


class StageFailure(RuntimeError):
    pass


def test_run_typed_runs_the_typed_config_and_ends_user_errors_with_their_message():
    assert run_typed(OmegaConf.create({"steps": 3}), Outer, lambda cfg: cfg.steps * 2) == 6
    with pytest.raises(SystemExit, match=r"^error: steps=0: must be a positive integer$"):
        run_typed(OmegaConf.create({"steps": 0}), Outer, lambda cfg: None)

    def fails(cfg):
        raise StageFailure("shard 3 is missing")

    with pytest.raises(SystemExit, match="error: shard 3 is missing"):
        run_typed({}, Outer, fails, errors=(StageFailure,))
    with pytest.raises(StageFailure):  # not declared as a user error: a traceback, as for a bug
        run_typed({}, Outer, fails)


def test_entry_point_composes_the_shipped_config_types_it_and_names_the_job(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from miro.data.shapes.config import ShapesConfig
    from miro.utils.config import entry_point

    seen = {}

    def run(cfg):
        seen.update(cfg=cfg, job=HydraConfig.get().job.name)

    monkeypatch.chdir(tmp_path)
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # leave this process's logging alone
    main = entry_point("shapes", ShapesConfig, run, argv=lambda args: [a for a in args if a != "please"] + quiet)
    main(["please", "seed=7", f"out={tmp_path / 'w'}", f"hydra.run.dir={tmp_path / 'logs'}"])
    assert isinstance(seen["cfg"], ShapesConfig) and seen["cfg"].seed == 7 and seen["job"] == "shapes"
    with pytest.raises(SystemExit, match=r"^error: num_samples=0"):
        main(["num_samples=0", f"out={tmp_path}", f"hydra.run.dir={tmp_path / 'logs'}"])

    def stage_error(cfg):
        raise LookupError("no such shard")

    with pytest.raises(SystemExit, match="^error: no such shard$"):
        entry_point("shapes", ShapesConfig, stage_error, errors=lambda: (LookupError,))(
            [f"out={tmp_path}", f"hydra.run.dir={tmp_path}", *quiet])


def test_rename_group_options_renames_the_options_of_one_group_only():
    from miro.contracts.rewards import our_names
    from miro.utils.config import rename_group_options

    args = ["rewards=[pick_a_score_score,sharpness]", "rewards.image_reward_score.batch_size=4", "+rewards=aesthetic_score",
            "~rewards.vqa_score", "rewards=[hpsv2_score],[clip_score]", "stats.rewards=[aesthetic_score]",
            "data.shards=/d/aesthetic_score", "--cfg", "job"]  # fmt: skip
    assert rename_group_options(args, "rewards", our_names) == [
        "rewards=[pickscore,sharpness]", "rewards.imagereward.batch_size=4", "+rewards=aesthetic", "~rewards.vqascore",
        "rewards=[hpsv2],[clip_score]", "stats.rewards=[aesthetic_score]", "data.shards=/d/aesthetic_score", "--cfg", "job"]


def test_a_missing_option_of_a_group_list_names_the_options(tmp_path):
    from annotate.config import AnnotateConfig
    from miro.utils.config import entry_point

    main = entry_point("annotate", AnnotateConfig, lambda cfg: None)
    with pytest.raises(SystemExit, match=r"^error: .*'rewards/nope'.*\(available: aesthetic, alignment, .*vqascore\)$"):
        main([f"data.shards={tmp_path}", "rewards=[sharpness,nope]", f"hydra.run.dir={tmp_path}"])
