import json
import os
import threading

import pytest

from miro.utils.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    stale_temps,
    temp_path,
)


def _only(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_replaces_the_target_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.json.") and tmp.name.endswith(".tmp")
        assert not tmp.exists()  # a name, not a file: any writer that takes a path can create it
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert _only(tmp_path) == ["a.json"]


def test_exception_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _only(tmp_path) == ["a.txt"]
    with pytest.raises(KeyboardInterrupt):  # BaseException too (a killed-by-signal Python)
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert _only(tmp_path) == ["a.txt"]


def test_failing_writer_before_creating_the_temp(tmp_path):
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "x.bin"):
            raise OSError("disk full")
    assert _only(tmp_path) == []


def test_temp_names_are_distinct_for_concurrent_writers(tmp_path):
    target = tmp_path / "shared.txt"
    names = {temp_path(target) for _ in range(200)}
    assert len(names) == 200 and all(str(os.getpid()) in n.name for n in names)

    errors = []

    def write(i):
        try:
            for _ in range(20):
                atomic_write_text(target, f"writer {i}\n" * 100)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1 and lines.pop().startswith("writer ")  # one complete write, never a mix
    assert _only(tmp_path) == ["shared.txt"]


def test_commit_and_discard_for_writers_spanning_calls(tmp_path):
    pending = atomic_path(tmp_path / "s.tar")
    pending.tmp.write_bytes(b"tar")
    assert pending.commit() == tmp_path / "s.tar"
    assert (tmp_path / "s.tar").read_bytes() == b"tar"
    with pytest.raises(RuntimeError, match="already finished"):
        pending.commit()
    other = atomic_path(tmp_path / "t.tar")
    other.tmp.write_bytes(b"half")
    other.discard()
    assert _only(tmp_path) == ["s.tar"]


def test_folders_and_fixed_temp_names(tmp_path):
    final = tmp_path / "00001"
    final.mkdir()
    (final / "old.png").write_text("old")
    stale = tmp_path / ".00001.partial"
    (stale / "samples").mkdir(parents=True)  # a killed run's leftover under the fixed name
    with atomic_path(final, directory=True, tmp=stale) as tmp:
        assert tmp == stale and _only(tmp) == []  # the leftover was replaced by an empty folder
        (tmp / "new.png").write_text("new")
    assert _only(final) == ["new.png"] and not stale.exists()
    with pytest.raises(ValueError):
        with atomic_path(final, directory=True) as tmp:
            (tmp / "half.png").write_text("half")
            raise ValueError
    assert _only(final) == ["new.png"] and _only(tmp_path) == ["00001"]


def test_conveniences_and_fsync(tmp_path):
    data = atomic_write_json(tmp_path / "o.json", {"b": 1, "a": [1, 2]}, indent=1, fsync=True)
    assert json.loads((tmp_path / "o.json").read_text()) == {"b": 1, "a": [1, 2]}
    assert data == (tmp_path / "o.json").read_bytes() and data.endswith(b"\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01", fsync=True)
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"


def test_stale_temps_finds_leftovers_of_killed_writers(tmp_path):
    left = temp_path(tmp_path / "shard-000001.tar")
    left.write_bytes(b"half")
    other = temp_path(tmp_path / "x.json")
    other.write_text("{")
    (tmp_path / "shard-000000.tar").write_bytes(b"done")
    assert stale_temps(tmp_path, "*.tar") == [left]
    assert stale_temps(tmp_path) == sorted([left, other])
