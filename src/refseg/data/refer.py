"""Readers for the REFER layout (RefCOCO, RefCOCO+, RefCOCOg) and for gRefCOCO.

Layout (as published by the REFER API and the gRefCOCO release)::

    PATH/                        # e.g. data/refcocog
      refs(umd).p                # REFER: pickled list of refs (refs(unc).p, refs(google).p)
      grefs(unc).json            # gRefCOCO instead: the same records as JSON
      instances.json             # COCO-style images / annotations (polygons) / categories
    COCO train2014 images        # COCO_train2014_%012d.jpg, see resolve_coco_images()

A *ref* is ``{ref_id, ann_id, image_id, category_id, split, sent_ids, sentences, file_name}``;
each sentence is ``{sent_id, sent, raw, tokens}``. One :class:`Sample` is made per sentence
(several expressions describe each object), with id ``<dataset>-<splitBy>:<ref_id>:<sent_id>``,
phrase ``sent`` (the lower-cased, tokenised text evaluation code uses; ``raw`` is kept in
``meta.raw`` when it differs). The ref's ``file_name`` carries an annotation suffix and is
ignored: the image comes from ``instances.json``.

gRefCOCO refs may name several annotations (``ann_id`` is a list) or none (``ann_id == [-1]``,
or ``no_target: true``): a sample then has several masks, or none. Crowd annotations are left out
of the targets as the GRES baseline does, unless every target is a crowd region (a target that
exists must not turn into "no target").

The pickles are read with :mod:`refseg.data.safe_pickle`, which executes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from refseg import masks
from refseg.data.base import (
    DatasetSpec,
    Sample,
    limit_samples,
    need_dict,
    need_int,
    need_list,
    need_str,
    record_error,
)
from refseg.data.coco import (
    COCO_IMAGES_ENV,
    CocoIndex,
    ensure_images_exist,
    image_file_name,
    load_json,
    resolve_coco_images,
    xywh_to_xyxy,
)
from refseg.data.safe_pickle import load_data_pickle
from refseg.errors import InputError

#: The split-bys each REFER dataset was published with.
SPLIT_BYS = {"refcoco": ("unc", "google"), "refcoco+": ("unc",), "refcocog": ("umd", "google")}


def _check_folder(path: Path, kind: str) -> None:
    if not path.exists():
        raise InputError(f"{kind}:{path}: no such folder")
    if not path.is_dir():
        raise InputError(f"{kind}:{path}: expected the folder holding the annotation files")


def _int_list(value: Any, what: str) -> list[int]:
    """gRefCOCO's ``ann_id`` / ``category_id``: one integer or a list of them."""
    if isinstance(value, list):
        return [need_int(v, what) for v in value]
    return [need_int(value, what)]


def parse_ref(ref: Any, *, multi: bool = False) -> dict[str, Any]:
    """One REFER (``multi=False``) or gRefCOCO (``multi=True``) ref, every used field checked.

    Returns ``ref_id``, ``image_id``, ``split``, ``ann_ids``, ``category_ids``, ``no_target``
    and ``sentences`` (``(sent_id, phrase, raw)`` for each sentence with text). Raises
    ``ValueError`` with the problem; the reader adds the file and record number.
    """
    ref = need_dict(ref, "a ref")
    for key in ("ref_id", "ann_id", "image_id", "split", "sentences"):
        if key not in ref:
            raise ValueError(f"lacks {key!r}")
    category = ref.get("category_id")
    if multi:
        ann_ids = _int_list(ref["ann_id"], "ann_id")
        categories = [] if category is None else _int_list(category, "category_id")
    else:
        ann_ids = [need_int(ref["ann_id"], "ann_id")]
        categories = [] if category is None else [need_int(category, "category_id")]
    no_target = ref.get("no_target", False)
    if not isinstance(no_target, bool):
        raise ValueError(f"no_target must be true or false, got {no_target!r:.40}")
    sentences = []
    for number, sent in enumerate(need_list(ref["sentences"], "sentences")):
        sent = need_dict(sent, f"sentence {number}")
        if "sent_id" not in sent:
            raise ValueError(f"sentence {number} lacks 'sent_id'")
        sent_id = need_int(sent["sent_id"], f"sentence {number} sent_id")
        texts = [sent.get(k) for k in ("sent", "raw")]
        for key, text in zip(("sent", "raw"), texts, strict=True):
            if text is not None:
                need_str(text, f"sentence {number} {key}")
        phrase = (texts[0] or texts[1] or "").strip()
        if phrase:
            sentences.append((sent_id, phrase, (texts[1] or phrase).strip()))
    return {
        "ref_id": need_int(ref["ref_id"], "ref_id"),
        "image_id": need_int(ref["image_id"], "image_id"),
        "split": need_str(ref["split"], "split"),
        "ann_ids": ann_ids,
        "category_ids": categories,
        "no_target": no_target,
        "sentences": sentences,
    }


def _parse_refs(refs: Any, source: Path, *, multi: bool) -> list[dict[str, Any]]:
    if not isinstance(refs, list):
        raise InputError(f"{source}: expected a list of refs, got {type(refs).__name__}")
    parsed = []
    for number, ref in enumerate(refs):
        try:
            parsed.append(parse_ref(ref, multi=multi))
        except ValueError as exc:
            raise record_error(source, f"record {number}", exc) from None
    return parsed


def _select_split(
    refs: list[dict[str, Any]], split: str | None, source: Path
) -> list[dict[str, Any]]:
    if split is None:
        return refs
    available = sorted({str(r["split"]) for r in refs})
    if split not in available:
        raise InputError(
            f"{source}: unknown split {split!r}; this file has: {', '.join(available) or 'none'}"
        )
    return [r for r in refs if r["split"] == split]


def _finish(
    samples: list[Sample],
    images_dir: Path,
    *,
    limit: int | None,
    check_images: bool,
) -> list[Sample]:
    samples = limit_samples(samples, limit)
    if check_images:
        hint = f" (give images_dir= / --images, or set ${COCO_IMAGES_ENV})"
        ensure_images_exist(samples, images_dir, hint=hint)
    return samples


def read_refer(
    spec: DatasetSpec,
    *,
    dataset: str,
    split_by: str,
    images_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """RefCOCO / RefCOCO+ / RefCOCOg samples of one split (all splits when none is given).

    ``spec.path`` is the folder holding ``refs(<split_by>).p`` and ``instances.json``;
    ``images_dir`` overrides where the COCO train2014 images are looked for.
    """
    root = spec.path
    _check_folder(root, dataset)
    if split_by not in SPLIT_BYS.get(dataset, (split_by,)):
        known = ", ".join(SPLIT_BYS[dataset])
        raise InputError(f"{dataset} was published split by {known}, not {split_by!r}")
    refs_path = root / f"refs({split_by}).p"
    if not refs_path.is_file():
        present = sorted(p.name for p in root.glob("refs(*).p"))
        extra = f"; found {', '.join(present)}" if present else ""
        raise InputError(f"{refs_path}: no such file (the REFER refs pickle){extra}")
    refs = _select_split(
        _parse_refs(load_data_pickle(refs_path), refs_path, multi=False), spec.split, refs_path
    )
    index = CocoIndex.load(root / "instances.json")
    folder = resolve_coco_images(root, images_dir)
    cache: dict[int, masks.RLE] = {}
    prefix = f"{dataset}-{split_by}"
    samples: list[Sample] = []
    for ref in refs:
        ann = index.annotation(ref["ann_ids"][0])
        image = index.image(ref["image_id"])
        rle = index.mask(ann, cache)
        box = xywh_to_xyxy(ann["bbox"]) if "bbox" in ann else masks.to_bbox(rle)
        category = index.category_name(
            ref["category_ids"][0] if ref["category_ids"] else ann.get("category_id")
        )
        for sent_id, phrase, raw in ref["sentences"]:
            meta: dict[str, Any] = {
                "dataset": dataset,
                "split_by": split_by,
                "split": ref["split"],
                "ref_id": ref["ref_id"],
                "sent_id": sent_id,
                "ann_ids": [int(ann["id"])],
                "image_id": int(image["id"]),
                "category": category,
            }
            if raw != phrase:
                meta["raw"] = raw
            samples.append(
                Sample(
                    id=f"{prefix}:{ref['ref_id']}:{sent_id}",
                    image=folder / image_file_name(image),
                    phrase=phrase,
                    masks=[rle],
                    width=image["width"],
                    height=image["height"],
                    boxes=[box] if box is not None else [],
                    meta=meta,
                )
            )
    return _finish(samples, folder, limit=limit, check_images=check_images)


def _load_grefs(root: Path, split_by: str) -> tuple[list[dict[str, Any]], Path]:
    json_path = root / f"grefs({split_by}).json"
    if json_path.is_file():
        refs = load_json(json_path, "gRefCOCO refs file")
        return _parse_refs(refs, json_path, multi=True), json_path
    pickle_path = root / f"grefs({split_by}).p"
    if pickle_path.is_file():
        return _parse_refs(load_data_pickle(pickle_path), pickle_path, multi=True), pickle_path
    raise InputError(f"{json_path}: no such file (the gRefCOCO refs file)")


def read_grefcoco(
    spec: DatasetSpec,
    *,
    split_by: str = "unc",
    images_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    check_images: bool = True,
) -> list[Sample]:
    """gRefCOCO samples (multi-target and no-target expressions included).

    ``meta.no_target`` is true for no-target expressions; ``meta.ann_ids`` lists the targets.
    """
    root = spec.path
    _check_folder(root, "grefcoco")
    refs, source = _load_grefs(root, split_by)
    refs = _select_split(refs, spec.split, source)
    index = CocoIndex.load(root / "instances.json")
    folder = resolve_coco_images(root, images_dir)
    cache: dict[int, masks.RLE] = {}
    samples: list[Sample] = []
    for ref in refs:
        image = index.image(ref["image_id"])
        ann_ids = ref["ann_ids"]
        no_target = ref["no_target"] or -1 in ann_ids or not ann_ids
        targets = [] if no_target else [index.annotation(a) for a in ann_ids]
        for ann in targets:
            if ann["image_id"] != image["id"]:
                raise InputError(
                    f"{source}: ref {ref['ref_id']}: annotation {ann['id']} belongs to image "
                    f"{ann['image_id']}, not {image['id']}"
                )
        solid = [a for a in targets if not a.get("iscrowd")] or targets
        rles = [index.mask(a, cache) for a in solid]
        boxes = [xywh_to_xyxy(a["bbox"]) for a in solid if "bbox" in a]
        categories = [index.category_name(c) for c in ref["category_ids"]]
        for sent_id, phrase, raw in ref["sentences"]:
            meta: dict[str, Any] = {
                "dataset": "grefcoco",
                "split_by": split_by,
                "split": ref["split"],
                "ref_id": ref["ref_id"],
                "sent_id": sent_id,
                "ann_ids": [int(a["id"]) for a in solid],
                "image_id": int(image["id"]),
                "categories": [c for c in categories if c],
                "no_target": no_target,
            }
            crowd = [int(a["id"]) for a in targets if a.get("iscrowd")]
            if crowd:
                meta["crowd_ann_ids"] = crowd
            if raw != phrase:
                meta["raw"] = raw
            samples.append(
                Sample(
                    id=f"grefcoco-{split_by}:{ref['ref_id']}:{sent_id}",
                    image=folder / image_file_name(image),
                    phrase=phrase,
                    masks=list(rles),
                    width=image["width"],
                    height=image["height"],
                    boxes=boxes if len(boxes) == len(rles) else [],
                    meta=meta,
                )
            )
    return _finish(samples, folder, limit=limit, check_images=check_images)
