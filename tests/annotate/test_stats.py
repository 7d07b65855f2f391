"""Binning rule, streaming moments, the stats stage and re-binning from the sidecars alone."""

import json

import numpy as np
import pytest

from annotate.config import AnnotateConfig, DataConfig, StatsConfig
from annotate.stats import Moments, compute_stats, quantile_edges, run_stats
from miro.contracts import sidecar
from miro.contracts.buckets import bucket_values, bucketize, load_reward_stats, read_buckets

B = 64


def _buckets(values, num_bins=B):
    return bucketize(values, quantile_edges(values, num_bins))


def test_continuous_scores_give_equal_count_bins():
    v = np.random.default_rng(0).normal(size=10_000)
    counts = np.bincount(_buckets(v), minlength=B)
    assert counts.min() >= 10_000 // B - 1 and counts.max() <= 10_000 // B + 2
    edges = quantile_edges(v, B)
    np.testing.assert_allclose(edges[1:-1], np.quantile(v, np.arange(1, B) / B), atol=0.02)  # the usual quantiles
    assert edges[0] == v.min() and edges[-1] == v.max()


def test_binary_reward_uses_both_ends():
    v = np.array([1.0] * 70 + [0.0] * 30)
    b = _buckets(v)
    assert set(b[v == 0]) == {0} and set(b[v == 1]) == {B - 1}
    v01 = bucket_values(b, B)[0]
    assert set(v01) == {0.0, 1.0}


def test_discrete_values_are_spread_by_mass_and_ties_never_split():
    ten = np.repeat(np.arange(10.0), 50)
    b = _buckets(ten)
    assert [int(b[ten == k][0]) for k in range(10)] == [0, 7, 14, 21, 28, 35, 42, 49, 56, 63]
    assert all(len(set(b[ten == k])) == 1 for k in range(10))
    skew = np.array([0.0] * 80 + [0.5] * 10 + [1.0] * 10)  # mid-ranks 0.4, 0.85, 0.95 -> p = 0, 9/11, 1
    b = _buckets(skew)
    assert (b[0], b[85], b[95]) == (0, int(np.floor(9 / 11 * B)), B - 1) == (0, 52, 63)
    ties = np.concatenate([np.random.default_rng(1).normal(size=900), np.zeros(100)])
    bt = _buckets(ties)
    assert len(set(bt[ties == 0])) == 1


def test_nan_outside_values_constant_and_adjacent_floats():
    edges = quantile_edges(np.arange(100.0), 4)
    b = bucketize(np.array([np.nan, -5.0, 0.0, 99.0, 1e9, np.inf, -np.inf]), edges)
    assert b.dtype == np.int16 and b.tolist() == [-1, 0, 0, 3, 3, 3, 0]
    assert set(_buckets(np.full(7, 2.5))) == {B - 1}
    a = 1.0
    tiny = np.array([a, np.nextafter(a, 2.0)])
    assert _buckets(tiny, 8).tolist() == [0, 7]
    values, known = bucket_values(np.array([-1, 0, 21, 63], np.int16), 64)
    np.testing.assert_allclose(values, [0.0, 0.0, 1 / 3, 1.0], rtol=1e-6)
    assert values.dtype == np.float32 and known.tolist() == [False, True, True, True]


def test_moments_match_numpy_over_chunks():
    rng = np.random.default_rng(2)
    chunks = [rng.normal(1e6, 3.0, n) for n in (1, 17, 0, 500)]
    chunks[1][3] = np.nan
    m = Moments()
    for c in chunks:
        m.add(c)
    allv = np.concatenate(chunks)
    finite = allv[~np.isnan(allv)]
    s = m.summary()
    assert s["count"] == finite.size and s["nan_count"] == 1
    assert s["mean"] == pytest.approx(finite.mean(), rel=1e-14) and s["std"] == pytest.approx(finite.std(), rel=1e-9)
    assert (s["min"], s["max"]) == (finite.min(), finite.max())


def _make_sidecars(folder, n_shards=4, rows=50, seed=0, model="m"):
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_shards):
        shard = folder / f"ds-{i:06d}.tar"
        shard.write_bytes(b"not read by the stats stage")
        a = rng.normal(size=rows)
        a[::13] = np.nan
        b = rng.integers(0, 3, rows).astype(float)
        prov = {"model": model, "weights": [{"sha256": "ab"}], "config": {"size": 256, "batch_size": i}}
        p = sidecar.write_rewards(sidecar.rewards_path(shard), [f"k{i}_{j}" for j in range(rows)], {"a": a, "b": b}, ["ok"] * rows, {"rewards": {"a": prov, "b": prov}})
        paths.append(p)
    return paths


def test_compute_stats_whole_set_and_uniform_sample(tmp_path):
    paths = _make_sidecars(tmp_path)
    whole = compute_stats(paths, num_bins=8, max_samples=None)
    assert whole["sample"] == {"method": "all", "size": 200, "population": 200}
    assert whole["rewards"]["a"]["nan_count"] == 4 * 4 and whole["rewards"]["a"]["count"] == 200 - 16
    s1 = compute_stats(paths, num_bins=8, max_samples=60, seed=1)
    s2 = compute_stats(paths, num_bins=8, max_samples=60, seed=1)
    s3 = compute_stats(paths, num_bins=8, max_samples=60, seed=2)
    assert s1 == s2 and s1["rewards"]["a"]["edges"] != s3["rewards"]["a"]["edges"]
    assert s1["sample"]["method"] == "uniform_without_replacement" and s1["sample"]["size"] == 60
    for k in ("count", "nan_count", "mean", "std", "min", "max"):  # moments are over every row even when sampling
        assert s1["rewards"]["a"][k] == whole["rewards"]["a"][k]
    assert len(whole["rewards"]["b"]["edges"]) == 9 and whole["rewards"]["b"]["unique_in_sample"] == 3


def test_compute_stats_refuses_mixed_models_and_missing_columns(tmp_path):
    paths = _make_sidecars(tmp_path, 2)  # their configs differ only in batch_size, which does not count
    (tmp_path / "x").mkdir()
    other = _make_sidecars(tmp_path / "x", 1, model="other")
    with pytest.raises(ValueError, match="different models"):
        compute_stats(paths + other)
    with pytest.raises(ValueError, match="lack requested rewards.*zzz"):
        compute_stats(paths, rewards=["a", "zzz"])


def _cfg(tmp_path, **stats):
    return AnnotateConfig(stage="stats", data=DataConfig(shards=str(tmp_path)), stats=StatsConfig(**stats))


def test_run_stats_writes_stats_and_buckets_and_rebins_from_sidecars_only(tmp_path):
    paths = _make_sidecars(tmp_path)
    out = run_stats(_cfg(tmp_path, num_bins=8, max_samples=None))
    stats = load_reward_stats(tmp_path)
    assert out["buckets_written"] == 4 and stats.num_bins == 8 and stats.names == ["a", "b"]
    keys, cols, meta = read_buckets(sidecar.buckets_path(paths[1]))
    raw, _ = sidecar.read_rewards(paths[1])
    assert keys == raw.column("key").to_pylist() and meta["num_bins"] == 8 and meta["stats_sha256"] == stats.sha256
    np.testing.assert_array_equal(cols["a"], bucketize(raw.column("a").to_numpy(), stats.edges("a")))
    assert cols["a"].dtype == np.int16 and (cols["a"] == -1).sum() == 4 and cols["a"].max() <= 7
    assert run_stats(_cfg(tmp_path, num_bins=8, max_samples=None))["buckets_written"] == 0  # up to date
    run_stats(_cfg(tmp_path, num_bins=3, max_samples=None))  # re-binning: the tars hold garbage, never read
    _, cols3, meta3 = read_buckets(sidecar.buckets_path(paths[1]))
    assert meta3["num_bins"] == 3 and set(cols3["b"]) <= {0, 1, 2} and load_reward_stats(tmp_path).num_bins == 3


def test_run_stats_missing_sidecars(tmp_path):
    _make_sidecars(tmp_path, 2)
    (tmp_path / "ds-000007.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"1 of 3 shards have no rewards sidecar.*ds-000007\.tar"):
        run_stats(_cfg(tmp_path))
    out = run_stats(_cfg(tmp_path, allow_missing=True))
    assert out["missing_shards"] == [str(tmp_path / "ds-000007.tar")]
    assert json.loads((tmp_path / "reward_stats.json").read_text())["missing_shards"] == out["missing_shards"]
