import numpy as np
import pyarrow.parquet as pq
import pytest

from miro.contracts import sidecar


def test_round_trip_and_metadata(tmp_path):
    p = tmp_path / "a" / "ds-000003.rewards.parquet"
    scores = {"pickscore": np.array([21.5, np.nan, 20.0]), "contrast": np.array([0.1, 0.2, 0.3])}
    sidecar.write_rewards(p, ["k0", "k1", "k2"], scores, ["ok", "truncated", "ok"], {"rewards": {"pickscore": {"model": "m"}}})
    t, meta = sidecar.read_rewards(p)
    assert t.column_names == ["key", "contrast", "pickscore", "status"]
    assert t.schema.field("pickscore").type == "double" and t.schema.field("key").type == "string"
    np.testing.assert_array_equal(t.column("pickscore").to_numpy(), scores["pickscore"])
    assert t.column("status").to_pylist() == ["ok", "truncated", "ok"]
    assert meta["format"] == 1 and meta["rewards"]["pickscore"]["model"] == "m" and meta["rewards_in_file"] == ["contrast", "pickscore"]
    assert sidecar.reward_columns(p) == ["contrast", "pickscore"]
    assert [f.name for f in p.parent.iterdir()] == [p.name]  # no temporary left behind


def test_paths(tmp_path):
    shard = tmp_path / "data" / "sub" / "ds-000001.tar"
    assert sidecar.rewards_path(shard) == shard.with_name("ds-000001.rewards.parquet")
    mirrored = sidecar.rewards_path(shard, tmp_path / "ann", tmp_path / "data")
    assert mirrored == tmp_path / "ann" / "sub" / "ds-000001.rewards.parquet"
    assert sidecar.buckets_path(mirrored) == tmp_path / "ann" / "sub" / "ds-000001.buckets.parquet"


def test_bad_input_is_rejected_and_failed_write_leaves_nothing(tmp_path, monkeypatch):
    p = tmp_path / "ds-000000.rewards.parquet"
    with pytest.raises(ValueError, match="2 keys"):
        sidecar.write_rewards(p, ["a", "b"], {"x": np.zeros(3)}, ["ok", "ok"], {})
    with pytest.raises(ValueError, match="reserved"):
        sidecar.write_rewards(p, ["a"], {"status": np.zeros(1)}, ["ok"], {})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        sidecar.write_rewards(p, ["a"], {"x": np.zeros(1)}, ["ok"], {})
    assert list(tmp_path.iterdir()) == []


def test_status_counts():
    assert sidecar.status_counts(["ok", "truncated", "missing_caption;nan:x", "ok"]) == {"missing_caption": 1, "nan:x": 1, "ok": 2, "truncated": 1}
