"""The importer on a folder holding every kind of broken file, in .txt, CSV and JSONL caption modes."""

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miro.contracts.shards import list_shards
from miro.data.images import decode_image, decode_text
from miro.data.importer import ImportConfig, run_import
from miro.data.shards import iter_shard
from miro.utils.config import ConfigError, to_typed

ROOT = Path(__file__).resolve().parents[2]


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def picture(w=24, h=16, seed=0, mode="RGB"):
    arr = np.random.default_rng(seed).integers(0, 255, size=(h, w, len(mode)), dtype=np.uint8)
    return Image.fromarray(arr, mode)


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {
        "a_good.jpg": encode(picture(seed=1), "JPEG", quality=90),
        "b_good.png": encode(picture(seed=2), "PNG"),
        "c_good.webp": encode(picture(seed=3), "WEBP"),
        "d_bitmap.bmp": encode(picture(seed=4), "BMP"),  # decodable, not a kept format: re-encoded
        "e_alpha.png": encode(picture(seed=5, mode="RGBA"), "PNG"),
        "f_anim.gif": encode(picture(seed=6).convert("P"), "GIF"),
        "sub/g_nested.JPG": encode(picture(seed=7), "JPEG"),
        "h_truncated.jpg": encode(picture(64, 64, seed=8), "JPEG")[:300],
        "i_empty.png": b"",
        "j_text.jpg": b"this is not an image at all",
        "k_huge.png": encode(picture(200, 200, seed=9), "PNG"),  # more pixels than the test's max_pixels
        "l_nocaption.png": encode(picture(seed=10), "PNG"),
        "m_blankcaption.png": encode(picture(seed=11), "PNG"),
        "n_latin1caption.png": encode(picture(seed=12), "PNG"),
    }
    captions = {
        "a_good": "a good photo", "b_good": "  a png photo\n", "c_good": "a webp photo", "d_bitmap": "a bitmap",
        "e_alpha": "transparent", "f_anim": "a gif", "sub/g_nested": "nested, upper-case extension",
        "h_truncated": "cut short", "i_empty": "zero bytes", "j_text": "text", "k_huge": "too big",
        "m_blankcaption": "   \n", "orphan": "a caption without its image",
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    for stem, text in captions.items():
        (src / f"{stem}.txt").write_text(text, encoding="utf-8")
    (src / "n_latin1caption.txt").write_bytes("caf\xe9".encode("latin-1"))
    (src / ".hidden.png").write_bytes(b"ignored")
    return src, files


EXPECTED_SKIPS = {
    "truncated": ["h_truncated.jpg"],
    "empty": ["i_empty.png"],
    "not_an_image": ["j_text.jpg"],
    "too_large": ["k_huge.png"],
    "missing_caption": [".hidden.png", "l_nocaption.png"],  # hidden files are candidates like any other
    "empty_caption": ["m_blankcaption.png"],
    "caption_not_utf8": ["n_latin1caption.png"],
}


def load(out):
    return [(k, m) for p in list_shards(out) for k, m in iter_shard(p)]


def test_txt_mode_skips_every_broken_file_and_keeps_the_rest(folder, tmp_path):
    src, files = folder
    out = tmp_path / "out"
    cfg = to_typed({"src": str(src), "out": str(out), "shard_size": 4, "max_pixels": 20000}, ImportConfig)
    report = run_import(cfg, progress=False)
    got = {}
    for s in report["skipped_files"]:
        got.setdefault(s["reason"], []).append(s["path"])
    assert got == EXPECTED_SKIPS
    assert report["reasons"] == {k: len(v) for k, v in sorted(EXPECTED_SKIPS.items())}
    assert (report["candidates"], report["imported"], report["reencoded"]) == (15, 7, 2)
    assert report["candidates"] == report["imported"] + report["skipped"]
    assert report["unused_files"] == [{"path": "orphan.txt", "reason": "caption_without_image", "detail": "no image of the same name"}]
    assert report["shards"] == ["import-000000.tar", "import-000001.tar"]
    assert json.loads((out / "import_report.json").read_text()) == report

    samples = load(out)
    assert [k for k, _ in samples] == [f"{i:09d}" for i in range(7)]
    records = [json.loads(m["json"]) for _, m in samples]
    assert [r["source"] for r in records] == ["a_good.jpg", "b_good.png", "c_good.webp", "d_bitmap.bmp", "e_alpha.png",
                                             "f_anim.gif", "sub/g_nested.JPG"]
    by_source = {r["source"]: (m, r) for (_, m), r in zip(samples, records)}
    for name, ext in [("a_good.jpg", "jpg"), ("b_good.png", "png"), ("c_good.webp", "webp"), ("e_alpha.png", "png"),
                      ("sub/g_nested.JPG", "jpg")]:
        m, r = by_source[name]
        assert m[ext] == files[name], name  # original bytes kept
        assert r["reencoded"] is False and r["sha256"] == hashlib.sha256(files[name]).hexdigest()
    for name, fmt in [("d_bitmap.bmp", "bmp"), ("f_anim.gif", "gif")]:
        m, r = by_source[name]
        assert set(m) == {"png", "txt", "json"} and r["reencoded"] is True and r["format"] == fmt
        assert decode_image(m["png"]).size == (24, 16)
    assert decode_text(by_source["b_good.png"][0]["txt"]) == "a png photo"
    assert by_source["a_good.jpg"][1]["width"] == 24 and by_source["a_good.jpg"][1]["height"] == 16


def test_import_is_deterministic_and_refuses_to_mix(folder, tmp_path):
    src, _ = folder
    digests = []
    for name in ("one", "two"):
        out = tmp_path / name
        cfg = to_typed({"src": str(src), "out": str(out), "max_pixels": 20000, "workers": 1 if name == "one" else 2},
                       ImportConfig)
        run_import(cfg, progress=False)
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1]
    again = to_typed({"src": str(src), "out": str(tmp_path / "one")}, ImportConfig)
    with pytest.raises(ConfigError, match="overwrite=true"):
        run_import(again, progress=False)
    again.overwrite = True
    assert run_import(again, progress=False)["imported"] == 8  # the 200 x 200 image fits the default limit


def test_csv_manifest(folder, tmp_path):
    src, files = folder
    manifest = src / "list.csv"
    manifest.write_bytes(
        "\ufeffpath,caption,extra\n".encode()
        + b'a_good.jpg,"a caption, with a comma",x\n'
        + b"sub/g_nested.JPG,nested,y\n"
        + b"missing.png,gone,z\n"
        + b"b_good.png,,z\n"
        + b"c_good.webp,\xff\xfe bad bytes,z\n"
        + b",no path,z\n"
        + b"j_text.jpg,not an image,z\n"
    )
    out = tmp_path / "out"
    report = run_import(to_typed({"src": str(src), "out": str(out), "manifest": "list.csv"}, ImportConfig), progress=False)
    assert report["reasons"] == {"bad_manifest_row": 1, "caption_not_utf8": 1, "empty_caption": 1, "missing_file": 1,
                                 "not_an_image": 1}
    samples = load(out)
    assert [decode_text(m["txt"]) for _, m in samples] == ["a caption, with a comma", "nested"]
    assert samples[0][1]["jpg"] == files["a_good.jpg"]
    assert [s["path"] for s in report["skipped_files"]] == ["list.csv:7", "missing.png", "b_good.png", "c_good.webp", "j_text.jpg"]


def test_jsonl_manifest_with_custom_columns(folder, tmp_path):
    src, _ = folder
    manifest = tmp_path / "meta.jsonl"
    lines = [json.dumps({"file": str(src / "b_good.png"), "text": "absolute path"}), "{not json", json.dumps([1, 2]),
             json.dumps({"file": "c_good.webp", "text": 42}), "", json.dumps({"file": "d_bitmap.bmp", "text": "bmp"}),
             json.dumps({"file": "e_alpha.png"})]
    manifest.write_text("\n".join(lines) + "\n")
    cfg = to_typed({"src": str(src), "out": str(tmp_path / "o"), "manifest": str(manifest), "path_column": "file",
                    "caption_column": "text", "reencode": "jpg"}, ImportConfig)
    report = run_import(cfg, progress=False)
    assert report["imported"] == 2 and report["reencoded"] == 1
    assert report["reasons"] == {"bad_caption": 1, "bad_manifest_row": 2, "missing_caption": 1}
    samples = load(tmp_path / "o")
    assert set(samples[1][1]) == {"jpg", "txt", "json"}


def test_config_errors(folder, tmp_path):
    src, _ = folder
    with pytest.raises(ConfigError, match="src"):
        to_typed({"src": str(tmp_path / "nope"), "out": "x"}, ImportConfig)
    with pytest.raises(ConfigError, match="manifest"):
        to_typed({"src": str(src), "out": "x", "manifest": "nope.csv"}, ImportConfig)
    with pytest.raises(ConfigError, match="formats"):
        to_typed({"src": str(src), "out": "x", "formats": ["gif"]}, ImportConfig)
    (src / "m.csv").write_text("file,caption\na_good.jpg,x\n")
    cfg = to_typed({"src": str(src), "out": str(tmp_path / "o"), "manifest": "m.csv"}, ImportConfig)
    with pytest.raises(ConfigError, match="path_column='path'"):
        run_import(cfg, progress=False)


def test_command_line(folder, tmp_path):
    src, _ = folder
    out = tmp_path / "cli"
    run = subprocess.run([sys.executable, "-m", "miro.data.importer", f"src={src}", f"out={out}", "max_pixels=20000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "imported 7 of 15 images" in run.stdout and "1 other files not used" in run.stdout
    assert (out / "import_report.json").exists()
