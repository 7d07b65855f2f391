"""The package as a user installs it: a wheel built from this tree, installed (not editable) into a fresh
venv, runs the entry points from a folder outside the checkout, with the shipped configs (miro/conf) and
with a config folder of the user's own (hydra's ``--config-dir``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
# what a source distribution holds; tests/, docs/ and scripts/ are copied so that the wheel is seen to leave them out
SOURCES = ("pyproject.toml", "README.md", "miro", "annotate", "tests", "docs", "scripts")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", "build", "dist")


def run(cmd: list, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> SimpleNamespace:
    pytest.importorskip("setuptools", reason="the wheel is built without build isolation, from this environment")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=JUNK)
        elif path.exists():
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp / "dist"], cwd=tmp)  # fmt: skip
    wheel = next((tmp / "dist").glob("miro_pretrain-*.whl"))

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip()
    # The dependencies (torch, hydra, ...) come from this environment, added as plain paths after the venv's own
    # site-packages: its .pth files (an editable install of this checkout) are not run, and the wheel's miro wins.
    deps = dict.fromkeys(p for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path)
                         if p and Path(p).name in ("site-packages", "dist-packages"))  # fmt: skip
    Path(purelib, "_miro_test_dependencies.pth").write_text("".join(f"{p}\n" for p in deps))
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], cwd=tmp)

    elsewhere = tmp / "elsewhere"  # outside the checkout, and no PYTHONPATH: only the installed package is seen
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return SimpleNamespace(python=python, wheel=wheel, cwd=elsewhere, env=env, venv=venv)


def run_installed(inst: SimpleNamespace, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    return run([inst.python, *args], cwd=inst.cwd, env=inst.env, timeout=timeout)


def test_wheel_holds_every_config_and_no_tests_or_docs(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "miro" / "conf").rglob("*.yaml")}
    assert len(shipped) > 40 and {"miro/conf/train.yaml", "miro/conf/hydra/launcher/slurm_train.yaml"} <= shipped
    assert shipped - names == set(), "configs missing from the wheel"
    assert "miro/conf/__init__.py" in names
    tops = {n.split("/")[0] for n in names}
    assert tops == {"miro", "annotate", installed.wheel.name.split("-py3")[0] + ".dist-info"}, tops


def test_installed_wheel_runs_a_stage_from_any_folder(installed):
    where = run_installed(installed, "-c", "import miro, miro.utils.config as c; print(miro.__file__); print(c.CONFIG_DIR)")
    module, config_dir = where.stdout.split()
    assert Path(module).is_relative_to(installed.venv) and Path(config_dir).is_relative_to(installed.venv)

    out = installed.cwd / "world"
    proc = run_installed(installed, "-m", "miro.data.shapes", f"out={out}", "num_samples=100", "resolution=32",
                         "shard_size=50", "workers=1")  # fmt: skip
    assert "100 samples written in 2 shards" in proc.stdout
    world = json.loads((out / "world.json").read_text())
    assert world["num_samples"] == 100 and world["config"]["resolution"] == 32
    assert sorted(p.name for p in (out / "train").glob("*.tar")) == ["shapes-000000.tar", "shapes-000001.tar"]


def test_a_users_config_folder_extends_the_shipped_configs(installed):
    """``--config-dir`` adds a folder to hydra's search path: the user's own primary config built on a shipped
    one (``--config-name``), and a new option of a shipped group (``experiment=...``)."""
    user = installed.cwd / "my_conf"
    (user / "experiment").mkdir(parents=True)
    (user / "my_world.yaml").write_text("defaults:\n  - shapes\n  - _self_\n\nnum_samples: 100\nresolution: 32\n"
                                        "shard_size: 100\nseed: 7\nname: mine\n")  # fmt: skip
    (user / "experiment" / "my_run.yaml").write_text("# @package _global_\nname: my_run\nmax_steps: 17\n"
                                                     "reward_names: []\n")  # fmt: skip
    out = installed.cwd / "my_world"
    run_installed(installed, "-m", "miro.data.shapes", "--config-dir", user, "--config-name", "my_world", f"out={out}")
    world = json.loads((out / "world.json").read_text())
    assert world["num_samples"] == 100 and world["config"]["seed"] == 7 and world["config"]["resolution"] == 32
    assert [p.name for p in (out / "train").glob("*.tar")] == ["mine-000000.tar"]

    job = run_installed(installed, "-m", "miro.train", "--config-dir", user, "experiment=my_run", "--cfg", "job").stdout
    assert "name: my_run" in job and "max_steps: 17" in job and "reward_names: []" in job
    assert "text_encoder:" in job  # the shipped groups still compose around the user's experiment


@pytest.mark.slow
def test_installed_wheel_trains_one_step(installed):
    """The failure of issue 11 (``python -m miro.train max_steps=1`` outside the checkout), end to end."""
    data = installed.cwd / "train_world"
    run_installed(installed, "-m", "miro.data.shapes", f"out={data}", "num_samples=100", "resolution=32", "workers=1")
    run_installed(installed, "-m", "miro.train", "experiment=shapes_baseline", f"data.shards={data / 'train'}",
                  "max_steps=1", "batch_size=4", "checkpoint_every=1", "name=one_step", timeout=600)  # fmt: skip
    assert (installed.cwd / "runs" / "one_step" / "final" / "model_index.json").exists()
