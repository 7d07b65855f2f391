"""scripts/bench_ttt.py end to end at toy sizes: the JSON, the plot, and numbers that are consistent."""

import json

import pytest

from tests.scripts.loader import load_script


def load_bench():
    return load_script("bench_ttt.py")


def test_bench_ttt_writes_rows_ratios_and_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1048576")
    out = tmp_path / "ttt.json"
    result = load_bench().main(["--sizes", "16,64", "--width", "32", "--heads", "2", "--mini-batch", "4",
                                "--repeats", "1", "--out", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert saved["config"]["malloc_env"] == {"MALLOC_TOP_PAD_": "1048576"}
    first, second = saved["rows"]
    assert (first["tokens"], second["tokens"]) == (16, 64)
    for row in saved["rows"]:
        assert row["forward_ratio"] == pytest.approx(row["ttt"]["forward_s"] / row["attention"]["forward_s"])
        assert row["ttt"]["saved_for_backward_mib"] > 0
    # 16 -> 64 tokens is two doublings: the factor is the per-doubling geometric mean
    t = second["ttt"]
    assert t["doubling_factor"] == pytest.approx((t["forward_backward_s"] / first["ttt"]["forward_backward_s"]) ** 0.5)
    # the FLOP model: attention's share grows with N (4 N^2 D against TTT's linear cost)
    flop_ratio = [r["ttt"]["forward_flops"] / r["attention"]["forward_flops"] for r in saved["rows"]]
    assert flop_ratio[1] < flop_ratio[0]
    assert result["rows"] == saved["rows"]


def test_bench_ttt_rejects_bad_sizes_and_column_scans():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "0,64"])
    with pytest.raises(SystemExit):
        bench.main(["--scan-orders", "raster+col"])
