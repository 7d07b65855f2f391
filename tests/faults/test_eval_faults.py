"""Fault injection, eval stage: unreadable images (one policy in every evaluator: exclude and report),
read-only output folders, a kill then a rerun, reruns with other settings; reasons without object addresses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from miro.eval.cli import main
from tests.eval.test_cli import _shapes_prompts
from tests.faults.conftest import snapshot

BROKEN = {"00000/samples/0001.png": b"", "00001/samples/0000.png": None, "00002/samples/0001.png": b"text"}  # None: cut in half


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    main(["generate", f"image_dir={run}", "generate.source=shapes_oracle", "generate.n_samples=2",
          f"prompts.metadata={_shapes_prompts(tmp_path)}"])  # fmt: skip
    return run


def _break(run):
    for rel, data in BROKEN.items():
        path = run / rel
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if data is None else data)


def test_geneval_evaluate_excludes_and_reports_unreadable_images(run_dir, capsys):
    clean = run_dir.parent / "clean.jsonl"
    main(["evaluate", f"image_dir={run_dir}", "detector.name=shapes", f"evaluate.results={clean}"])
    clean_rows = [json.loads(x) for x in clean.read_text().splitlines()]
    _break(run_dir)
    capsys.readouterr()
    main(["evaluate", f"image_dir={run_dir}", "detector.name=shapes"])
    out = capsys.readouterr().out
    assert "geneval evaluate: 3 of 6 images excluded (unreadable), left out of every score" in out
    assert "Excluded (unreadable) images, left out of every score: 3" in out
    text = (run_dir / "results.jsonl").read_text()
    assert " at 0x" not in text  # no object addresses in reasons
    rows = [json.loads(x) for x in text.splitlines()]
    excluded = [r for r in rows if r.get("excluded")]
    assert len(rows) == 6 == len(excluded) + sum(1 for r in rows if not r.get("excluded"))  # in = scored + excluded
    assert {r["reason"] for r in excluded} == {"excluded: unreadable image (empty)", "excluded: unreadable image (truncated)",
                                               "excluded: unreadable image (not_an_image)"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["excluded_images"] == 3 and summary["total_images"] == 3
    readable = {r["filename"]: r["correct"] for r in clean_rows}
    for r in rows:  # the readable images are judged as before: an unreadable one is not a wrong answer
        if not r.get("excluded"):
            assert r["correct"] == readable[r["filename"]]


def test_reward_metrics_exclude_and_report_unreadable_images(run_dir, capsys):
    _break(run_dir)
    main(["rewards", f"image_dir={run_dir}", "rewards=[sharpness,contrast]", "rewards.sharpness.size=64"])
    out = capsys.readouterr().out
    assert "rewards: 3 of 6 images excluded (unreadable)" in out and "3 unreadable images excluded" in out
    summary = json.loads((run_dir / "rewards_summary.json").read_text())
    for s in summary.values():
        assert (s["count"], s["nan_count"], s["excluded"]) == (3, 0, 3) and s["mean"] is not None  # no NaN mean


def test_fid_excludes_and_reports_unreadable_images(run_dir):
    from miro.eval.fid import FIDInputError, folder_statistics

    _break(run_dir)
    seen = []

    def features(images):
        seen.extend(images)
        return np.stack([np.asarray(im.resize((4, 4))).reshape(-1)[:8].astype(float) for im in images])

    excluded: list[dict] = []
    mu, sigma = folder_statistics(run_dir, features, excluded=excluded)
    assert len(seen) == 3 and np.isfinite(mu).all() and np.isfinite(sigma).all()
    assert sorted(e["path"] for e in excluded) == sorted(BROKEN)
    for rel in ["00000/samples/0000.png", "00001/samples/0001.png"]:
        (run_dir / rel).write_bytes(b"")
    with pytest.raises(FIDInputError, match=r"at least two readable images, found 1 \(5 unreadable\)"):
        folder_statistics(run_dir, features)


def test_sliders_exclude_and_report_unreadable_images(tmp_path, capsys):
    from PIL import Image

    from miro.eval.sliders import score_sweep_folder
    from miro.sampling.sliders import SweepResult, save_sweep

    images = [[Image.new("RGB", (8, 8), (40 * t + 10 * s,) * 3) for s in range(2)] for t in range(3)]
    sweep = SweepResult("a star", "sharpness", [0.0, 0.5, 1.0], [0, 1], {}, images)
    folder = tmp_path / "sweep"
    save_sweep(sweep, folder)
    bad = sweep.image_names()[1][0]
    (folder / bad).write_bytes(b"")

    class Mean:
        def score(self, imgs, prompts):
            return np.array([np.asarray(im).mean() for im in imgs])

    scored = score_sweep_folder(folder, {"mean": Mean()})
    assert f"1 of 6 images excluded (unreadable), left out of every score: {bad} (empty)" in capsys.readouterr().out
    assert np.isnan(scored.scores["mean"][1, 0]) and np.isfinite(scored.scores["mean"]).sum() == 5
    saved = json.loads((folder / "sweep.json").read_text())
    assert saved["excluded"] == [{"path": bad, "reason": "empty"}] and saved["summary"]["mean"]["excluded"] == 1


def test_read_only_output_folder_is_one_line_before_any_image_is_read(run_dir, readonly, monkeypatch):
    from miro.eval.geneval import evaluate

    readonly(run_dir)
    monkeypatch.setattr(evaluate, "_evaluate_batch", lambda *a: pytest.fail("evaluation started"))
    with pytest.raises(SystemExit, match=r"^error: evaluate: output folder .*run is not writable"):
        main(["evaluate", f"image_dir={run_dir}", "detector.name=shapes"])
    with pytest.raises(SystemExit, match=r"^error: rewards: output folder .*run is not writable"):
        main(["rewards", f"image_dir={run_dir}", "rewards=[contrast]"])


def test_evaluate_kill_then_rerun_is_identical_and_writes_only_its_outputs(run_dir, tmp_path):
    ref = tmp_path / "ref.jsonl"
    main(["evaluate", f"image_dir={run_dir}", "detector.name=shapes", f"evaluate.results={ref}"])
    before = snapshot(run_dir)
    out = run_dir / "results.jsonl"
    lines = ref.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:15])  # killed while appending the third row
    (run_dir / "results.settings.json").write_text((tmp_path / "ref.settings.json").read_text())
    main(["evaluate", f"image_dir={run_dir}", "detector.name=shapes"])
    assert out.read_text() == ref.read_text()
    new = set(snapshot(run_dir)) - set(before)
    assert new == {"results.jsonl", "results.settings.json", "summary.json", "summary.md"}


def test_disk_full_while_writing_results_is_one_line(run_dir, monkeypatch):
    import errno

    from miro.eval.geneval import evaluate

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "results.jsonl"))

    monkeypatch.setattr(evaluate, "write_jsonl", full)
    with pytest.raises(SystemExit, match=r"^error: evaluate: disk full while writing .*results.jsonl; the rows written"):
        main(["evaluate", f"image_dir={run_dir}", "detector.name=shapes"])
