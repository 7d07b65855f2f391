"""scripts/bench_testtime_memory.py end to end (fresh child processes) on a tiny saved pipeline, and its bad arguments."""

import json

import pytest

from tests.sampling.conftest import saved_pipe, text_encoder, tiny_pipe  # noqa: F401
from tests.scripts.loader import load_script


def load_bench():
    return load_script("bench_testtime_memory.py")


def test_bench_runs_both_ways_in_fresh_processes(saved_pipe, tmp_path):  # noqa: F811
    bench = load_bench()
    out = tmp_path / "mem.json"
    result = bench.main(["--pipeline", str(saved_pipe), "--n", "2", "6", "--steps", "1", "--batch-size", "2",
                         "--threads", "1", "--out", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert [(r["way"], r["n"]) for r in saved["rows"]] == [("chunked", 2), ("chunked", 6), ("all_at_once", 2),
                                                           ("all_at_once", 6)]  # fmt: skip
    assert all(r["growth_mib"] >= 0 and r["before_mib"] > 0 for r in saved["rows"])
    assert set(saved["mib_per_candidate"]) == {"chunked", "all_at_once"}


@pytest.mark.parametrize("argv, match", [(["--n", "0"], "--n"), (["--steps", "0"], "--steps"),
                                         (["--pipeline", "/nonexistent"], "not a MiroPipeline folder")])
def test_bad_arguments_are_refused(argv, match, capsys):
    with pytest.raises(SystemExit):
        load_bench().parse_args(argv)
    assert match in capsys.readouterr().err
