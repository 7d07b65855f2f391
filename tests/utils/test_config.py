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
