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
from refseg.data.base import DatasetSpec, Sample, limit_samples
from refseg.data.coco import xywh_to_xyxy
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


def _image_name(row: dict[str, Any], source: Path) -> str:
    name = Path(str(row.get("file_name") or "")).name
    if not name:
        name = f"COCO_train2014_{int(row['image_id']):012d}.jpg"
    if not _SAFE_NAME.match(name):
        raise InputError(f"{source}: unsafe image file name {name!r}")
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
        missing = {"image", "image_id", "samples"} - columns
        if missing:
            raise InputError(f"{shard}: missing column(s) {', '.join(sorted(missing))}")
        for batch in table.iter_batches(batch_size=16):
            for row in batch.to_pylist():
                if limit is not None and len(samples) >= limit:
                    return limit_samples(samples, limit)
                samples.extend(_row_samples(row, shard, folder))
    return limit_samples(samples, limit)


def _row_samples(row: dict[str, Any], shard: Path, folder: Path) -> list[Sample]:
    name = _image_name(row, shard)
    image_path = folder / name
    if not image_path.is_file():
        image = row.get("image") or {}
        data = image.get("bytes") if isinstance(image, dict) else None
        if not data:
            raise InputError(f"{shard}: image {row.get('image_id')} has no embedded bytes")
        atomic_write_bytes(image_path, data)
    out: list[Sample] = []
    for entry in row.get("samples") or []:
        mask = entry.get("mask") or {}
        size = [int(v) for v in mask.get("size") or []]
        if len(size) != 2 or not mask.get("counts"):
            raise InputError(f"{shard}: instance {entry.get('id')} has no RLE mask")
        height, width = size
        rle = masks.normalize({"size": size, "counts": mask["counts"]})
        bbox = entry.get("bbox")
        box = xywh_to_xyxy(bbox) if bbox and len(bbox) == 4 else masks.to_bbox(rle)
        meta = {
            "dataset": "refcoco-m",
            "split": "validation",
            "image_id": int(row["image_id"]),
            "instance_id": int(entry["id"]),
            "category": entry.get("category"),
            "supercategory": entry.get("supercategory"),
        }
        if entry.get("label") is not None:
            meta["label"] = entry["label"]
        for number, sentence in enumerate(entry.get("sentences") or []):
            if not isinstance(sentence, str) or not sentence.strip():
                continue
            out.append(
                Sample(
                    id=f"refcoco-m:{int(entry['id'])}:{number}",
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
