"""The project's interchange format: one sample per line of a JSONL file.

Every reader can export to it (:func:`export_jsonl`), RefShapes is written in it, and the
``jsonl:`` / ``refshapes:`` dataset kinds read it back, so training and evaluation need only this
one format once a dataset has been converted. Each line is a JSON object::

    {
      "id": "refcocog-umd:4915:10432",     # unique, stable (used to resume runs)
      "image": "images/000123.png",        # relative to the JSONL file's folder, or absolute
      "phrase": "the man in the red shirt",
      "masks": [                           # one entry per referred object; [] = no target
        {"size": [H, W], "counts": "..."},   #   COCO RLE (compressed string or uncompressed list)
        {"polygons": [[x1, y1, x2, y2, ...], ...]}   #   or COCO-style polygons
      ],
      "width": 640, "height": 480,         # image size in pixels (displayed orientation)
      "boxes": [[x1, y1, x2, y2], ...],    # optional, one per mask
      "meta": {...}                        # optional, free-form (split, difficulty, ...)
    }

Masks are written as compressed RLE (``counts`` a string). Blank lines and lines starting with
``#`` are skipped on reading. Errors name the file and line: ``FILE:LINE: problem``.

Layout for a dataset with splits (``jsonl:DIR:SPLIT`` and ``refshapes:DIR:SPLIT`` read
``DIR/SPLIT.jsonl``; ``jsonl:FILE.jsonl`` reads one file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from refseg import masks
from refseg.data.base import DatasetSpec, Sample, limit_samples, need_box, need_int
from refseg.errors import InputError
from refseg.fileio import atomic_open

_REQUIRED = ("id", "image", "phrase", "masks", "width", "height")
#: Longest line read (bytes). A record holds a phrase and a few RLEs; even a noisy 50-megapixel
#: mask compresses to a few MB. Past this the line is refused before it is all in memory.
MAX_LINE_BYTES = 64 << 20


def iter_json_lines(
    path: Path, what: str = "JSONL file", *, where: Callable[[int], str] | None = None
) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` for each non-blank, non-``#`` line of ``path``.

    Every way a line can be unreadable is one ``FILE:LINE: problem`` :class:`InputError`:
    bad JSON, bad UTF-8, nesting deeper than the parser's stack, a line over
    :data:`MAX_LINE_BYTES` (read in bounded pieces, so a 10 GB line costs 64 MB, not 10 GB).
    ``where(number)`` writes the ``FILE:LINE`` part when a caller words it differently.
    """
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    try:
        with open(path, "rb") as handle:
            yield from _parse_lines(handle, where or (lambda number: f"{path}:{number}"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _parse_lines(handle: IO[bytes], where: Callable[[int], str]) -> Iterator[tuple[int, Any]]:
    number = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise InputError(f"{where(number)}: line is longer than {MAX_LINE_BYTES} bytes")
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise InputError(f"{where(number)}: not UTF-8 text ({exc.reason})") from None
        if not text or text.startswith("#"):
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where(number)}: bad JSON ({exc.msg})") from None
        except ValueError as exc:  # an integer of more than 4,300 digits
            raise InputError(f"{where(number)}: bad JSON ({exc})") from None
        except RecursionError:
            raise InputError(f"{where(number)}: bad JSON (nested too deeply)") from None
        yield number, value


def _mask_from_json(entry: Any, height: int, width: int) -> masks.RLE:
    if isinstance(entry, dict) and "polygons" in entry:
        polygons = entry["polygons"]
        if not isinstance(polygons, list) or not all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in polygons
        ):
            raise ValueError("'polygons' must be lists of at least 3 x,y pairs")
        return masks.from_polygons(polygons, height, width)
    if isinstance(entry, dict) and "counts" in entry and "size" in entry:
        size = entry["size"]
        if size != [height, width]:
            raise ValueError(f"mask size {size!r:.40} differs from height/width {[height, width]}")
        return masks.validate(entry)
    raise ValueError("a mask must be an RLE {size, counts} or {polygons}")


def _positive_int(value: Any, key: str) -> int:
    value = need_int(value, repr(key))
    if value <= 0:
        raise ValueError(f"{key!r} must be a positive integer, got {value!r}")
    return value


def record_to_sample(record: Any, base_dir: Path) -> Sample:
    """One parsed JSONL record -> :class:`Sample` (raises ``ValueError`` on bad content)."""
    if not isinstance(record, dict):
        raise ValueError("a line must hold a JSON object")
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise ValueError(f"missing {', '.join(repr(k) for k in missing)}")
    width = _positive_int(record["width"], "width")
    height = _positive_int(record["height"], "height")
    masks.check_size(height, width, "image")
    if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
        raise ValueError("'id' must be a string or an integer")
    phrase = record["phrase"]
    if not isinstance(phrase, str) or not phrase.strip():
        raise ValueError("'phrase' must be a non-empty string")
    if not isinstance(record["image"], str) or not record["image"]:
        raise ValueError("'image' must be a path string")
    if not isinstance(record["masks"], list):
        raise ValueError("'masks' must be a list ([] for no target)")
    rles = [_mask_from_json(m, height, width) for m in record["masks"]]
    boxes = record.get("boxes") or []
    if not isinstance(boxes, list):
        raise ValueError("'boxes' must be a list of [x1, y1, x2, y2]")
    boxes = [need_box(b, f"box {number}") for number, b in enumerate(boxes)]
    if boxes and len(boxes) != len(rles):
        raise ValueError(f"{len(boxes)} boxes for {len(rles)} masks")
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    if "\x00" in record["image"]:
        raise ValueError("'image' must be a path string")
    image = Path(record["image"])
    return Sample(
        id=str(record["id"]),
        image=image if image.is_absolute() else base_dir / image,
        phrase=phrase,
        masks=rles,
        width=width,
        height=height,
        boxes=boxes,
        meta=meta,
    )


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[Sample]:
    """Samples of a JSONL file, one at a time (errors name ``FILE:LINE``)."""
    path = Path(path).expanduser()
    base_dir = path.parent.resolve()
    seen: set[str] = set()
    for number, record in iter_json_lines(path):
        try:
            sample = record_to_sample(record, base_dir)
        except ValueError as exc:
            raise InputError(f"{path}:{number}: {exc}") from None
        if sample.id in seen:
            raise InputError(f"{path}:{number}: duplicate id {sample.id[:80]!r}")
        seen.add(sample.id)
        yield sample


def read_jsonl(path: str | os.PathLike[str], *, limit: int | None = None) -> list[Sample]:
    """All samples of a JSONL file (the first ``limit`` when given)."""
    out: list[Sample] = []
    for sample in iter_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        out.append(sample)
    return limit_samples(out, limit)


def read_jsonl_spec(
    spec: DatasetSpec,
    *,
    require_split: bool = False,
    limit: int | None = None,
    check_images: bool = False,
) -> list[Sample]:
    """``jsonl:FILE.jsonl``, or ``jsonl:DIR:SPLIT`` / ``refshapes:DIR:SPLIT`` (DIR/SPLIT.jsonl)."""
    path = spec.path
    if path.is_dir():
        available = sorted(p.stem for p in path.glob("*.jsonl"))
        if not spec.split:
            raise InputError(
                f"{spec.kind}:{path}: name a split ({', '.join(available) or 'no *.jsonl here'})"
            )
        file = path / f"{spec.split}.jsonl"
        if not file.is_file():
            raise InputError(
                f"{spec.kind}:{path}: unknown split {spec.split!r}; "
                f"found: {', '.join(available) or 'no *.jsonl files'}"
            )
    else:
        if require_split:
            raise InputError(f"{spec.kind}:{path}: expected a folder of SPLIT.jsonl files")
        if spec.split:
            raise InputError(f"{spec.kind}:{path}: a single JSONL file takes no split")
        file = path
    samples = read_jsonl(file, limit=limit)
    if check_images:
        missing = [s.image for s in samples if not s.image.is_file()]
        if missing:
            raise InputError(f"{file}: {len(missing)} images are missing, e.g. {missing[0]}")
    return samples


def _jsonable(value: Any) -> Any:
    """Make meta values JSON-safe (paths -> str, tuples -> lists, numpy scalars -> Python)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def sample_to_record(sample: Sample, base_dir: Path | None = None) -> dict[str, Any]:
    """A sample as a JSONL record; the image path is made relative to ``base_dir`` if inside it."""
    image = Path(sample.image)
    text = str(image)
    if base_dir is not None:
        absolute = image if image.is_absolute() else Path.cwd() / image
        try:
            text = absolute.resolve().relative_to(base_dir.resolve()).as_posix()
        except ValueError:
            text = str(absolute.resolve())
    record: dict[str, Any] = {
        "id": sample.id,
        "image": text,
        "phrase": sample.phrase,
        "masks": [masks.normalize(m) for m in sample.masks],
        "width": int(sample.width),
        "height": int(sample.height),
    }
    if sample.boxes:
        record["boxes"] = [[round(float(v), 2) for v in b] for b in sample.boxes]
    if sample.meta:
        record["meta"] = _jsonable(sample.meta)
    return record


def dumps_record(record: dict[str, Any]) -> str:
    """One JSONL line (no newline); compact and deterministic for a given record."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_records(handle: IO[str], samples: Iterable[Sample], base_dir: Path) -> int:
    count = 0
    for sample in samples:
        handle.write(dumps_record(sample_to_record(sample, base_dir)) + "\n")
        count += 1
    return count


def export_jsonl(samples: Iterable[Sample], path: str | os.PathLike[str]) -> int:
    """Write samples as interchange JSONL, atomically; returns how many were written.

    Image paths inside the JSONL file's folder are stored relative to it (the folder can be
    moved as a whole); others are stored absolute.
    """
    path = Path(path).expanduser()
    with atomic_open(path, "w") as handle:
        return write_records(handle, samples, path.parent)
