"""The stats file, bucket files and the bucket-to-value encoding."""

import json

import numpy as np
import pyarrow as pa
import pytest

from miro.contracts import sidecar
from miro.contracts.buckets import STATS_FILE, bucket_values, bucketize, load_reward_stats, read_buckets


def test_bucketize_uses_the_inner_edges_and_marks_nan_unknown():
    edges = [0.0, 1.0, 2.0, 3.0, 4.0]  # B = 4
    raw = np.array([-5.0, 0.0, 0.99, 1.0, 2.5, 3.0, 4.0, 9.0, np.nan])
    assert bucketize(raw, edges).tolist() == [0, 0, 0, 1, 2, 3, 3, 3, -1]
    assert bucketize(raw, edges).dtype == np.int16


def test_bucket_values_are_bucket_over_b_minus_one_and_unknown_is_masked():
    values, known = bucket_values(np.array([-1, 0, 1, 2, 3], np.int16), 4)
    np.testing.assert_allclose(values, [0.0, 0.0, 1 / 3, 2 / 3, 1.0], rtol=1e-6)
    assert known.tolist() == [False, True, True, True, True]


def test_load_reward_stats_validates(tmp_path):
    (tmp_path / STATS_FILE).write_text(json.dumps({"format": 1, "num_bins": 4, "rewards": {"a": {"edges": [0, 1]}}}))
    with pytest.raises(ValueError, match="has 2 edges for num_bins=4"):
        load_reward_stats(tmp_path)
    (tmp_path / STATS_FILE).write_text(json.dumps({"format": 2, "num_bins": 4, "rewards": {}}))
    with pytest.raises(ValueError, match="stats format 2, expected 1"):
        load_reward_stats(tmp_path)


def test_stats_round_trip_and_bucket_file(tmp_path):
    obj = {"format": 1, "num_bins": 4, "rewards": {"a": {"edges": [0.0, 1.0, 2.0, 3.0, 4.0]}}}
    (tmp_path / STATS_FILE).write_text(json.dumps(obj))
    stats = load_reward_stats(tmp_path / STATS_FILE)
    assert stats.names == ["a"] and stats.num_bins == 4 and len(stats.sha256) == 64
    assert stats.bucketize("a", np.array([2.5])).tolist() == [2]
    path = tmp_path / "x-000000.buckets.parquet"
    table = pa.table({"key": ["k0", "k1"], "a": pa.array([3, -1], pa.int16())})
    sidecar.write_parquet_atomic(path, table, {"num_bins": 4, "stats_sha256": stats.sha256})
    keys, cols, meta = read_buckets(path)
    assert keys == ["k0", "k1"] and cols["a"].tolist() == [3, -1] and meta["stats_sha256"] == stats.sha256


@pytest.mark.parametrize("change, message", [
    ({"num_bins": "eight"}, "key 'num_bins' must be an integer >= 2, got 'eight' (str)"),
    ({"num_bins": True}, "key 'num_bins' must be an integer >= 2, got True (bool)"),
    ({"rewards": []}, "key 'rewards' must be an object with one entry per reward"),
    ({"rewards": {"a": {"edges": "0,1,2"}}}, "key 'rewards.a.edges' must be a list of numbers"),
    ({"rewards": {"a": {"edges": [0, 2, 1]}}}, "key 'rewards.a.edges' must be finite and non-decreasing"),
])
def test_load_reward_stats_names_the_file_and_key_of_a_bad_value(tmp_path, change, message):
    from miro.contracts.buckets import StatsFileError

    (tmp_path / STATS_FILE).write_text(json.dumps({"format": 1, "num_bins": 2, "rewards": {"a": {"edges": [0, 1, 2]}}, **change}))
    with pytest.raises(StatsFileError) as err:
        load_reward_stats(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / STATS_FILE}: {message}")
    (tmp_path / STATS_FILE).write_text("{not json")
    with pytest.raises(StatsFileError, match="not valid JSON"):
        load_reward_stats(tmp_path)
