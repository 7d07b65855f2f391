"""Score scales: the MIRO authors' /100, /10, (IR + 2) / 4 as an annotation option, recorded and never mixed."""

import shutil

import numpy as np
import pytest

from annotate.config import AnnotateConfig, DataConfig, StatsConfig
from annotate.job import run_scoring
from annotate.rescale import rescale_sidecar, run_rescale
from annotate.stats import run_stats
from miro.contracts import sidecar
from miro.contracts.buckets import load_reward_stats, read_buckets
from miro.contracts.rewards import (
    AUTHOR_KEYS,
    REWARDS,
    ScaleError,
    author_value,
    convert_scale,
    same_scale,
    scale_of,
    scale_record,
)
from miro.utils.config import ConfigError, to_typed
from tests.annotate.conftest import write_good_shards

THEIRS = {"pickscore": 100.0, "imagereward": 4.0, "aesthetic": 10.0, "sciscore": 100.0, "jina_clip": 100.0,
          "hpsv2": 1.0, "vqascore": 1.0}  # the divisors of reference/miro.md section 1, written out independently


def test_scale_records_are_the_authors_formulas_and_round_trip():
    raw = np.array([-1.7, 0.0, 0.31, 6.25, 21.9, np.nan])
    for name in AUTHOR_KEYS.values():
        theirs = scale_record(name, "authors")
        assert theirs["name"] == "authors" and theirs["author_key"] == REWARDS[name].author_key
        assert theirs["divisor"] == THEIRS[name] and theirs["offset"] == (2.0 if name == "imagereward" else 0.0)
        stored = convert_scale(raw, None, theirs)  # None: a record-less (older) sidecar, i.e. raw
        np.testing.assert_array_equal(stored, author_value(name, raw))
        back = convert_scale(stored, theirs, scale_record(name, "raw"))
        np.testing.assert_allclose(back, raw, rtol=1e-15, atol=1e-15)
        assert np.isnan(back[-1])
    np.testing.assert_array_equal(convert_scale([-2.0, 2.0], None, scale_record("imagereward", "authors")), [0.0, 1.0])
    # a reward the authors do not have keeps our raw score, and says so
    assert scale_record("sharpness", "authors") == scale_record("sharpness", "raw") == {"name": "raw", "offset": 0.0, "divisor": 1.0}
    assert scale_record("clip_score", "authors")["name"] == "raw"  # their clip_score is our jina_clip
    assert same_scale(scale_record("hpsv2", "authors"), None) and not same_scale(scale_record("aesthetic", "authors"), None)
    with pytest.raises(ValueError, match=r"scale 'theirs': must be one of \['raw', 'authors'\]"):
        scale_record("pickscore", "theirs")
    with pytest.raises(ScaleError, match="positive divisor"):
        scale_of({"name": "authors", "offset": 0.0, "divisor": 0.0})


def test_scale_option_is_typed():
    assert AnnotateConfig().scale == "raw" and AnnotateConfig(scale="authors").scale == "authors"
    with pytest.raises(ConfigError, match=r"scale='/100': must be one of \['raw', 'authors'\]"):
        to_typed({"data": {"shards": "x"}, "scale": "/100"}, AnnotateConfig)
    assert AnnotateConfig(stage="rescale").stage == "rescale"


def _cfg(shards, out, settings, **kw):
    return AnnotateConfig(data=DataConfig(shards=str(shards)), out_dir=str(out), rewards=settings, workers=0,
                          batch_size=3, device="cpu", progress=False, stats=StatsConfig(num_bins=4), **kw)


@pytest.fixture
def two_scales(tmp_path, clip_l_dir, aesthetic_head_file):
    """One dataset annotated twice: raw into ``raw/``, the authors' scale into ``authors/``."""
    shards = write_good_shards(tmp_path / "shards", 2, 5, size=(40, 56))
    settings = {"aesthetic": {"clip_model": str(clip_l_dir), "head": str(aesthetic_head_file)}, "contrast": {}}
    run_scoring(_cfg(tmp_path / "shards", tmp_path / "raw", settings))
    run_scoring(_cfg(tmp_path / "shards", tmp_path / "authors", settings, scale="authors"))
    return tmp_path, shards, settings


def _side(folder, shard):
    return folder / sidecar.rewards_path(shard).name


def test_authors_scale_reaches_the_sidecars_and_round_trips(two_scales):
    tmp, shards, settings = two_scales
    for shard in shards:
        raw, raw_meta = sidecar.read_rewards(_side(tmp / "raw", shard))
        theirs, meta = sidecar.read_rewards(_side(tmp / "authors", shard))
        a_raw, a_theirs = raw.column("aesthetic").to_numpy(), theirs.column("aesthetic").to_numpy()
        assert np.isfinite(a_raw).all() and np.ptp(a_raw) > 0
        np.testing.assert_allclose(a_theirs, a_raw / 10.0, rtol=1e-12)  # the job's forward is the same
        np.testing.assert_array_equal(theirs.column("contrast").to_numpy(), raw.column("contrast").to_numpy())
        assert meta["rewards"]["aesthetic"]["scale"] == {"name": "authors", "offset": 0.0, "divisor": 10.0, "author_key": "aesthetic_score"}
        assert meta["rewards"]["contrast"]["scale"]["name"] == "raw" and meta["config"]["scale"] == "authors"
        assert raw_meta["rewards"]["aesthetic"]["scale"]["name"] == "raw"
    # the file round trip: authors -> raw -> authors gives the values and records back
    path = _side(tmp / "authors", shards[0])
    before = sidecar.read_rewards(path)[0].column("aesthetic").to_numpy()
    assert rescale_sidecar(path, "raw") == ["aesthetic"]
    t, meta = sidecar.read_rewards(path)
    np.testing.assert_allclose(t.column("aesthetic").to_numpy(), sidecar.read_rewards(_side(tmp / "raw", shards[0]))[0].column("aesthetic").to_numpy(), rtol=1e-12)
    assert meta["rewards"]["aesthetic"]["scale"]["name"] == "raw" and meta["rewards"]["aesthetic"]["model"]  # provenance kept
    assert rescale_sidecar(path, "raw") == []  # already there
    assert rescale_sidecar(path, "authors") == ["aesthetic"]
    np.testing.assert_allclose(sidecar.read_rewards(path)[0].column("aesthetic").to_numpy(), before, rtol=1e-15)
    # the score stage still sees the converted sidecar as complete for its shard (identity metadata kept)
    assert run_scoring(_cfg(tmp / "shards", tmp / "authors", settings, scale="authors"))["skipped"] == 2


def test_a_mixed_scale_dataset_is_refused(two_scales):
    tmp, shards, settings = two_scales
    mixed = tmp / "mixed"
    mixed.mkdir()
    shutil.copy(_side(tmp / "raw", shards[0]), mixed)
    shutil.copy(_side(tmp / "authors", shards[1]), mixed)
    with pytest.raises(ScaleError, match=r"reward 'aesthetic' is stored on different scales.*'raw'.*'authors' \(raw / 10\).*stage=rescale"):
        run_stats(_cfg(tmp / "shards", mixed, settings))
    # adding a reward to a sidecar on another scale is refused before anything is scored
    with pytest.raises(ScaleError, match=r"reward 'aesthetic' is stored on the scale 'authors'.*writes 'raw'.*stage=rescale scale=raw"):
        run_scoring(_cfg(tmp / "shards", tmp / "authors", {**settings, "sharpness": {}}))
    # the fix the message names: convert, then the stats run
    assert run_rescale(_cfg(tmp / "shards", mixed, settings, scale="authors"))["converted"] == {str(mixed / _side(mixed, shards[0]).name): ["aesthetic"]}
    run_stats(_cfg(tmp / "shards", mixed, settings))
    run_stats(_cfg(tmp / "shards", tmp / "raw", settings))
    ours, theirs = load_reward_stats(tmp / "raw"), load_reward_stats(mixed)
    assert theirs.scale("aesthetic")["name"] == "authors" and ours.scale("aesthetic")["name"] == "raw"
    np.testing.assert_allclose(theirs.edges("aesthetic"), ours.edges("aesthetic") / 10.0, rtol=1e-12)
    mean, std = ours.moments("aesthetic")
    np.testing.assert_allclose(theirs.moments("aesthetic", "raw"), (mean, std), rtol=1e-12)
    np.testing.assert_allclose(theirs.moments("aesthetic", "authors"), (mean / 10.0, std / 10.0), rtol=1e-12)
    for shard in shards:  # same buckets on either scale: quantiles do not move under an increasing affine map
        b_ours = read_buckets(sidecar.buckets_path(_side(tmp / "raw", shard)))[1]["aesthetic"]
        b_theirs = read_buckets(sidecar.buckets_path(_side(mixed, shard)))[1]["aesthetic"]
        np.testing.assert_array_equal(b_ours, b_theirs)
    raw_scores = sidecar.read_rewards(_side(tmp / "raw", shards[1]))[0].column("aesthetic").to_numpy()
    np.testing.assert_array_equal(theirs.bucketize("aesthetic", raw_scores, scale="raw"), ours.bucketize("aesthetic", raw_scores))
    # the verifier's z-scores of raw scorer outputs use raw moments whichever scale the dataset is on
    from miro.testtime.verifier import norms_from_reward_stats

    norm = norms_from_reward_stats(mixed)["aesthetic"]
    np.testing.assert_allclose((norm.mean, norm.std), (mean, std), rtol=1e-12)


def test_cli_refuses_a_mix_in_one_line_and_rescale_fixes_it(two_scales):
    import subprocess
    import sys

    from tests.annotate.test_job import _env

    tmp, shards, _ = two_scales
    mixed = tmp / "mixed"
    mixed.mkdir()
    shutil.copy(_side(tmp / "raw", shards[0]), mixed)
    shutil.copy(_side(tmp / "authors", shards[1]), mixed)
    args = [sys.executable, "-m", "annotate", f"data.shards={tmp / 'shards'}", f"out_dir={mixed}", "progress=false", "stats.num_bins=4"]
    r = subprocess.run([*args, "stage=stats"], cwd=tmp, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "reward 'aesthetic' is stored on different scales" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*args, "stage=rescale", "scale=raw"], cwd=tmp, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sidecar.read_meta(mixed / _side(mixed, shards[1]).name)["rewards"]["aesthetic"]["scale"]["name"] == "raw"
    r = subprocess.run([*args, "stage=stats"], cwd=tmp, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_reward_stats(mixed).scale("aesthetic")["name"] == "raw"
