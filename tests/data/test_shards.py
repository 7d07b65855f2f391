import hashlib

import pytest

from miro.contracts.shards import list_shards
from miro.data.shards import ShardError, ShardWriter, iter_shard


def _write(tmp_path, n=7, maxcount=3):
    with ShardWriter(tmp_path, "toy", maxcount=maxcount) as w:
        for i in range(n):
            w.write(f"{i:05d}", {"txt": f"caption {i}", "png": bytes([i]) * 10, "json": "{}"})
    return w.written


def test_writer_splits_and_reader_groups(tmp_path):
    written = _write(tmp_path)
    assert [p.name for p in written] == ["toy-000000.tar", "toy-000001.tar", "toy-000002.tar"]
    samples = [s for p in list_shards(tmp_path) for s in iter_shard(p)]
    assert [k for k, _ in samples] == [f"{i:05d}" for i in range(7)]
    assert samples[4][1] == {"json": b"{}", "png": bytes([4]) * 10, "txt": b"caption 4"}
    assert not list(tmp_path.glob("*.tmp"))


def test_writer_is_deterministic(tmp_path):
    a = [hashlib.sha256(p.read_bytes()).hexdigest() for p in _write(tmp_path / "a")]
    b = [hashlib.sha256(p.read_bytes()).hexdigest() for p in _write(tmp_path / "b")]
    assert a == b


def test_failed_write_leaves_no_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path, "x", maxcount=10) as w:
            w.write("a", {"txt": "ok"})
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_bad_keys_rejected(tmp_path):
    with ShardWriter(tmp_path, "x") as w, pytest.raises(ValueError, match="key"):
        w.write("a.b", {"txt": "x"})


def test_truncated_shard_yields_prefix_then_errors(tmp_path):
    (path,) = _write(tmp_path, n=3, maxcount=3)
    data = path.read_bytes()
    path.write_bytes(data[: 512 * 9 + 100])  # cut inside the 2nd sample
    got = []
    with pytest.raises(ShardError, match="toy-000000.tar"):
        for k, _ in iter_shard(path):
            got.append(k)
    assert got[:1] == ["00000"]
    assert [k for k, _ in iter_shard(path, strict=False)][:1] == ["00000"]
