"""Fixtures of the slider app's tests: the app config as the shipped yaml composes it, and the app's state on the
shipped reference model of the shapes world (models/shapes_reference: 32 px, a second to load)."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "models" / "shapes_reference"
WEIGHT_FREE = ["sharpness", "low_noise", "colorfulness", "contrast", "alignment"]


def app_config(**overrides):
    """``miro/conf/app.yaml`` typed as ``AppConfig`` (hydra's own keys dropped), with ``overrides`` merged."""
    from miro.app.config import AppConfig
    from miro.utils.config import config_file, to_typed

    raw = OmegaConf.to_container(OmegaConf.load(config_file("app.yaml")))
    raw = {k: v for k, v in raw.items() if k not in ("defaults", "hydra")}
    return to_typed(OmegaConf.merge(raw, overrides), AppConfig)


@pytest.fixture(scope="session")
def state(tmp_path_factory):
    """The app on the reference model (few steps: the tests look at what the page asks, not at image quality)."""
    from miro.app.core import prepare

    return prepare(app_config(settings={"steps": 4}), tmp_path_factory.mktemp("app"))
