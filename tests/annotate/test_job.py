"""The scoring job end to end: bad input, corrupt tars, resume after a crash, partial sidecars, splits."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotate.config import AnnotateConfig, DataConfig
from annotate.job import process_rank, run_scoring, select_shards
from annotate.scorers import build_scorer, build_scorers
from miro.contracts import sidecar
from miro.contracts.rewards import REWARD_NAMES
from miro.data.images import decode_image
from miro.data.shards import ShardError, ShardWriter, iter_shard
from miro.utils.config import CONFIG_DIR, ConfigError, to_typed
from tests.annotate.conftest import bad_samples, write_good_shards

ROOT = Path(__file__).resolve().parents[2]
FREE = ["sharpness", "low_noise", "colorfulness", "contrast"]


def cfg(shards, **kw) -> AnnotateConfig:
    data = DataConfig(shards=str(shards), **kw.pop("data", {}))
    return AnnotateConfig(data=data, progress=False, **{"rewards": list(FREE), "workers": 0, "batch_size": 4, **kw})


def read(path):
    t, meta = sidecar.read_rewards(path)
    return t.to_pydict(), meta


def test_select_shards_partitions():
    shards = [Path(f"s-{i:06d}.tar") for i in range(10)]
    assert select_shards(shards, "2:5") == shards[2:5]
    assert select_shards(shards, ":-8") == shards[:2]
    parts = [select_shards(shards, array_index=i, array_count=3) for i in range(3)]
    assert sorted(sum(parts, [])) == shards and parts[1] == shards[1::3]
    ranks = [select_shards(shards, "1:9", 0, 2, rank=r, world=2) for r in range(2)]
    assert ranks == [shards[1:9:2][0::2], shards[1:9:2][1::2]]


def test_process_rank_from_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    assert process_rank() == (0, 1, 0)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert process_rank() == (3, 4, 0)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_rank() == (1, 2, 1)


def test_config_validation():
    with pytest.raises(ConfigError, match="rewards='pick': must be one of"):
        to_typed({"data": {"shards": "x"}, "rewards": ["pick"]}, AnnotateConfig)
    with pytest.raises(ConfigError, match="rewards.hpsv2=3"):
        to_typed({"data": {"shards": "x"}, "rewards": {"hpsv2": 3}}, AnnotateConfig)
    with pytest.raises(ConfigError, match="rewards=.*repeat"):
        AnnotateConfig(rewards=["contrast", "contrast"])
    assert AnnotateConfig().reward_names == FREE
    with pytest.raises(ConfigError, match="device='gpu'"):
        to_typed({"data": {"shards": "x"}, "device": "gpu"}, AnnotateConfig)
    with pytest.raises(ConfigError, match="array_index=5"):
        to_typed({"data": {"shards": "x"}, "array_index": 5, "array_count": 2}, AnnotateConfig)
    with pytest.raises(ConfigError, match="shard_range='1-3'"):
        to_typed({"data": {"shards": "x"}, "shard_range": "1-3"}, AnnotateConfig)
    with pytest.raises(ConfigError, match="stats.num_bins=1"):
        to_typed({"data": {"shards": "x"}, "stats": {"num_bins": 1}}, AnnotateConfig)


def test_hydra_config_composes_with_reward_groups():
    from hydra import compose, initialize_config_dir

    import annotate.__main__  # noqa: F401 - registers the schema

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        default = to_typed(compose("annotate", overrides=["data.shards=/x"]), AnnotateConfig)
        c = compose("annotate", overrides=["data.shards=/x", "rewards=[hpsv2,contrast,imagereward]", "rewards.hpsv2.version=v2.0"])
        everything = compose("annotate", overrides=["data.shards=/x", f"rewards=[{','.join(REWARD_NAMES)}]"])
    assert default.reward_names == FREE and default.rewards["sharpness"] == {"size": 256, "median": 5, "max_side": 1024}
    typed = to_typed(c, AnnotateConfig)
    assert typed.reward_names == ["hpsv2", "contrast", "imagereward"] and typed.stats.num_bins == 64
    assert typed.rewards["hpsv2"]["version"] == "v2.0" and typed.rewards["imagereward"]["max_length"] == 35
    schemas = {"pickscore": "PickScoreConfig", "imagereward": "ImageRewardConfig", "hpsv2": "HPSv2Config", "clip_score": "ClipScoreConfig",
               "aesthetic": "AestheticConfig", "alignment": "AlignmentConfig", "low_noise": "LowNoiseConfig"}
    selected = to_typed(everything, AnnotateConfig).rewards
    assert list(selected) == list(REWARD_NAMES)
    for name, rc in selected.items():  # every group validates against its scorer's schema
        mod = __import__(f"annotate.scorers.{name}", fromlist=["x"])
        to_typed(rc, getattr(mod, schemas[name]) if name in schemas else mod.SETTINGS)


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    import annotate.__main__  # noqa: F401

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        c = compose("annotate", overrides=["data.shards=/x", "hydra/launcher=slurm"], return_hydra_config=True)
    assert c.hydra.launcher.array_parallelism == 32 and "SlurmLauncher" in c.hydra.launcher._target_


def test_bad_inputs_are_reported_and_nothing_is_lost(tmp_path):
    samples = bad_samples()
    with ShardWriter(tmp_path / "shards", "bad", maxcount=100) as w:
        for k, (m, _) in samples.items():
            w.write(k, m)
    summary = run_scoring(cfg(tmp_path / "shards", workers=2))
    (path,) = summary["written"]
    d, meta = read(path)
    assert d["key"] == list(samples)
    assert dict(zip(d["key"], d["status"])) == {k: s for k, (_, s) in samples.items()}
    counts = meta["report"]["status_counts"]
    assert counts["ok"] == 5 and counts["alpha"] == 1 and counts["truncated"] == 2 and counts["too_large"] == 1 and counts["missing_caption"] == 2
    assert meta["report"]["samples"] == 15 and meta["report"]["tar_error"] is None
    for r in FREE:
        col = np.array(d[r])
        for k, st in zip(d["key"], d["status"]):
            image_ok = not set(st.split(";")) & {"truncated", "empty", "not_an_image", "too_large", "missing_image"}
            assert np.isfinite(col[d["key"].index(k)]) == image_ok, (r, k, st)  # image-only rewards survive a bad caption
    # the job's numbers are exactly the scorer API's on the decoded images
    members = dict(iter_shard(next((tmp_path / "shards").glob("*.tar"))))
    ok = [k for k, st in zip(d["key"], d["status"]) if st in ("ok", "alpha")]  # weight-free rewards: the training view
    imgs = [decode_image(members[k].get("png") or members[k].get("jpg")) for k in ok]
    for r in FREE:
        np.testing.assert_array_equal(np.array(d[r])[[d["key"].index(k) for k in ok]], build_scorer(r).score(imgs))
    assert meta["rewards"]["sharpness"]["model"] == "weight-free:sharpness" and meta["config"]["workers"] == 2


def _member_offsets(shard):
    import tarfile

    with tarfile.open(shard) as tf:
        return [(m.name, m.offset) for m in tf.getmembers()]


@pytest.mark.parametrize("cut", ["mid_member", "at_boundary"])
def test_corrupt_tar_scores_samples_before_the_damage(tmp_path, cut):
    shards = write_good_shards(tmp_path / "shards", 3, 10)
    data = shards[1].read_bytes()
    offsets = dict(_member_offsets(shards[1]))
    at = offsets["s00016.png"] + (700 if cut == "mid_member" else 0)  # inside sample 6's image / right before it
    shards[1].write_bytes(data[:at])
    summary = run_scoring(cfg(tmp_path / "shards", workers=2))
    assert len(summary["written"]) == 3  # the job went on
    d, meta = read(sidecar.rewards_path(shards[1]))
    before = [f"s{i:05d}" for i in range(10, 16)]  # the six complete samples before the damage
    # miro.data.shards.iter_shard currently loses the last complete sample when the damage is inside the next
    # member's data (see test_iter_shard_keeps_the_sample_before_the_damage); everything it yields is scored
    assert d["key"] == before[: len(d["key"])] and len(d["key"]) >= 5
    assert all(s == "ok" for s in d["status"]) and np.all(np.isfinite(d["contrast"]))
    assert ("unreadable tar" if cut == "mid_member" else "no end-of-archive") in meta["report"]["tar_error"]
    assert read(sidecar.rewards_path(shards[2]))[1]["report"]["tar_error"] is None


def test_iter_shard_keeps_the_sample_before_the_damage(tmp_path):
    (shard,) = write_good_shards(tmp_path, 1, 10)
    at = dict(_member_offsets(shard))["s00006.png"] + 700
    shard.write_bytes(shard.read_bytes()[:at])
    got = []
    with pytest.raises(ShardError):
        for key, _ in iter_shard(shard):
            got.append(key)
    assert got == [f"s{i:05d}" for i in range(6)]


def test_same_sidecars_for_any_worker_count_and_skip_when_complete(tmp_path):
    write_good_shards(tmp_path / "shards", 3, 9)
    run_scoring(cfg(tmp_path / "shards", out_dir=str(tmp_path / "w0"), workers=0))
    run_scoring(cfg(tmp_path / "shards", out_dir=str(tmp_path / "w2"), workers=2))  # chunks split within shards
    for a in sorted((tmp_path / "w0").glob("*.parquet")):
        da, _ = read(a)
        db, _ = read(tmp_path / "w2" / a.name)
        assert da == db
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "w0").glob("*")}
    again = run_scoring(cfg(tmp_path / "shards", out_dir=str(tmp_path / "w0"), workers=0))
    assert again["skipped"] == 3 and again["written"] == [] and mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "w0").glob("*")}


def test_resume_after_a_crash_gives_identical_sidecars(tmp_path):
    shards = write_good_shards(tmp_path / "shards", 4, 10)
    out = tmp_path / "ann"
    run_scoring(cfg(tmp_path / "shards", out_dir=str(out), workers=2))
    reference = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    shutil.rmtree(out)

    scorers = build_scorers(FREE)
    calls = {"n": 0}
    real = scorers[0].forward

    def dying_forward(batch):  # the process "dies" in the middle of the third shard
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("killed")
        return real(batch)

    scorers[0].forward = dying_forward
    with pytest.raises(RuntimeError, match="killed"):
        run_scoring(cfg(tmp_path / "shards", out_dir=str(out), workers=2), scorers=scorers)
    done = sorted(p.name for p in out.iterdir())
    assert done == [f"ds-00000{i}.rewards.parquet" for i in range(2)]  # complete shards only, no temporaries
    summary = run_scoring(cfg(tmp_path / "shards", out_dir=str(out), workers=2))
    assert summary["skipped"] == 2 and len(summary["written"]) == 2 and summary["images"] == 20
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == reference  # byte-identical
    assert len(shards) == 4


def test_partial_sidecar_gets_only_the_missing_rewards(tmp_path):
    shards = write_good_shards(tmp_path / "shards", 2, 5)
    run_scoring(cfg(tmp_path / "shards", rewards=["sharpness"]))
    first, _ = read(sidecar.rewards_path(shards[0]))
    summary = run_scoring(cfg(tmp_path / "shards", rewards=["sharpness", "contrast"]))
    assert len(summary["written"]) == 2
    d, meta = read(sidecar.rewards_path(shards[0]))
    assert d["sharpness"] == first["sharpness"] and np.all(np.isfinite(d["contrast"]))
    assert set(meta["rewards"]) == {"sharpness", "contrast"}
    shards[0].write_bytes(shards[0].read_bytes() + b"\0" * 1024)  # the shard changed: its sidecar is redone
    assert run_scoring(cfg(tmp_path / "shards", rewards=["sharpness", "contrast"]))["written"] == [str(sidecar.rewards_path(shards[0]))]


def test_out_dir_mirrors_nested_layout(tmp_path):
    write_good_shards(tmp_path / "data" / "a", 1, 3, name="x")
    write_good_shards(tmp_path / "data" / "b" / "c", 1, 3, name="y")
    run_scoring(cfg(tmp_path / "data", out_dir=str(tmp_path / "ann"), rewards=["contrast"]))
    assert sorted(str(p.relative_to(tmp_path / "ann")) for p in (tmp_path / "ann").rglob("*.parquet")) == [
        "a/x-000000.rewards.parquet",
        "b/c/y-000000.rewards.parquet",
    ]


def test_job_with_model_scorers_matches_the_api(tmp_path, clip_l_dir, aesthetic_head_file, hps_checkpoint, tiny_open_clip_arch):
    shards = write_good_shards(tmp_path / "shards", 1, 6, size=(64, 48))
    settings = {
        "clip_score": {"model": str(clip_l_dir)},
        "aesthetic": {"clip_model": str(clip_l_dir), "head": str(aesthetic_head_file)},
        "hpsv2": {"checkpoint": str(hps_checkpoint), "arch": tiny_open_clip_arch},
        "contrast": {},
    }
    rewards = list(settings)
    run_scoring(cfg(tmp_path / "shards", rewards=settings, workers=1, device="cpu"))
    d, meta = read(sidecar.rewards_path(shards[0]))
    members = list(iter_shard(shards[0]))
    imgs = [decode_image(m["png"]) for _, m in members]
    caps = [m["txt"].decode() for _, m in members]
    expect = {}
    for s in build_scorers(rewards, settings):
        expect.update(s.score_dict(imgs, caps))
    for r in rewards:  # fp32 batched forwards: the job's batches differ from the API's (seen: 1.3e-6 relative on AVX2)
        np.testing.assert_allclose(d[r], expect[r], rtol=1e-5, atol=1e-5)
    assert meta["rewards"]["hpsv2"]["version"] == "v2.1" and meta["rewards"]["aesthetic"]["weights"][-1]["role"] == "aesthetic_head"
    assert meta["rewards"]["clip_score"]["config"]["model"] == str(clip_l_dir)
    run_scoring(cfg(tmp_path / "shards", rewards=settings, dtype="bfloat16", out_dir=str(tmp_path / "bf16"), device="cpu"))
    dbf, _ = read(tmp_path / "bf16" / sidecar.rewards_path(shards[0]).name)
    np.testing.assert_allclose(dbf["clip_score"], d["clip_score"], atol=0.05)


def _env():
    env = dict(os.environ, MIRO_HYDRA_DIR="hydra-out", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def test_cli_end_to_end_and_bad_value(tmp_path):
    write_good_shards(tmp_path / "shards", 2, 4)
    args = [sys.executable, "-m", "annotate", f"data.shards={tmp_path / 'shards'}", "workers=0", "progress=false"]
    r = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / "shards").glob("*.rewards.parquet"))) == 2
    r = subprocess.run([*args, "stage=stats", "stats.num_bins=4"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / "shards").glob("*.buckets.parquet"))) == 2 and (tmp_path / "shards" / "reward_stats.json").exists()
    r = subprocess.run([*args, "batch_size=0"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "batch_size=0: must be a positive integer" in r.stderr


@pytest.mark.distributed
def test_torchrun_two_processes_score_every_shard_once(tmp_path):
    shards = write_good_shards(tmp_path / "shards", 5, 3)
    torchrun = Path(sys.executable).with_name("torchrun")
    args = [str(torchrun), "--nproc_per_node", "2", "--master_port", "0", "-m", "annotate", f"data.shards={tmp_path / 'shards'}", "workers=0", "progress=false", "rewards=[contrast]"]
    r = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    wrote = [line.split("wrote ")[1].split(" (")[0] for line in log.splitlines() if ": wrote " in line]
    by_rank = {rank: [w for line, w in zip([x for x in log.splitlines() if ": wrote " in x], wrote) if f"rank {rank}/2" in line] for rank in (0, 1)}
    assert sorted(wrote) == sorted(str(sidecar.rewards_path(s)) for s in shards)  # every shard exactly once
    assert len(by_rank[0]) == 3 and len(by_rank[1]) == 2


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_shard_then_rerun(tmp_path):
    """A real kill -9 of ``python -m annotate`` while it is inside a shard; the rerun completes identically."""
    import signal
    import time

    write_good_shards(tmp_path / "shards", 6, 12, size=(160, 120))
    base = [sys.executable, "-m", "annotate", f"data.shards={tmp_path / 'shards'}", "workers=2", "batch_size=4", "progress=false"]
    ref = subprocess.run([*base, f"out_dir={tmp_path / 'ref'}"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "ann"
    args = [*base, f"out_dir={out}"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its DataLoader workers, mid-way through the third shard
    proc.wait()
    partial = sorted(p.name for p in out.glob("*.parquet"))
    assert 2 <= len(partial) < 6 and not list(out.glob(".*tmp"))
    # sidecars are compared without the config (out_dir differs between the two runs)
    again = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    for p in sorted((tmp_path / "ref").glob("*.parquet")):
        a, ma = read(p)
        b, mb = read(out / p.name)
        assert a == b and ma["report"] == mb["report"] and ma["rewards"] == mb["rewards"]


def test_changed_settings_rescore_only_that_reward(tmp_path):
    shards = write_good_shards(tmp_path / "shards", 1, 5, size=(64, 64))
    run_scoring(cfg(tmp_path / "shards", rewards={"sharpness": {"size": 64}, "contrast": {}}))
    first, _ = read(sidecar.rewards_path(shards[0]))
    assert run_scoring(cfg(tmp_path / "shards", rewards={"sharpness": {"size": 64}, "contrast": {}}))["skipped"] == 1
    summary = run_scoring(cfg(tmp_path / "shards", rewards={"sharpness": {"size": 32}, "contrast": {}}))
    assert len(summary["written"]) == 1
    d, meta = read(sidecar.rewards_path(shards[0]))
    assert d["contrast"] == first["contrast"] and d["sharpness"] != first["sharpness"]
    assert meta["rewards"]["sharpness"]["config"] == {"size": 32, "median": 5, "max_side": 1024}


def test_preprocessors_survive_pickling(pickscore_dir, imagereward_files, hps_checkpoint, tiny_open_clip_arch, images):
    """Workers started with 'spawn' (macOS, Windows) receive the preprocessors pickled: they must round-trip."""
    import pickle

    import torch

    from tests.annotate.conftest import TINY_BLIP

    scorers = [
        build_scorer("pickscore", model=str(pickscore_dir), processor=str(pickscore_dir)),
        build_scorer("imagereward", checkpoint=str(imagereward_files[0]), med_config=str(imagereward_files[1]), vision=TINY_BLIP),
        build_scorer("hpsv2", checkpoint=str(hps_checkpoint), arch=tiny_open_clip_arch),
        *build_scorers(["sharpness", "alignment"]),
    ]
    for s in scorers:
        prep = s.preprocessor()
        blob = pickle.dumps(prep)
        assert len(blob) < 20_000_000  # no model weights inside
        a, b = prep(images[1], "a red star"), pickle.loads(blob)(images[1], "a red star")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
