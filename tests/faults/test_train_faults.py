"""Fault injection, training and sampling (issue #13): crafted pickles, truncated checkpoints, a full disk,
read-only folders, reruns with changed settings, a kill then a rerun, and nothing written outside the run
folder.  Each fault must end in one clear message (no library traceback) or a recovery, never silently."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from miro.sampling.pipeline import MiroPipeline, PipelineFolderError
from miro.train import checkpoint as ckpt
from miro.train.checkpoint import CheckpointError, list_checkpoints, resolve_resume, verify
from miro.train.launch import user_errors
from miro.train.loop import train
from miro.utils.config import ConfigError
from miro.utils.storage import OutputError, check_writable
from tests.data.make_dataset import make_dataset
from tests.train.conftest import tiny_components, tiny_config
from tests.train.tiny import TinyTextEncoder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_wds")
    make_dataset(root, n_shards=4, per_shard=12)
    return root


@pytest.fixture(scope="module")
def whole(tmp_path_factory, shards):
    """An uninterrupted 6-step run (checkpoints 3 and 6): the reference every recovery must reproduce."""
    return train(tiny_config(tmp_path_factory.mktemp("whole") / "run", shards, sample={"every": 0}), tiny_components())


def cfg(out, shards, **kw):
    return tiny_config(out, shards, sample={"every": 0}, **kw)


def same_weights(a: Path, b: Path, step: int = 6) -> bool:
    x = load_file(a / f"checkpoints/checkpoint-{step}/model.safetensors")
    y = load_file(b / f"checkpoints/checkpoint-{step}/model.safetensors")
    fx = load_file(a / "final/transformer/diffusion_pytorch_model.safetensors")
    fy = load_file(b / "final/transformer/diffusion_pytorch_model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) and all(torch.equal(fx[k], fy[k]) for k in fx)


def half_run(tmp_path, shards) -> Path:
    out = tmp_path / "run"
    train(cfg(out, shards, stop_after=3), tiny_components())
    return out


class Payload:
    """A crafted pickle: unpickling it runs a shell command that writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def rewrite_manifest(folder: Path) -> None:
    """What an attacker who can write the folder can do too: make the manifest match the replaced files."""
    files = {p.name: {"size": p.stat().st_size, "sha256": ckpt._sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != ckpt.MANIFEST}
    (folder / ckpt.MANIFEST).write_text(json.dumps({"format": ckpt.FORMAT, "step": 3, "files": files}))


# ------------------------------------------------------------------------------------------ crafted pickles
def test_checkpoints_hold_no_pickle(whole):
    for _, path in list_checkpoints(whole / "checkpoints"):
        assert verify(path) is None
        assert not [p.name for p in path.iterdir() if p.suffix in (".pkl", ".bin", ".pt")]


def test_crafted_pickles_in_a_checkpoint_are_never_unpickled(tmp_path, shards, whole):
    out = half_run(tmp_path, shards)
    folder, marker = out / "checkpoints" / "checkpoint-3", tmp_path / "PWNED"
    for name in ("custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl", "pytorch_model.bin"):
        (folder / name).write_bytes(pickle.dumps(Payload(marker)))  # accelerate's names: not read at all
    train(cfg(out, shards, resume="latest"), tiny_components(seed=5))
    assert not marker.exists() and same_weights(whole, out)


@pytest.mark.parametrize("name", ["ema.safetensors", "optimizer.safetensors", "model.safetensors",
                                  "rng-rank0.safetensors"])
def test_a_pickle_under_a_listed_name_stops_resume_naming_the_file(tmp_path, shards, name, caplog):
    out = half_run(tmp_path, shards)
    folder, marker = out / "checkpoints" / "checkpoint-3", tmp_path / "PWNED"
    (folder / name).write_bytes(pickle.dumps(Payload(marker)))
    rewrite_manifest(folder)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as err:
        train(cfg(out, shards, resume="latest"), tiny_components())
    assert not marker.exists()
    assert "\n" not in str(err.value) and isinstance(err.value, user_errors())


# -------------------------------------------------------------------------------------- truncated checkpoints
KINDS = ["model.safetensors", "optimizer.safetensors", "ema.safetensors", "rng-rank0.safetensors",
         "train_state.json", "manifest.json"]


@pytest.mark.parametrize("name", KINDS)
def test_resume_latest_skips_a_truncated_checkpoint_with_a_warning(tmp_path, whole, name, caplog):
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(whole / "checkpoints", ckpts)
    file = ckpts / "checkpoint-6" / name
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, "miro.train"):
        assert resolve_resume("latest", ckpts) == ckpts / "checkpoint-3"
    assert "checkpoint-6" in caplog.text and name in caplog.text
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):  # named explicitly: refused, with the reason
        resolve_resume(str(ckpts / "checkpoint-6"), ckpts)


def test_no_complete_checkpoint_is_an_error_not_a_silent_restart(tmp_path, whole):
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(whole / "checkpoints", ckpts)
    for _, p in list_checkpoints(ckpts):
        (p / "model.safetensors").write_bytes(b"cut")
    (ckpts / "checkpoint-9").mkdir()  # no manifest: an older version's or a foreign folder
    with pytest.raises(CheckpointError, match="no complete checkpoint") as err:
        resolve_resume("latest", ckpts)
    assert "checkpoint-9" in str(err.value) and "\n" not in str(err.value)


def test_truncated_newest_checkpoint_then_rerun_is_bit_identical(tmp_path, shards, whole):
    """A requeued job after a kill: the newest checkpoint is cut, a stale .tmp is left; resume=latest recovers."""
    out = tmp_path / "run"
    train(cfg(out, shards), tiny_components())
    shutil.rmtree(out / "final")
    file = out / "checkpoints" / "checkpoint-6" / "optimizer.safetensors"
    file.write_bytes(file.read_bytes()[:100])
    (out / "checkpoints" / "checkpoint-6.tmp").mkdir()
    (out / "checkpoints" / "checkpoint-6.tmp" / "model.safetensors").write_bytes(b"partial")
    train(cfg(out, shards, resume="latest"), tiny_components(seed=7))
    assert same_weights(whole, out) and verify(out / "checkpoints" / "checkpoint-6") is None
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-6"]


def test_kill_during_a_save_then_rerun_is_bit_identical(tmp_path, shards, whole, monkeypatch):
    out = tmp_path / "run"
    real, calls = ckpt.save_model, []

    def killed(model, filename, **kw):
        calls.append(filename)
        if len(calls) == 4:  # the EMA file of the second checkpoint (model, ema, model, ema)
            raise KeyboardInterrupt
        return real(model, filename, **kw)

    monkeypatch.setattr(ckpt, "save_model", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(out, shards), tiny_components())
    monkeypatch.setattr(ckpt, "save_model", real)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3"]  # no .tmp left
    train(cfg(out, shards, resume="latest"), tiny_components(seed=9))
    assert same_weights(whole, out)


# -------------------------------------------------------------------------------------- disk full, read-only
def test_disk_full_during_a_checkpoint_cleans_up_and_stops_with_one_line(tmp_path, shards, monkeypatch):
    out, real = tmp_path / "run", ckpt.save_file

    def full(tensors, filename, metadata=None):
        if "checkpoint-6" in str(filename):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(OutputError) as err:
        train(cfg(out, shards), tiny_components())
    msg = str(err.value)
    assert "No space left on device" in msg and "checkpoint-6" in msg and "checkpoint-3" in msg and "\n" not in msg
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3"]
    assert isinstance(err.value, user_errors())


def test_disk_full_elsewhere_in_training_is_one_line(tmp_path, shards, monkeypatch):
    import miro.train.loop as loop

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "config.yaml"))

    monkeypatch.setattr(loop, "atomic_write_text", full)
    with pytest.raises(OutputError, match="No space left on device"):
        train(cfg(tmp_path / "run", shards), tiny_components())


def test_unwritable_run_folder_stops_before_any_work(tmp_path, shards, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    built = []
    monkeypatch.setattr("miro.train.loop.inspect_dataset", lambda *a, **k: built.append(1))
    with pytest.raises(OutputError, match=r"output_dir .*file/run cannot be created") as err:
        train(cfg(tmp_path / "file" / "run", shards), tiny_components())
    assert not built and "\n" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_folder_stops_before_any_work(tmp_path, shards):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            train(cfg(ro / "run", shards), tiny_components())
    finally:
        ro.chmod(0o700)


def test_check_writable_leaves_nothing(tmp_path):
    assert check_writable(tmp_path / "a" / "b", "out_dir") == tmp_path / "a" / "b"
    assert list((tmp_path / "a" / "b").iterdir()) == []


# ----------------------------------------------------------------------------- reruns with changed settings
def test_resume_with_a_changed_network_is_refused_before_loading(tmp_path, shards):
    from miro.models.config import ModelConfig

    out = half_run(tmp_path, shards)
    changed = cfg(out, shards, resume="latest", model=ModelConfig(patch_size=2, width=32, depth=3, num_heads=2))
    with pytest.raises(ConfigError, match=r"model\.depth: 2 -> 3"):
        train(changed, tiny_components())


def test_resume_with_other_changed_settings_warns_and_lists_them(tmp_path, shards, caplog):
    from miro.train.optim import OptimConfig

    out = half_run(tmp_path, shards)
    with caplog.at_level(logging.WARNING, "miro.train"):
        train(cfg(out, shards, resume="latest", optim=OptimConfig(lr=1e-3, warmup_steps=2)), tiny_components())
    assert "optim.lr: 0.005 -> 0.001" in caplog.text
    assert (out / "final").is_dir()


# ------------------------------------------------------------------------------ nothing outside the run folder
def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every file (and symlink) under ``root`` outside ``skip``, with its size and modification time."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")
            if not p.is_dir() and (skip is None or not p.is_relative_to(skip))}


def test_training_writes_only_in_its_run_folder(tmp_path, shards, monkeypatch):
    cwd, out = tmp_path / "cwd", tmp_path / "cwd" / "run"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before_data, before_cwd = snapshot(shards), snapshot(tmp_path)
    train(cfg(out, shards), tiny_components())
    assert snapshot(shards) == before_data
    assert snapshot(tmp_path, skip=out) == before_cwd
    assert sorted(p.name for p in cwd.iterdir()) == ["run"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary left behind


# ------------------------------------------------------------------------------------------------- sampling
def _pipeline_copy(whole, tmp_path):
    """A copy of the trained pipeline folder to damage, and its transformer's weight file."""
    pipe = tmp_path / "pipe"
    shutil.copytree(whole / "final", pipe)
    return pipe, pipe / "transformer" / "diffusion_pytorch_model.safetensors"


def test_pipeline_folder_missing_its_safetensors_names_it(tmp_path, whole):
    pipe, weights = _pipeline_copy(whole, tmp_path)
    weights.unlink()
    (pipe / "transformer" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Payload(tmp_path / "PWNED")))
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors: missing"):
        MiroPipeline.from_pretrained(pipe, text_encoder=TinyTextEncoder())
    assert not (tmp_path / "PWNED").exists()


def test_pipeline_folder_with_truncated_weights_names_them(tmp_path, whole):
    pipe, weights = _pipeline_copy(whole, tmp_path)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(PipelineFolderError, match="diffusion_pytorch_model.safetensors"):
        MiroPipeline.from_pretrained(pipe, text_encoder=TinyTextEncoder())
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        MiroPipeline.from_pretrained(tmp_path, text_encoder=TinyTextEncoder())


def test_long_prompts_warn_how_many_tokens_were_cut():
    from miro.models.config import TextEncoderConfig, build_text_encoder

    te = build_text_encoder(TextEncoderConfig(kind="minilm", max_length=8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        te.encode(["a red circle", "a red circle left of a blue square above a green star"])
        te.encode(["a red circle"])
    msgs = [str(w.message) for w in caught if w.category.__name__ == "PromptTruncationWarning"]
    assert len(msgs) == 1 and "1 of 2 prompts" in msgs[0] and "max_length=8" in msgs[0]
    assert "tokens dropped" in msgs[0] and caught[0].filename == __file__  # points at the caller
    te.truncation_warnings = "once"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            te.encode(["a red circle left of a blue square above a green star"])
    assert len(caught) == 1


def test_sampling_cli_unwritable_out_dir_is_one_line_before_loading(tmp_path):
    from miro.sampling.cli import SampleConfig, run_images

    (tmp_path / "file").write_text("x")
    conf = SampleConfig(pipeline=str(tmp_path / "nothing"), prompts=["a red circle"], out_dir=str(tmp_path / "file" / "out"))
    with pytest.raises(OutputError, match=r"out_dir .*file/out cannot be created"):
        run_images(conf)


# ----------------------------------------------------------------------------------- config errors of train
@pytest.mark.parametrize("override", ["nosuchkey=1", "model.width=abc", "model.width=[", "max_steps=-1"])
def test_train_config_errors_print_no_traceback(tmp_path, override):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    res = subprocess.run([sys.executable, "-m", "miro.train", override, f"hydra.run.dir={tmp_path / 'h'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.strip(), res.stderr
    assert not (tmp_path / "runs").exists()


def test_two_runs_in_one_process_each_log_into_their_own_folder(tmp_path, shards):
    a = train(cfg(tmp_path / "a", shards, max_steps=3), tiny_components())
    b = train(cfg(tmp_path / "b", shards, max_steps=3), tiny_components())
    assert "step 2/3" in (a / "logs" / "train.log").read_text() and "step 2/3" in (b / "logs" / "train.log").read_text()
    assert (a / "logs" / "train.log").read_text().count("step 2/3") == 1


def test_resume_of_a_checkpoint_older_than_a_new_schema_key(tmp_path):
    """A checkpoint written before a key existed (model.token_mixer) resumes when the key is at its default (the
    behaviour the run had); set to anything else it is a changed network and stops, naming the key."""
    from omegaconf import OmegaConf

    from miro.models.config import ModelConfig
    from miro.train.loop import check_resume_config

    current = cfg(tmp_path / "run", tmp_path / "shards", resume="latest")
    saved = OmegaConf.to_container(OmegaConf.structured(current))
    for key in ("token_mixer", "ttt_mini_batch", "ttt_scan_orders"):
        del saved["model"][key]
    check_resume_config(saved, current, tmp_path / "checkpoint-3")  # no error
    ttt = cfg(tmp_path / "run", tmp_path / "shards", resume="latest",
              model=ModelConfig(patch_size=2, width=32, depth=2, num_heads=2, token_mixer="ttt_linear"))
    with pytest.raises(ConfigError, match=r"model\.token_mixer: '<unset>' -> 'ttt_linear'"):
        check_resume_config(saved, ttt, tmp_path / "checkpoint-3")
