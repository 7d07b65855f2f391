"""The app's command and packaging: the typed config and its messages, one error line for a bad value, nothing
loaded at import, and gradio as an extra that leaves the core's versions alone."""

import os
import subprocess
import sys

import pytest

from miro.app import GRADIO_PIN, GRADIO_VERSION, INSTALL_HINT
from miro.utils.config import ConfigError
from tests.app.conftest import ROOT, WEIGHT_FREE, app_config


def test_the_shipped_config_binds_this_machine_only_and_opens_the_reference_model():
    cfg = app_config()
    assert cfg.host == "127.0.0.1" and cfg.port == 7860 and cfg.pipeline is None
    assert cfg.scorers == {name: {} for name in WEIGHT_FREE}  # the weight-free rewards by default
    assert cfg.guidance_mode == "decoupled" and cfg.settings.text_guidance_scale == 3.0
    assert app_config(host="0.0.0.0").host == "0.0.0.0"
    assert app_config(scorers=["pickscore"]).scorers == {"pickscore": {}}
    assert app_config(scorers={"hpsv2": {"version": "v2.0"}}).scorers == {"hpsv2": {"version": "v2.0"}}


@pytest.mark.parametrize(("overrides", "message"), [
    ({"port": 0}, "port=0: must be a TCP port in 1..65535"),
    ({"host": " "}, "host=' ': must be an interface address"),
    ({"guidance_mode": "both"}, "guidance_mode='both': must be one of ['joint', 'decoupled']"),
    ({"num_images": 20}, "num_images=20: must be in 1..max_images=16"),
    ({"max_steps": 10}, "max_steps=10: must be >= settings.steps=25"),
    ({"scorers": ["sharpness", "beauty"]}, "scorers=['sharpness', 'beauty']: has ['beauty'], not rewards"),
    ({"scorers": []}, "scorers={}: name at least one reward"),
    ({"settings": {"negative_reward_targets": {"contrast": None}}},
     "settings.negative_reward_targets={'contrast': None}: the app frees a reward in both branches"),
    ({"settings": {"steps": 0}}, "settings.steps=0: must be >= 1"),
    ({"sweep": {"num_targets": 1}}, "sweep.num_targets=1: must be in 2..11"),
    ({"dtype": "float8"}, "dtype='float8': must be one of"),
])  # fmt: skip
def test_a_bad_value_names_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as err:
        app_config(**overrides)
    assert str(err.value).startswith(message), str(err.value)


def _run(*args, timeout=300, **env):
    full = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)


def test_the_command_ends_a_bad_value_with_one_error_line():
    proc = _run("-m", "miro.app", "port=70000")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0] == "error: port=70000: must be a TCP port in 1..65535", lines[0]


def test_importing_the_app_loads_no_gradio_and_no_model():
    code = ("import sys, miro.app, miro.app.cli, miro.app.core, miro.app.ui, miro.app.config\n"
            "print(sorted(m for m in ('gradio', 'fastapi', 'diffusers', 'transformers', 'annotate') if m in sys.modules))")  # fmt: skip
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_a_missing_gradio_is_one_line_saying_how_to_install_it(monkeypatch):
    from miro.app.cli import require_gradio
    from miro.app.core import AppError

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    with pytest.raises(AppError, match="the app needs gradio") as err:
        require_gradio()
    assert INSTALL_HINT in str(err.value) and f"--no-deps {GRADIO_PIN}" in INSTALL_HINT


# ------------------------------------------------------------------------------------------- the app extra
def _project() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name.lower().replace("_", "-")


def test_the_app_extra_pins_nothing_of_the_core():
    project = _project()
    core = {_name(r) for r in project["dependencies"]}
    app = {_name(r) for r in project["optional-dependencies"]["app"]}
    assert "gradio" not in app  # installed --no-deps: its metadata caps pillow below the core's
    assert not app & core, f"the app extra constrains core dependencies: {sorted(app & core)}"
    assert not app & {"pillow", "numpy", "torch", "tomlkit"}


def test_the_installed_gradio_is_the_pinned_one_and_its_requirements_are_met():
    """Every runtime requirement of the installed gradio holds, but its pillow and tomlkit caps (tomlkit: only
    for its custom-component tooling): the app extra and the core install together are what gradio needs."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        version = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        pytest.skip(f"gradio is not installed ({INSTALL_HINT}; scripts/test.sh installs it)")
    assert version == GRADIO_VERSION
    unmet = []
    for spec in metadata.requires("gradio") or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement, or another Python's
        if req.name.lower() in ("pillow", "tomlkit"):
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{spec}: not installed")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            unmet.append(f"{spec}: {installed} installed")
    assert unmet == [], f"add these to the app extra or check the app with them: {unmet}"
