"""Fault injection, annotate stage (score + stats): members without extension, short or foreign sidecars,
read-only output folders, concurrent runs, a kill then a rerun, reruns with other settings, duplicate keys,
symlinked folders; no traceback for a bad input, counts add up, nothing written outside the output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from annotate.config import StatsConfig
from annotate.job import incomplete_reason, plan_shard, run_scoring
from annotate.stats import StatsError, run_stats
from miro.contracts import sidecar
from miro.data.shards import NO_EXTENSION
from miro.utils.storage import OutputError
from tests.annotate.test_job import FREE, cfg
from tests.annotate.test_job import read as table
from tests.faults.conftest import ROOT, assert_one_line_error, run_module, shard_with_extra, snapshot


@pytest.mark.parametrize("n, where, workers", [(5, 0, 0), (5, 4, 0), (5, 5, 0), (10, 3, 0), (10, "inside", 0), (10, 7, 2)])
def test_member_without_extension_loses_no_sample_and_is_reported(tmp_path, n, where, workers):
    """Before: 1 of 5 and 7 of 10 samples lost; now every sample is scored and the member is reported."""
    shard, keys = shard_with_extra(tmp_path / "d" / "x-000000.tar", n, {where: ("README" if n == 5 else "dir/noext", b"hi")})
    run_scoring(cfg(tmp_path / "d", workers=workers))
    cols, meta = table(sidecar.rewards_path(shard))
    assert cols["key"] == keys and set(cols["status"]) == {"ok"}  # 5 of 5 / 10 of 10 scored
    assert meta["report"]["skipped_members"] == [["README" if n == 5 else "dir/noext", NO_EXTENSION]]
    assert meta["report"]["samples"] == meta["shard_samples"] == n
    assert meta["report"]["tar_error"] is None
    assert plan_shard(shard, sidecar.rewards_path(shard), FREE, False) is None  # complete: a rerun skips it


def _shards(tmp_path, n_shards=2, n=10):
    return [shard_with_extra(tmp_path / "d" / f"x-{i:06d}.tar", n, prefix=f"s{i}k")[0] for i in range(n_shards)]


def _rewrite(path, keep_rows, meta_samples=None, keys=None):
    """Replace a sidecar by its first ``keep_rows`` rows, keeping (or editing) its metadata."""
    t, meta = sidecar.read_rewards(path)
    t = t.slice(0, keep_rows)
    if keys is not None:
        t = t.set_column(0, "key", pa.array(keys, pa.string()))
    if meta_samples is not None:
        meta["report"]["samples"] = meta_samples
    sidecar.write_parquet_atomic(path, t.replace_schema_metadata({}), meta)


def test_short_sidecar_with_its_original_metadata_is_rescored(tmp_path):
    shards = _shards(tmp_path)
    run_scoring(cfg(tmp_path / "d"))
    path = sidecar.rewards_path(shards[0])
    full, _ = table(path)
    _rewrite(path, 4)  # 4 of 10 rows, metadata still says 10 (the issue: 10 of 250 taken as complete)
    assert "holds 4 rows but records 10" in incomplete_reason(shards[0], path, sidecar.read_meta(path))
    summary = run_scoring(cfg(tmp_path / "d"))
    assert summary["written"] == [str(path)] and summary["skipped"] == 1
    assert table(path)[0] == full


def test_consistent_but_short_or_foreign_sidecar_is_rescored_and_refused_by_stats(tmp_path):
    shards = _shards(tmp_path)
    run_scoring(cfg(tmp_path / "d"))
    p0, p1 = (sidecar.rewards_path(s) for s in shards)
    _rewrite(p0, 4, meta_samples=4)  # row count and metadata agree, the shard disagrees
    _rewrite(p1, 10, keys=[f"other{i}" for i in range(10)])  # right count, other keys
    with pytest.raises(StatsError, match=r"has 4 rows for the 10 samples of x-000000.tar"):
        run_stats(cfg(tmp_path / "d", stage="stats"))
    assert not (tmp_path / "d" / "reward_stats.json").exists()
    assert "keys are not the 10 keys" in incomplete_reason(shards[1], p1, sidecar.read_meta(p1))
    summary = run_scoring(cfg(tmp_path / "d"))
    assert sorted(summary["written"]) == [str(p0), str(p1)]
    out = run_stats(cfg(tmp_path / "d", stage="stats", stats=StatsConfig(num_bins=4)))
    stats = json.loads(open(out["stats_file"]).read())
    assert all(r["count"] + r["nan_count"] == 20 for r in stats["rewards"].values())  # all of the data


def test_stats_refuses_a_short_sidecar_through_the_command_line(tmp_path):
    shards = _shards(tmp_path, 1)
    run_scoring(cfg(tmp_path / "d"))
    _rewrite(sidecar.rewards_path(shards[0]), 7, meta_samples=7)
    proc = run_module("annotate", "stage=stats", f"data.shards={tmp_path / 'd'}", cwd=tmp_path)
    assert_one_line_error(proc, "7 rows for the 10 samples", "run the score stage again")


def test_read_only_output_folder_is_found_before_any_scoring(tmp_path, readonly):
    _shards(tmp_path, 1)
    out = readonly(tmp_path / "ro")

    class Boom:
        name, outputs, image_only_outputs, text_outputs = "boom", ("sharpness",), ("sharpness",), ()

        def preprocessor(self):
            raise AssertionError("scoring started before the output folder was checked")

    with pytest.raises(OutputError, match="sidecar folder .*ro.* is not writable"):
        run_scoring(cfg(tmp_path / "d", out_dir=str(out), rewards=["sharpness"]), scorers=[Boom()])
    assert list(out.iterdir()) == []


def test_unusable_output_folder_is_one_line_from_the_command(tmp_path):
    _shards(tmp_path, 1)
    (tmp_path / "file").write_text("x")
    proc = run_module("annotate", f"data.shards={tmp_path / 'd'}", f"out_dir={tmp_path / 'file' / 'sub'}", "rewards=[sharpness]",
                      "workers=0", cwd=tmp_path)
    assert_one_line_error(proc, "cannot be created")


def test_concurrent_runs_on_the_same_outputs_leave_complete_identical_sidecars(tmp_path):
    shards = _shards(tmp_path, 3)
    ref = tmp_path / "ref"
    run_scoring(cfg(tmp_path / "d", out_dir=str(ref)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "-m", "annotate", f"data.shards={tmp_path / 'd'}", "rewards=[sharpness,low_noise,colorfulness,contrast]",
            "workers=0", "batch_size=4", "progress=false"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for s in shards:
        got, _ = table(sidecar.rewards_path(s))
        want, _ = table(sidecar.rewards_path(s, ref, tmp_path / "d"))
        assert got == want
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_kill_then_rerun_gives_identical_outputs(tmp_path):
    shards = _shards(tmp_path, 3)
    ref = tmp_path / "ref"
    run_scoring(cfg(tmp_path / "d", out_dir=str(ref)))

    from annotate.scorers import build_scorers

    scorers = build_scorers(FREE, {}, device="cpu")
    calls = {"n": 0}
    first = scorers[0]
    real = first.forward

    def dies(batch):
        calls["n"] += 1
        if calls["n"] == 4:  # inside the second shard (3 batches a shard)
            raise KeyboardInterrupt
        return real(batch)

    first.forward = dies
    with pytest.raises(KeyboardInterrupt):
        run_scoring(cfg(tmp_path / "d"), scorers=scorers)
    assert sidecar.rewards_path(shards[0]).exists() and not sidecar.rewards_path(shards[1]).exists()
    summary = run_scoring(cfg(tmp_path / "d"))
    assert summary["skipped"] == 1 and len(summary["written"]) == 2
    for s in shards:
        got, gm = table(sidecar.rewards_path(s))
        want, wm = table(sidecar.rewards_path(s, ref, tmp_path / "d"))
        assert got == want and gm["report"] == wm["report"]


def test_rerun_with_changed_settings_rescores_only_what_changed(tmp_path, caplog):
    shards = _shards(tmp_path, 1)
    run_scoring(cfg(tmp_path / "d", rewards=["sharpness"]))
    summary = run_scoring(cfg(tmp_path / "d", rewards=["sharpness", "contrast"]))  # a reward added later
    cols, meta = table(sidecar.rewards_path(shards[0]))
    assert summary["written"] and set(meta["rewards_in_file"]) == {"sharpness", "contrast"} and len(cols["key"]) == 10


def test_duplicate_keys_and_symlinked_folder_counts_add_up_and_nothing_written_outside(tmp_path):
    real = tmp_path / "real"
    members_shard, keys = shard_with_extra(real / "x-000000.tar", 6)
    # the same key again at the end: counted once as duplicate_key
    import tarfile

    from tests.faults.conftest import sample_members, write_raw_tar

    with tarfile.open(members_shard) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf]
    write_raw_tar(members_shard, members + sample_members("k0002"))
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    out = tmp_path / "out"
    before = snapshot(tmp_path, exclude=out)
    run_scoring(cfg(tmp_path / "link", out_dir=str(out)))
    assert snapshot(tmp_path, exclude=out) == before  # nothing outside out_dir (the shards untouched)
    cols, meta = table(out / "x-000000.rewards.parquet")
    counts = meta["report"]["status_counts"]
    assert len(cols["key"]) == 7 == counts["ok"] + counts["duplicate_key"] and counts["duplicate_key"] == 1
    assert np.isnan(cols["sharpness"][6])


def test_stats_counts_add_up(tmp_path):
    _shards(tmp_path, 2)
    run_scoring(cfg(tmp_path / "d"))
    out = run_stats(cfg(tmp_path / "d", stage="stats", stats=StatsConfig(num_bins=4)))
    stats = json.loads(open(out["stats_file"]).read())
    assert stats["sample"]["population"] == 20 and out["buckets_written"] == 2


def test_training_reads_a_bad_statistics_file_as_one_clear_error(tmp_path):
    from miro.data.annotations import DataError, read_reward_stats

    path = tmp_path / "reward_stats.json"
    path.write_text(json.dumps({"format": 1, "num_bins": "eight", "rewards": {"a": {"edges": [0, 1]}}}))
    with pytest.raises(DataError, match="key 'num_bins' must be an integer >= 2, got 'eight'"):
        read_reward_stats(path)


def test_disk_full_while_writing_a_sidecar_is_one_line_and_a_rerun_resumes(tmp_path, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    shards = _shards(tmp_path, 3)
    real = pq.write_table
    calls = [0]

    def write_table(table, where, **kw):
        calls[0] += 1
        if calls[0] == 2:
            open(where, "wb").write(b"PAR1 half")  # a part written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", write_table)
    with pytest.raises(OutputError, match=r"x-000001.rewards.parquet could not be written \(disk full\); the 1 sidecars"):
        run_scoring(cfg(tmp_path / "d"))
    monkeypatch.setattr(pq, "write_table", real)
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["x-000000.rewards.parquet", "x-000000.tar", "x-000001.tar", "x-000002.tar"]  # no temp file
    summary = run_scoring(cfg(tmp_path / "d"))
    assert summary["skipped"] == 1 and len(summary["written"]) == 2
    assert all(sidecar.num_rows(sidecar.rewards_path(s)) == 10 for s in shards)
