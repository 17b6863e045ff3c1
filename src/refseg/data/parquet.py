"""RefCOCO, RefCOCO+, RefCOCOg and gRefCOCO as Hugging Face ``datasets`` Parquet repositories.

Most users today download these benchmarks from the Hugging Face hub as Parquet shards rather
than as the REFER pickles :mod:`refseg.data.refer` reads. Two column layouts are widely used;
the reader tells them apart by their columns (per shard, so a mix is refused in one line):

**lmms-lab** (``lmms-lab/RefCOCO``, ``lmms-lab/RefCOCOplus``, ``lmms-lab/RefCOCOg``: the sets
lmms-eval evaluates on; columns from their dataset cards' ``dataset_info``). Shards
``data/{val,test,testA,testB}-0000K-of-0000N.parquet``, one row per referred object:
``question_id`` (str), ``image`` (the encoded image, a ``{"bytes", "path"}`` struct),
``question`` (lmms-eval's prompt, not used), ``answer`` (list of str: the referring
expressions), ``segmentation`` (list of float: one flat ``[x1, y1, x2, y2, ...]`` polygon),
``bbox`` (COCO ``[x, y, w, h]``), ``iscrowd`` (int) and ``file_name`` (str). The images are
embedded.

**jxu124** (``jxu124/refcoco``, ``jxu124/refcocoplus``, ``jxu124/refcocog``; columns from their
dataset cards). Shards ``data/{train,validation,test,testA,testB}-00000-of-00001-HASH.parquet``,
one row per REFER ref: ``ref_id``, ``ann_id``, ``image_id``, ``category_id`` (int), ``split``
(str), ``sentences`` (list of ``{raw, sent, sent_id, tokens}``), ``raw_anns`` (the COCO
annotation as a JSON string: ``segmentation`` polygons or RLE, ``bbox``, ``iscrowd``),
``raw_image_info`` (the COCO image record as a JSON string: ``file_name``, ``height``,
``width``), ``raw_sentences``, ``image_path``, ``bbox``, ``captions``, ``global_image_id``,
``anns_id``. The images are not embedded: they are COCO train2014's, found like the REFER
kinds' (``--images``, ``$REFSEG_COCO_IMAGES``, or beside the dataset). Copies that add an
``image`` column (the embedded image, as derived sets do) are read from it instead.

**gRefCOCO**: no Parquet release with a dataset card was found (checked 2026-12; gRefCOCO is
published as ``grefs(unc).json`` + ``instances.json``). ``grefcoco-parquet:`` reads the jxu124
layout extended with gRefCOCO's own fields, as a row-per-ref export of ``grefs(unc).json``
gives them: ``ann_id`` a list of ids (``[-1]`` or ``[]`` for no target), ``raw_anns`` a JSON
*list* of the referred COCO annotations, and an optional boolean ``no_target``. The same
fields are accepted under the other kinds, so a multi-target row is never silently cut to one.

Samples: one per (row, expression), ids ``KIND:QUESTION_ID:K`` (lmms-lab) or
``KIND:REF_ID:SENT_ID`` (jxu124), masks as REFER draws them (polygons through
:func:`refseg.data.coco.segmentation_to_rle`), ``meta`` with the split, COCO ``image_id`` and
``category_id`` where the layout has them (so ``--coco-results`` keeps COCO's ids).

``PATH`` is a folder of shards (or its ``data/`` folder), one shard, a hub cache folder
(``.../hub/datasets--lmms-lab--RefCOCO``, its newest snapshot is read), or a hub id
(``lmms-lab/RefCOCO``) looked up in the local Hugging Face cache (``$HF_HUB_CACHE``,
``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``; nothing is downloaded). ``SPLIT`` picks the
shards named ``SPLIT-*.parquet`` (``val`` and ``validation`` name each other).

Limits, as the other readers: a shard's footer (schema and row-group sizes) is read first, and
more than :data:`MAX_ROWS` rows, a row group over :data:`MAX_ROW_GROUP_BYTES` or a text cell over
:data:`MAX_CELL_BYTES` is refused before its data is read; rows are read 16 at a time and only
the columns used. Embedded images are checked as any input image (:func:`refseg.image.image_size`:
accepted formats, the pixel limit, from the header) before they are written once, atomically,
to ``images_dir`` (default ``PATH/images``); masks are checked as in :mod:`refseg.masks`. A bad
row is one line, ``SHARD: row N: problem``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
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
from refseg.data.coco import ensure_images_exist, resolve_coco_images, segmentation_to_rle
from refseg.data.layouts import JXU, LAYOUT_COLUMNS, LMMS
from refseg.errors import InputError
from refseg.fileio import atomic_write_bytes

#: Rows read over all shards of one split (RefCOCO's largest split has 42,404 refs).
MAX_ROWS = 2_000_000
#: A row group's uncompressed size as the footer states it (lmms-lab's are ~100-400 MB a shard).
MAX_ROW_GROUP_BYTES = 2 << 30
#: One text or binary cell: an embedded image, a ``raw_anns`` JSON string.
MAX_CELL_BYTES = 64 << 20
#: Expressions of one row, and annotations of one gRefCOCO row.
MAX_PER_ROW = 1000

_READ_COLUMNS = {
    LMMS: ["question_id", "image", "answer", "segmentation", "bbox", "iscrowd", "file_name"],
    JXU: [
        "ref_id", "ann_id", "image_id", "category_id", "sentences", "raw_anns",
        "raw_image_info", "image", "no_target",
    ],
}  # fmt: skip
_SPLIT_NAMES = {"val": ("val", "validation"), "validation": ("validation", "val")}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------------------------
# Finding the shards


def hub_cache_folders() -> list[Path]:
    """Where the Hugging Face hub caches repositories on this machine, in its own order."""
    folders = []
    if os.environ.get("HF_HUB_CACHE"):
        folders.append(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    home = os.environ.get("HF_HOME")
    folders.append(
        Path(home).expanduser() / "hub" if home else Path.home() / ".cache/huggingface/hub"
    )
    return folders


def _snapshot(repo_folder: Path) -> Path:
    """The snapshot of a hub cache folder ``datasets--OWNER--NAME``: the one ``refs/main``
    names, else the newest."""
    main = repo_folder / "refs" / "main"
    if main.is_file():
        revision = main.read_text(encoding="ascii", errors="replace").strip()
        if (
            re.fullmatch(r"[0-9a-f]{40}", revision)
            and (repo_folder / "snapshots" / revision).is_dir()
        ):
            return repo_folder / "snapshots" / revision
    snapshots = [p for p in (repo_folder / "snapshots").glob("*") if p.is_dir()]
    if not snapshots:
        raise InputError(f"{repo_folder}: a hub cache folder without snapshots")
    return max(snapshots, key=lambda p: p.stat().st_mtime)


def resolve_root(path: Path, kind: str) -> Path:
    """The folder (or file) the spec's ``PATH`` means: as given, a hub cache folder's
    snapshot, or a hub id's cache folder."""
    if path.exists():
        if (path / "snapshots").is_dir():
            return _snapshot(path)
        return path
    text = str(path)
    if _HUB_ID.match(text):
        name = "datasets--" + text.replace("/", "--")
        for cache in hub_cache_folders():
            if (cache / name).is_dir():
                return _snapshot(cache / name)
        raise InputError(
            f"{kind}:{text}: no such folder, and no local copy of the hub dataset {text!r} "
            f"in {', '.join(str(c) for c in hub_cache_folders())} (download it with the "
            "datasets library first, or give its folder)"
        )
    raise InputError(f"{kind}:{text}: no such file or folder")


def find_shards(root: Path, split: str | None, kind: str) -> list[Path]:
    """The split's shards: ``SPLIT-*.parquet`` in ``root/data`` or ``root`` (one file as is)."""
    if root.is_file():
        return [root]
    names = _SPLIT_NAMES.get(split or "", (split,)) if split else None
    for folder in (root / "data", root):
        shards = sorted(folder.glob("*.parquet"))
        if not shards:
            continue
        if names is None:
            splits = sorted({p.name.split("-")[0] for p in shards})
            raise InputError(
                f"{kind}:{root}: give a split ({kind}:{root}:SPLIT); found {', '.join(splits)}"
            )
        chosen = [p for p in shards if p.name.split("-")[0] in names]
        if chosen:
            return chosen
        splits = sorted({p.name.split("-")[0] for p in shards})
        raise InputError(f"{kind}:{root}: no {split!r} shards; splits: {', '.join(splits)}")
    raise InputError(f"{kind}:{root}: no .parquet files in it or in its data/ folder")


# --------------------------------------------------------------------------------------------
# Reading shards, bounded


def _open_shard(shard: Path) -> tuple[Any, str]:
    """The shard's ``ParquetFile`` and layout, after its footer passed the limits."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(shard)
        columns = set(handle.schema_arrow.names)
        meta = handle.metadata
        groups = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise InputError(f"{shard}: not a readable Parquet file ({type(exc).__name__})") from None
    layouts = [name for name, needed in LAYOUT_COLUMNS.items() if needed <= columns]
    if len(layouts) != 1:
        known = "; ".join(f"{n}: {', '.join(sorted(c))}" for n, c in LAYOUT_COLUMNS.items())
        raise InputError(f"{shard}: not a known RefCOCO Parquet layout (columns needed: {known})")
    if any(size > MAX_ROW_GROUP_BYTES for size in groups):
        raise InputError(
            f"{shard}: a row group of {max(groups)} bytes is over the limit of "
            f"{MAX_ROW_GROUP_BYTES}"
        )
    return handle, layouts[0]


def _rows(shard: Path, handle: Any, layout: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number, row)`` 16 rows at a time, only the columns the layout uses."""
    columns = [c for c in _READ_COLUMNS[layout] if c in handle.schema_arrow.names]
    number = 0
    try:
        for batch in handle.iter_batches(batch_size=16, columns=columns):
            for row in batch.to_pylist():
                yield number, row
                number += 1
    except (InputError, GeneratorExit):
        raise
    except Exception as exc:  # pyarrow raises several types for damaged data pages
        raise InputError(f"{shard}: row {number}: unreadable ({type(exc).__name__})") from None


def _cell(value: Any, what: str) -> Any:
    if isinstance(value, (str, bytes)) and len(value) > MAX_CELL_BYTES:
        raise ValueError(f"{what} is {len(value)} bytes, over the limit of {MAX_CELL_BYTES}")
    return value


def _json_cell(value: Any, what: str) -> Any:
    text = need_str(_cell(value, what), what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{what} is not JSON") from None


# --------------------------------------------------------------------------------------------
# Images


def _image_bytes(value: Any) -> bytes | None:
    data = value.get("bytes") if isinstance(value, dict) else None
    return _cell(data, "embedded image") if isinstance(data, bytes) and data else None


def _safe_name(name: str) -> str:
    base = Path(name).name
    if not base or not _SAFE_NAME.match(base) or base in (".", ".."):
        raise ValueError(f"unsafe image file name {name[:60]!r}")
    return base


def _embedded(folder: Path, name: str, data: bytes) -> tuple[Path, int, int]:
    """Check embedded image bytes as any input image, write them once; ``(path, w, h)``."""
    from refseg.image import image_size

    try:
        width, height = image_size(data, name=f"embedded image {name}")
    except InputError as exc:
        raise ValueError(str(exc)) from None
    path = folder / name
    if not path.is_file():
        atomic_write_bytes(path, data)
    return path, width, height


# --------------------------------------------------------------------------------------------
# The two layouts' rows


def _lmms_samples(kind: str, split: str, row: dict[str, Any], folder: Path) -> list[Sample]:
    question_id = _cell(row.get("question_id"), "question_id")
    if isinstance(question_id, int) and not isinstance(question_id, bool):
        question_id = str(question_id)
    question_id = need_str(question_id, "question_id")
    data = _image_bytes(row.get("image"))
    if data is None:
        raise ValueError("the image column holds no embedded bytes")
    name = _safe_name(need_str(row.get("file_name") or f"{question_id}.jpg", "file_name"))
    image, width, height = _embedded(folder, name, data)
    polygon = need_list(row.get("segmentation") or [], "segmentation")
    # One flat polygon, as the cards give it; a list of polygons is taken whole.
    polygons = polygon if polygon and isinstance(polygon[0], list) else [polygon]
    rle = segmentation_to_rle([list(p) for p in polygons], height, width)
    bbox = row.get("bbox")
    box = need_box(bbox, "bbox", xywh=True) if bbox is not None else masks.to_bbox(rle)
    answers = need_list(row.get("answer") or [], "answer")
    if len(answers) > MAX_PER_ROW:
        raise ValueError(f"{len(answers)} expressions; the limit is {MAX_PER_ROW}")
    meta = {"dataset": kind, "split": split, "question_id": question_id, "file_name": name}
    if row.get("iscrowd") is not None:
        meta["iscrowd"] = bool(need_int(row["iscrowd"], "iscrowd"))
    return [
        Sample(
            id=f"{kind}:{question_id}:{k}",
            image=image,
            phrase=text.strip(),
            masks=[rle],
            width=width,
            height=height,
            boxes=[box] if box is not None else [],
            meta=dict(meta),
        )
        for k, text in enumerate(answers)
        if need_str(_cell(text, "answer"), "answer").strip()
    ]


def _ann_ids(value: Any) -> list[int]:
    """``ann_id``: one id, or gRefCOCO's list (``[-1]`` or ``[]``: no target)."""
    ids = value if isinstance(value, list) else [value]
    if len(ids) > MAX_PER_ROW:
        raise ValueError(f"{len(ids)} annotation ids; the limit is {MAX_PER_ROW}")
    return [i for i in (need_int(v, "ann_id") for v in ids) if i >= 0]


def _jxu_samples(
    kind: str, split: str, row: dict[str, Any], images_dir: Path, embedded_dir: Path
) -> list[Sample]:
    ref_id = need_int(row.get("ref_id"), "ref_id")
    info = need_dict(_json_cell(row.get("raw_image_info"), "raw_image_info"), "raw_image_info")
    name = _safe_name(need_str(info.get("file_name"), "raw_image_info file_name"))
    height, width = masks.check_size(info.get("height"), info.get("width"), "raw_image_info")
    data = _image_bytes(row.get("image"))
    if data is not None:
        image, width, height = _embedded(embedded_dir, name, data)
    else:
        image = images_dir / name
    anns = _json_cell(row.get("raw_anns"), "raw_anns")
    anns = [anns] if isinstance(anns, dict) else need_list(anns, "raw_anns")
    if len(anns) > MAX_PER_ROW:
        raise ValueError(f"{len(anns)} annotations; the limit is {MAX_PER_ROW}")
    ann_ids = _ann_ids(row.get("ann_id")) if row.get("ann_id") is not None else None
    rles, boxes = [], []
    for number, ann in enumerate(anns):
        ann = need_dict(ann, f"raw_anns {number}")
        if ann_ids is not None and not ann_ids:  # no target: a placeholder annotation
            break
        try:
            rle = segmentation_to_rle(ann.get("segmentation"), height, width)
        except InputError as exc:
            raise ValueError(f"raw_anns {number}: {exc}") from None
        rles.append(rle)
        bbox = ann.get("bbox")
        box = need_box(bbox, f"raw_anns {number} bbox", xywh=True) if bbox else masks.to_bbox(rle)
        if box is not None:
            boxes.append(box)
    if ann_ids is not None and len(ann_ids) != len(rles):
        raise ValueError(f"{len(ann_ids)} ann_id(s) but {len(rles)} annotation(s) in raw_anns")
    no_target = row.get("no_target")
    if no_target is not None and not isinstance(no_target, bool):
        raise ValueError(f"no_target must be true or false, got {no_target!r:.40}")
    if no_target and rles:
        raise ValueError("no_target is true but the row lists annotations")
    meta: dict[str, Any] = {"dataset": kind, "split": split, "ref_id": ref_id, "file_name": name}
    if row.get("image_id") is not None:
        meta["image_id"] = need_int(row["image_id"], "image_id")
    if row.get("category_id") is not None:
        meta["category_id"] = need_int(row["category_id"], "category_id")
    if ann_ids is not None:
        meta["ann_ids"] = ann_ids
    if no_target is not None:
        meta["no_target"] = no_target
    sentences = need_list(row.get("sentences") or [], "sentences")
    if len(sentences) > MAX_PER_ROW:
        raise ValueError(f"{len(sentences)} sentences; the limit is {MAX_PER_ROW}")
    out = []
    for number, sentence in enumerate(sentences):
        sentence = need_dict(sentence, f"sentence {number}")
        text = sentence.get("sent") if sentence.get("sent") is not None else sentence.get("raw")
        text = need_str(_cell(text, "sentence"), f"sentence {number}").strip()
        sent_id = sentence.get("sent_id")
        key = need_int(sent_id, f"sentence {number} sent_id") if sent_id is not None else number
        if text:
            out.append(
                Sample(
                    id=f"{kind}:{ref_id}:{key}",
                    image=image,
                    phrase=text,
                    masks=list(rles),
                    width=width,
                    height=height,
                    boxes=list(boxes),
                    meta=dict(meta),
                )
            )
    return out


# --------------------------------------------------------------------------------------------
# The reader


def read_refcoco_parquet(
    spec: DatasetSpec,
    *,
    dataset: str,
    images_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """The samples of one split of a RefCOCO-family Parquet repository (see the module
    docstring for the layouts, ids and limits)."""
    kind = f"{dataset}-parquet"
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:  # pragma: no cover - pyarrow comes with the train extra
        raise InputError(f"{kind}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    root = resolve_root(spec.path, kind)
    shards = find_shards(root, spec.split, kind)
    split = spec.split or shards[0].name.split("-")[0]
    base = root.parent if root.is_file() else root
    embedded_dir = Path(images_dir).expanduser() if images_dir else base / "images"
    coco_dir = resolve_coco_images(base, images_dir)
    samples: list[Sample] = []
    rows = 0
    uses_coco_images = False
    for shard in shards:
        handle, layout = _open_shard(shard)
        rows += handle.metadata.num_rows
        if rows > MAX_ROWS:
            raise InputError(f"{shard}: more than {MAX_ROWS} rows in split {split!r}")
        for number, row in _rows(shard, handle, layout):
            if limit is not None and len(samples) >= limit:
                break
            try:
                if layout == LMMS:
                    samples += _lmms_samples(kind, split, row, embedded_dir)
                else:
                    found = _jxu_samples(kind, split, row, coco_dir, embedded_dir)
                    uses_coco_images |= _image_bytes(row.get("image")) is None
                    samples += found
            except (ValueError, TypeError) as exc:
                raise record_error(shard, f"row {number}", exc) from None
        if limit is not None and len(samples) >= limit:
            break
    samples = limit_samples(samples, limit)
    if check_images and uses_coco_images:
        ensure_images_exist(
            [s for s in samples if s.image.parent == coco_dir],
            coco_dir,
            hint=" (the jxu124 layout holds no images: give COCO train2014 with --images)",
        )
    return samples
