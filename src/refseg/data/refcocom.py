"""Reader for RefCOCO-M, the RefCOCO (UNC) validation split re-annotated with pixel-accurate masks.

Published format (the dataset card of the release): Parquet shards
``data/validation-0000K-of-0000N.parquet``, one row per image with columns

* ``image``: the encoded image (a ``{"bytes", "path"}`` struct),
* ``image_id`` (COCO id), ``file_name`` (the COCO train2014 name),
* ``samples``: one entry per referred instance: ``id``, ``image_id``, ``category``,
  ``supercategory``, ``label``, ``sentences`` (list of expressions), ``bbox`` (COCO
  ``[x, y, w, h]``) and ``mask`` (one COCO RLE ``{"counts": str, "size": [H, W]}``).

The card's protocol scores every (image, sentence) pair against the instance mask, so one
:class:`Sample` is made per sentence, with id ``refcoco-m:<instance id>:<i>``.

``PATH`` is the downloaded dataset folder (holding ``data/``), a folder of shards or one shard.
The only split is ``validation`` (``val`` is accepted). The images are embedded, but a
:class:`Sample` points at a file: they are written once to ``images_dir`` (default
``PATH/images``) under their ``file_name``; when that folder already holds the file (e.g. it is
the COCO train2014 folder) nothing is written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from refseg import masks
from refseg.data.base import (
    DatasetSpec,
    Sample,
    limit_samples,
    need_box,
    need_dict,
    need_int,
    need_list,
    need_str,
    record_error,
)
from refseg.data.layouts import REFCOCO_M_COLUMNS
from refseg.errors import InputError
from refseg.fileio import atomic_write_bytes

_SPLITS = {"validation": "validation", "val": "validation"}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _shards(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"refcoco-m:{path}: no such file or folder")
    for folder in (path / "data", path):
        found = sorted(folder.glob(f"{split}-*.parquet"))
        if found:
            return found
    raise InputError(f"refcoco-m:{path}: no {split}-*.parquet shards in it or in its data/ folder")


def _image_name(row: dict[str, Any]) -> str:
    file_name = row.get("file_name")
    name = Path(need_str(file_name, "file_name")).name if file_name else ""
    if not name:
        name = f"COCO_train2014_{need_int(row.get('image_id'), 'image_id'):012d}.jpg"
    if not _SAFE_NAME.match(name):
        raise ValueError(f"unsafe image file name {name[:60]!r}")
    return name


def read_refcocom(
    spec: DatasetSpec,
    *,
    images_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """RefCOCO-M samples (one per sentence), extracting embedded images as needed."""
    del check_images  # images come from the shards themselves
    split = _SPLITS.get(spec.split or "validation")
    if split is None:
        raise InputError(f"refcoco-m: unknown split {spec.split!r}; the only one is 'validation'")
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with the training extras
        raise InputError("refcoco-m: reading Parquet needs pyarrow (pip install pyarrow)") from None
    root = spec.path
    folder = (
        Path(images_dir).expanduser()
        if images_dir
        else ((root.parent if root.is_file() else root) / "images")
    )
    samples: list[Sample] = []
    for shard in _shards(root, split):
        try:
            table = pq.ParquetFile(shard)
            columns = set(table.schema_arrow.names)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise InputError(
                f"{shard}: not a readable Parquet file ({type(exc).__name__})"
            ) from None
        missing = REFCOCO_M_COLUMNS - columns
        if missing:
            raise InputError(f"{shard}: missing column(s) {', '.join(sorted(missing))}")
        row_number = 0
        try:
            for batch in table.iter_batches(batch_size=16):
                for row in batch.to_pylist():
                    if limit is not None and len(samples) >= limit:
                        return limit_samples(samples, limit)
                    try:
                        samples.extend(_row_samples(parse_row(row), folder))
                    except ValueError as exc:
                        raise record_error(shard, f"row {row_number}", exc) from None
                    row_number += 1
        except InputError:
            raise
        except Exception as exc:  # pyarrow raises several types for damaged data pages
            raise InputError(
                f"{shard}: row {row_number}: unreadable ({type(exc).__name__})"
            ) from None
    return limit_samples(samples, limit)


def _optional_str(value: Any, what: str) -> str | None:
    return None if value is None else need_str(value, what)


def _label(value: Any, what: str) -> str | int | None:
    if value is None or isinstance(value, str):
        return value
    return need_int(value, what)


def parse_row(row: Any) -> dict[str, Any]:
    """One Parquet row checked: image id and name, embedded bytes, and for every instance an
    integer ``id``, a valid RLE (:func:`refseg.masks.validate`), an optional finite ``bbox``,
    string ``sentences`` and string-or-null labels. ``ValueError`` names the problem."""
    row = need_dict(row, "a row")
    out: dict[str, Any] = {
        "image_id": need_int(row.get("image_id"), "image_id"),
        "name": _image_name(row),
        "image": row.get("image"),
        "instances": [],
    }
    for number, entry in enumerate(need_list(row.get("samples") or [], "samples")):
        entry = need_dict(entry, f"instance {number}")
        what = f"instance {number}"
        mask = entry.get("mask")
        if not isinstance(mask, dict) or not mask.get("counts") or not mask.get("size"):
            raise ValueError(f"{what} has no RLE mask")
        try:
            rle = masks.validate({"size": mask["size"], "counts": mask["counts"]})
        except InputError as exc:
            raise ValueError(f"{what} mask: {exc}") from None
        bbox = entry.get("bbox")
        box = need_box(bbox, f"{what} bbox", xywh=True) if bbox is not None else None
        sentences = need_list(entry.get("sentences") or [], f"{what} sentences")
        out["instances"].append(
            {
                "id": need_int(entry.get("id"), f"{what} id"),
                "rle": rle,
                "box": box if box is not None else masks.to_bbox(rle),
                "sentences": [_optional_str(t, f"{what} sentence") for t in sentences],
                "category": _optional_str(entry.get("category"), f"{what} category"),
                "supercategory": _optional_str(entry.get("supercategory"), f"{what} supercategory"),
                "label": _label(entry.get("label"), f"{what} label"),
            }
        )
    return out


def _row_samples(row: dict[str, Any], folder: Path) -> list[Sample]:
    image_path = folder / row["name"]
    if not image_path.is_file():
        image = row["image"]
        data = image.get("bytes") if isinstance(image, dict) else None
        if not isinstance(data, bytes) or not data:
            raise ValueError(f"image {row['image_id']} has no embedded bytes")
        atomic_write_bytes(image_path, data)
    out: list[Sample] = []
    for entry in row["instances"]:
        rle = entry["rle"]
        height, width = rle["size"]
        box = entry["box"]
        meta = {
            "dataset": "refcoco-m",
            "split": "validation",
            "image_id": row["image_id"],
            "instance_id": entry["id"],
            "category": entry["category"],
            "supercategory": entry["supercategory"],
        }
        if entry["label"] is not None:
            meta["label"] = entry["label"]
        for number, sentence in enumerate(entry["sentences"]):
            if not isinstance(sentence, str) or not sentence.strip():
                continue
            out.append(
                Sample(
                    id=f"refcoco-m:{entry['id']}:{number}",
                    image=image_path,
                    phrase=sentence.strip(),
                    masks=[rle],
                    width=width,
                    height=height,
                    boxes=[box] if box is not None else [],
                    meta=dict(meta),
                )
            )
    return out
