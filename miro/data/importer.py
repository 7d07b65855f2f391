"""Import a folder of captioned images into shards: ``python -m miro.data.importer src=DIR out=DIR ...``.

Like img2dataset for local files: captions come from a ``.txt`` beside each image (``captions=txt``, the
default) or from a CSV / JSONL manifest with a path and a caption column (``manifest=FILE``).  Every image is
decoded with ``miro.data.images.decode_image``; files that cannot be used (zero-byte, truncated, not an image,
too many pixels, missing / empty / non-UTF-8 caption, missing file, bad manifest row) are skipped and listed
in ``OUT/import_report.json`` with their reason, and the import goes on.  Every file under ``src`` is accounted
for: hidden files (``.hidden.png``) are candidates like any other (a name is no reason to drop data; a macOS
``._x.jpg`` is then skipped as ``not_an_image``); files that are no candidate (a caption without its image, a
file of another kind) are listed under ``unused_files`` with their reason, apart from the skipped images, so
``candidates == imported + skipped (+ not_reached when the import stopped)``.  A disk that fills up (or any
write error) stops the import: the open shard is discarded, the report of what was done is written, and the
command ends with one ``error:`` line.  Usable images keep their original
bytes when their format is in ``formats`` (jpg, png, webp); others (bmp, gif, tiff, ...) are re-encoded.

Samples are written in a deterministic order (sorted relative paths, or manifest order) with keys
``000000000, 000000001, ...``; ``KEY.json`` records the source path, decoded size and original format.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from miro.contracts.shards import SHARD_RE
from miro.data.images import (
    ANIMATED_NOTE,
    DEFAULT_MAX_PIXELS,
    BadCaption,
    BadImage,
    decode_image,
    decode_text,
    stable_text,
)
from miro.data.shards import ShardWriter
from miro.utils.atomic import atomic_write_text
from miro.utils.config import ConfigError, entry_point, require, require_choice
from miro.utils.storage import check_writable, disk_full

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PIL_TO_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
EXT_TO_PIL = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
REPORT_NAME = "import_report.json"
UNUSED_REASONS = ("caption_without_image", "not_an_image_file")  # files that are no candidate sample


class ImportStopped(RuntimeError):
    """The import could not go on (disk full, write error); the report of what was done is written."""


@dataclass
class ImportConfig:
    src: str = "???"
    out: str = "???"
    manifest: str | None = None  # CSV or JSONL with a path and a caption column; None = .txt beside each image
    path_column: str = "path"  # paths relative to src (or absolute)
    caption_column: str = "caption"
    name: str = "import"  # shard prefix: OUT/import-000000.tar
    shard_size: int = 1000
    formats: list[str] = field(default_factory=lambda: ["jpg", "png", "webp"])  # kept as the original bytes
    reencode: str = "png"  # format of images whose own format is not kept
    jpeg_quality: int = 95  # when reencode=jpg
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 1  # processes decoding images (0 = one per CPU); the output does not depend on it
    overwrite: bool = False  # replace shards of the same name already in `out`

    def __post_init__(self):
        require(self.src not in ("", "???"), "src", self.src, "the folder of images is required (src=DIR)")
        require(self.out not in ("", "???"), "out", self.out, "an output directory is required (out=DIR)")
        require(Path(self.src).is_dir(), "src", self.src, "must be an existing directory")
        if self.manifest is not None:
            require(Path(self.manifest).suffix.lower() in (".csv", ".jsonl"), "manifest", self.manifest,
                    "a .csv or .jsonl file")
            require(self._manifest_path().is_file(), "manifest", self.manifest, "file not found (absolute or relative to src)")
        require(bool(self.name) and not any(c in self.name for c in "-/."), "name", self.name,
                "a shard name prefix without '-', '/' or '.'")
        require(self.shard_size >= 1, "shard_size", self.shard_size, "must be >= 1")
        for f in self.formats:
            require_choice("formats", f, list(EXT_TO_PIL))
        require_choice("reencode", self.reencode, list(EXT_TO_PIL))
        require(1 <= self.jpeg_quality <= 100, "jpeg_quality", self.jpeg_quality, "must be in 1..100")
        require(self.max_pixels >= 1, "max_pixels", self.max_pixels, "must be >= 1")
        require(self.workers >= 0, "workers", self.workers, "must be >= 0 (0 = one per CPU)")

    def _manifest_path(self) -> Path:
        p = Path(self.manifest)
        return p if p.is_absolute() or p.exists() else Path(self.src) / p


@dataclass
class Item:
    """One candidate sample: where its image is and its caption (or why the caption is unusable)."""

    source: str  # path relative to src, as written in the report
    path: Path
    caption: str | None = None
    caption_error: tuple[str, str] | None = None  # (reason, detail)


@dataclass
class Outcome:
    source: str
    members: dict | None = None  # {ext: bytes, "txt": str, "json": str} when usable
    reason: str | None = None
    detail: str = ""
    reencoded: bool = False
    note: str | None = None  # ANIMATED_NOTE: imported, but only its first frame


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _walk(src: Path) -> list[Path]:
    """Every file under ``src``, symlinked folders followed (``Path.rglob`` skips them before Python 3.13, which
    lost their images without a word), each real folder once (a link loop is not walked twice)."""
    seen: set[str] = set()
    out = []
    for folder, dirs, names in os.walk(src, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        out += [Path(folder) / n for n in names if os.path.isfile(os.path.join(folder, n))]
    return out


def items_from_folder(src: Path) -> tuple[list[Item], list[Outcome]]:
    """Images under ``src`` (sorted relative paths, hidden files included) with the caption of the ``.txt`` of
    the same stem; ``.txt`` files without an image and files of other kinds are returned as unused files."""
    files = sorted(_walk(src), key=lambda p: _rel(p, src))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    stems = {p.with_suffix("") for p in images}
    items = []
    for p in images:
        item = Item(_rel(p, src), p)
        txt = p.with_suffix(".txt")
        try:
            item.caption = decode_text(txt.read_bytes() if txt.is_file() else None)
        except BadCaption as err:
            item.caption_error = (err.reason, str(err))
        except OSError as err:
            item.caption_error = ("caption_unreadable", f"{type(err).__name__}: {err}")
        items.append(item)
    unused = []
    for p in files:
        if p.suffix.lower() == ".txt" and p.with_suffix("") not in stems:
            unused.append(Outcome(_rel(p, src), reason="caption_without_image", detail="no image of the same name"))
        elif p.suffix.lower() not in (*IMAGE_SUFFIXES, ".txt"):
            unused.append(Outcome(_rel(p, src), reason="not_an_image_file",
                                  detail=f"suffix {p.suffix or '(none)'!r} is not one of {list(IMAGE_SUFFIXES)}"))
    return items, unused


def _caption_value(value) -> tuple[str | None, tuple[str, str] | None]:
    if value is None:
        return None, ("missing_caption", "no caption column in this row")
    if not isinstance(value, str):
        return None, ("bad_caption", f"caption is a {type(value).__name__}, not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return None, ("caption_not_utf8", str(err))
    if not value.strip():
        return None, ("empty_caption", "the caption is empty")
    return value.strip(), None


def items_from_manifest(cfg: ImportConfig) -> tuple[list[Item], list[Outcome]]:
    """Rows of a CSV (header row) or JSONL manifest, in file order; rows without a path are reported."""
    src, path = Path(cfg.src), cfg._manifest_path()
    rows: list[tuple[str, dict | None, str]] = []  # (row id, row, problem)
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            if reader.fieldnames is None or cfg.path_column not in reader.fieldnames:
                raise ConfigError(f"path_column={cfg.path_column!r}: not a column of {path} (columns: {reader.fieldnames})")
            if cfg.caption_column not in reader.fieldnames:
                raise ConfigError(f"caption_column={cfg.caption_column!r}: not a column of {path} (columns: {reader.fieldnames})")
            for n, row in enumerate(reader, start=2):
                rows.append((f"{path.name}:{n}", row, ""))
        else:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    rows.append((f"{path.name}:{n}", row if isinstance(row, dict) else None, "" if isinstance(row, dict) else "not a JSON object"))
                except ValueError as err:
                    rows.append((f"{path.name}:{n}", None, f"invalid JSON: {err}"))
    items, bad = [], []
    for row_id, row, problem in rows:
        rel = row.get(cfg.path_column) if row is not None else None
        if row is None or not isinstance(rel, str) or not rel.strip():
            bad.append(Outcome(row_id, reason="bad_manifest_row", detail=problem or f"no {cfg.path_column!r} value"))
            continue
        p = Path(rel.strip())
        p = p if p.is_absolute() else src / p
        caption, err = _caption_value(row.get(cfg.caption_column))
        items.append(Item(rel.strip(), p, caption, err))
    return items, bad


def process(item: Item, cfg: ImportConfig) -> Outcome:
    """Read, check and encode one sample; any failure becomes a reason, never an exception."""
    out = Outcome(item.source)
    try:
        if item.caption_error is not None:
            out.reason, out.detail = item.caption_error
            return out
        if not item.path.is_file():
            out.reason, out.detail = "missing_file", "no such file"
            return out
        data = item.path.read_bytes()
        img = decode_image(data, max_pixels=cfg.max_pixels)
        fmt = Image.open(io.BytesIO(data)).format or "unknown"
        ext = PIL_TO_EXT.get(fmt)
        if ext in cfg.formats:
            payload = data
        else:
            buf = io.BytesIO()
            opts = {"quality": cfg.jpeg_quality} if cfg.reencode == "jpg" else {}
            img.save(buf, format=EXT_TO_PIL[cfg.reencode], **opts)
            payload, ext, out.reencoded = buf.getvalue(), cfg.reencode, True
        record = {"source": item.source, "width": img.width, "height": img.height, "format": fmt.lower(),
                  "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "reencoded": out.reencoded}
        if img.info.get("frames", 1) > 1:  # animated: frame 1 is what is imported (re-encoded), said here
            record["frames"] = img.info["frames"]
            out.note = ANIMATED_NOTE
        out.members = {ext: payload, "txt": item.caption, "json": record}
    except BadImage as err:
        out.reason, out.detail = err.reason, _stable(str(err))
    except OSError as err:
        out.reason, out.detail = "unreadable", _stable(f"{type(err).__name__}: {err}")
    except Exception as err:  # noqa: BLE001 - one odd file must never stop the import
        out.reason, out.detail = "error", _stable(f"{type(err).__name__}: {err}")
    return out


_stable = stable_text  # error text without object addresses, so reports are reproducible


def _process_star(args: tuple[Item, ImportConfig]) -> Outcome:
    return process(*args)


def run_import(cfg: ImportConfig, progress: bool = True) -> dict:
    """Import ``cfg.src`` into shards in ``cfg.out``; returns the report (also written to ``import_report.json``).
    Raises ``ImportStopped`` (after writing the report of what was done) when a write fails, e.g. disk full."""
    out = check_writable(cfg.out, "out")  # a read-only folder: one line before any image is read
    old = sorted(p for p in out.iterdir() if SHARD_RE.match(p.name) and p.name.startswith(f"{cfg.name}-"))
    if old:
        if not cfg.overwrite:
            raise ConfigError(f"out={str(out)!r}: already holds {cfg.name}-*.tar shards; set overwrite=true to replace "
                              "them or choose another directory or name")
        for p in old:
            p.unlink()
    items, found = items_from_manifest(cfg) if cfg.manifest else items_from_folder(Path(cfg.src))
    unused = [o for o in found if o.reason in UNUSED_REASONS]
    skipped = [o for o in found if o.reason not in UNUSED_REASONS]  # bad manifest rows: candidates skipped early
    candidates = len(items) + len(skipped)
    workers = max(1, min(cfg.workers or os.cpu_count() or 1, len(items) or 1))
    count, reencoded, stopped = 0, 0, None
    animated: list[str] = []
    writer = ShardWriter(out, cfg.name, maxcount=cfg.shard_size)
    try:
        with writer, tqdm(total=len(items), unit="img", desc="import", disable=not progress) as bar:
            if workers == 1:
                outcomes = (process(it, cfg) for it in items)
                pool = None
            else:
                pool = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers)
                outcomes = pool.imap(_process_star, [(it, cfg) for it in items], chunksize=16)
            try:
                for o in outcomes:
                    bar.update(1)
                    if o.members is None:
                        skipped.append(o)
                        continue
                    key = f"{count:09d}"
                    o.members["json"] = json.dumps({"key": key, **o.members["json"]})
                    writer.write(key, o.members)
                    count += 1
                    reencoded += o.reencoded
                    if o.note == ANIMATED_NOTE:
                        animated.append(o.source)
            except BaseException:
                if pool is not None:
                    pool.terminate()
                raise
            finally:
                if pool is not None:
                    pool.close()
                    pool.join()
    except OSError as err:  # disk full, quota, I/O error: the writer discarded the open shard
        what = "disk full" if disk_full(err) else type(err).__name__
        stopped = f"{what} while writing shard {len(writer.written)} in {out} ({err.strerror or err})"
        count = len(writer.written) * cfg.shard_size  # every shard closed before the failure is a full one
    written = [p.name for p in writer.written]
    reasons: dict[str, int] = {}
    for o in skipped:
        reasons[o.reason] = reasons.get(o.reason, 0) + 1
    unused_reasons: dict[str, int] = {}
    for o in unused:
        unused_reasons[o.reason] = unused_reasons.get(o.reason, 0) + 1
    report = {
        "src": str(cfg.src),
        "captions": "manifest" if cfg.manifest else "txt",
        "manifest": cfg.manifest,
        "candidates": candidates,
        "imported": count,
        "reencoded": reencoded if stopped is None else None,
        "skipped": len(skipped),
        "reasons": dict(sorted(reasons.items())),
        "animated_first_frame": animated,  # imported, but only the first frame of these animated images
        "shards": written,
        "skipped_files": [{"path": o.source, "reason": o.reason, "detail": o.detail} for o in skipped],
        "unused": len(unused),
        "unused_reasons": dict(sorted(unused_reasons.items())),
        "unused_files": [{"path": o.source, "reason": o.reason, "detail": o.detail} for o in unused],
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("src", "out", "workers", "overwrite")},
    }
    if stopped is not None:
        report["stopped"] = stopped
        report["not_reached"] = candidates - count - len(skipped)  # the discarded open shard and what came after
    try:
        atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=1) + "\n")
        saved = f"the report of what was done is in {out / REPORT_NAME}"
    except OSError as err:
        if stopped is None:
            raise ImportStopped(f"the import report {out / REPORT_NAME} could not be written ({err.strerror or err}); "
                                f"{count} images were imported into {len(written)} shards") from None
        saved = f"the report could not be written either ({err.strerror or err})"
    if stopped is not None:
        raise ImportStopped(f"import stopped: {stopped}; {count} of {candidates} images imported into {len(written)} "
                            f"complete shards, {len(skipped)} skipped, {report['not_reached']} not imported; {saved}; "
                            "free space and rerun with overwrite=true")
    return report


def import_and_report(cfg: ImportConfig) -> dict:
    report = run_import(cfg)
    unused = f"; {report['unused']} other files not used {report['unused_reasons']}" if report["unused"] else ""
    if report["animated_first_frame"]:
        unused += f"; {len(report['animated_first_frame'])} animated images imported as their first frame"
    print(f"imported {report['imported']} of {report['candidates']} images into {len(report['shards'])} shards "
          f"in {cfg.out}; skipped {report['skipped']} {report['reasons']}{unused} (see {REPORT_NAME})")
    return report


main = entry_point("import", ImportConfig, import_and_report, errors=(ImportStopped,))


if __name__ == "__main__":
    main()
