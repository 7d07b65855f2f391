"""scripts/bench_rin.py end to end at the tiny size: both sides run, agree, and the ratio is theirs / ours."""

import json

import pytest

from tests.models.miro_t2i_reference import ReferenceUnavailable, ensure_miro_t2i
from tests.scripts.loader import load_script


def test_bench_rin_tiny_rows_parity_and_ratio(tmp_path):
    try:
        ensure_miro_t2i()
    except ReferenceUnavailable as err:
        pytest.skip(f"miro-t2i (the authors' package) could not be installed: {err}")
    out = tmp_path / "rin.json"
    rows = load_script("bench_rin.py").main(["--size", "tiny", "--steps", "2", "--repeats", "1",
                                             "--dtypes", "float32", "bfloat16", "--out", str(out)])  # fmt: skip
    assert json.loads(out.read_text())["rows"] == rows
    fp32, bf16, cast = rows
    assert (fp32["dtype"], fp32["theirs_as"]) == ("float32", "float32")
    assert fp32["max_abs_diff"] < 1e-4 and fp32["theirs_error"] is None  # the same computation in fp32
    for row in (fp32, bf16):
        assert row["ours_s"] > 0 and row["ratio"] == pytest.approx(row["theirs_s"] / row["ours_s"])
    # their network cast to bf16 cannot run outside CUDA autocast (it casts the text tokens to fp32)
    assert cast["theirs_as"] == "cast-bfloat16" and "dtype" in cast["theirs_error"] and cast["ratio"] is None


def test_bench_rin_refuses_bad_counts():
    with pytest.raises(SystemExit):
        load_script("bench_rin.py").main(["--steps", "0"])
