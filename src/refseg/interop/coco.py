"""COCO results files: the ``segm`` detections list that ``pycocotools.COCOeval`` reads.

The format (COCO's "results format", one JSON array)::

    [{"image_id": 139, "category_id": 1, "score": 0.97,
      "segmentation": {"size": [H, W], "counts": "<compressed RLE as str>"}}, ...]

``COCO.loadRes(FILE)`` then ``COCOeval(gt, dt, "segm")`` score it against a COCO ground truth,
so refseg's masks can be compared with any detector's on the toolkits users already run. One
entry per predicted instance; a result without instances (no target, or nothing found) adds
none, which is how COCO spells "no detection". Files are written whole to a temporary file and
renamed (:func:`refseg.fileio.atomic_open`), so a killed run never leaves half a list.

Ids. COCO scores by ``(image_id, category_id)``, so the ids must be the ground truth's:

* a sample or pair that carries COCO ids (``meta.image_id`` / ``meta.category_id``: the
  ``coco:`` reader, ``refseg data coco`` JSONL, REFER kinds) keeps them, when *every* record
  has them (mixing kept and made-up ids could collide);
* otherwise an image's id is the number its file name ends in (``000000000139.jpg``,
  ``COCO_val2014_000000000139.jpg`` -> 139) when those numbers are distinct over the file,
  else its 1-based place among the images in order of first appearance;
* a category without a COCO id is its phrase's 1-based place among the phrases in order of
  first appearance (prompt-only pairs have no phrase: they share one category).

``refseg eval`` records keep each sample's *union* mask (its instances' boxes and scores, not
their masks), so an eval run writes one entry per sample: the union, scored with the highest
instance score. With ``--predictions`` the file's own instances are written one by one, and a
record whose instances carry masks is written per instance too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from refseg import masks
from refseg.errors import InputError
from refseg.fileio import atomic_open
from refseg.types import Result

__all__ = [
    "batch_coco_results",
    "eval_coco_results",
    "segm_entries",
    "write_coco_results",
]

_TRAILING_DIGITS = re.compile(r"(\d+)$")


def segm_entries(result: Result, image_id: int, category_id: int) -> list[dict[str, Any]]:
    """One COCO ``segm`` entry per instance of ``result`` (none for an empty result)."""
    return [
        _entry(image_id, category_id, instance.rle, instance.score) for instance in result.instances
    ]


def _entry(image_id: int, category_id: int, rle: masks.RLE, score: float) -> dict[str, Any]:
    canonical = masks.normalize(rle)  # str counts: what json and loadRes take
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": {"size": list(canonical["size"]), "counts": canonical["counts"]},
        "score": round(float(score), 6),
    }


def write_coco_results(path: str | os.PathLike[str], entries: Iterable[Mapping[str, Any]]) -> int:
    """Write ``entries`` as one JSON array to ``path`` atomically; returns how many.

    Each entry must have integer ``image_id`` and ``category_id``, a finite ``score`` and a
    valid RLE ``segmentation`` (checked with :func:`refseg.masks.validate`, so a file written
    here never makes pycocotools read past a buffer).
    """
    checked = [_checked(entry, number) for number, entry in enumerate(entries)]
    with atomic_open(path, "w") as handle:
        json.dump(checked, handle, separators=(",", ":"))
        handle.write("\n")
    return len(checked)


def _checked(entry: Mapping[str, Any], number: int) -> dict[str, Any]:
    where = f"COCO results entry {number}"
    for key in ("image_id", "category_id"):
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where}: {key} must be an integer, got {value!r:.40}")
    score = entry.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or score != score:
        raise InputError(f"{where}: score must be a number, got {score!r:.40}")
    try:
        rle = masks.validate(entry.get("segmentation"))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return {
        "image_id": entry["image_id"],
        "category_id": entry["category_id"],
        "segmentation": rle,
        "score": float(score),
    }


# --------------------------------------------------------------------------------------------
# Ids for inputs that do not carry COCO's.


def _coco_ids(metas: Sequence[Mapping[str, Any]], key: str) -> list[int] | None:
    """Every record's own ``meta[key]`` when all have an integer one, else None."""
    values = [meta.get(key) for meta in metas]
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return [int(v) for v in values]
    return None


def image_ids(paths: Sequence[str]) -> list[int]:
    """An id per image path: the number its file name ends in when those are distinct over
    all the distinct paths, else the 1-based place in order of first appearance."""
    order = list(dict.fromkeys(paths))
    numbers = {}
    for path in order:
        found = _TRAILING_DIGITS.search(Path(path).stem)
        if found is None:
            break
        numbers[path] = int(found.group(1))
    if len(numbers) == len(order) and len(set(numbers.values())) == len(order):
        return [numbers[p] for p in paths]
    place = {path: k for k, path in enumerate(order, start=1)}
    return [place[p] for p in paths]


def category_ids(phrases: Sequence[str | None]) -> list[int]:
    """An id per phrase: its 1-based place among the distinct phrases in order of first
    appearance (``None``, a prompt-only pair, is one category of its own)."""
    place: dict[str | None, int] = {}
    for phrase in phrases:
        place.setdefault(phrase, len(place) + 1)
    return [place[p] for p in phrases]


def _ids(records: Sequence[Mapping[str, Any]], image_key: str) -> tuple[list[int], list[int]]:
    metas = [r.get("meta") if isinstance(r.get("meta"), Mapping) else {} for r in records]
    images = _coco_ids(metas, "image_id") or image_ids([str(r.get(image_key)) for r in records])
    phrases = [r.get("phrase") if isinstance(r.get("phrase"), str) else None for r in records]
    categories = _coco_ids(metas, "category_id") or category_ids(phrases)
    return images, categories


# --------------------------------------------------------------------------------------------
# The two producers: a batch's results.jsonl, an eval run's records.


def batch_coco_results(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Entries for the records of ``refseg segment --batch`` (``DIR/results.jsonl``): every
    instance of every successful pair; failed pairs (``"error"``) add nothing."""
    done = [r for r in records if "error" not in r]
    images, categories = _ids(done, "image_path")
    out: list[dict[str, Any]] = []
    for record, image_id, category_id in zip(done, images, categories):
        out += _json_entries(record, image_id, category_id)
    return out


def _json_entries(data: Mapping[str, Any], image_id: int, category_id: int) -> list[dict]:
    """Entries for the instances of one result JSON, each with the ``score`` it was written
    with (the number a user thresholds), masks checked on the way."""
    where = f"result {str(data.get('id'))[:80]!r}"
    instances = data.get("instances") or []
    if not isinstance(instances, list):
        raise InputError(f"{where}: instances must be a list")
    out = []
    for number, instance in enumerate(instances):
        if not isinstance(instance, Mapping) or "mask" not in instance:
            raise InputError(f"{where}: instance {number} has no mask")
        try:
            out.append(_entry(image_id, category_id, instance["mask"], instance.get("score", 1.0)))
        except (InputError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: instance {number}: {exc}") from None
    return out


def eval_coco_results(
    records: Iterable[Mapping[str, Any]],
    predictions: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Entries for the records of a ``refseg eval`` run (one per sample).

    A sample whose prediction failed (``error_kind`` set) or is empty adds nothing. Its
    instances are written one by one when ``predictions`` (id -> result JSON, the
    ``--predictions`` file) has them or the record's instances carry masks; otherwise the
    record's union mask is one entry scored with the highest instance score (see the module
    docstring for why).
    """
    scored = [r for r in records if not r.get("error_kind") and r.get("prediction") is not None]
    images, categories = _ids(scored, "image")
    out: list[dict[str, Any]] = []
    for record, image_id, category_id in zip(scored, images, categories):
        key = str(record.get("id"))
        given = (predictions or {}).get(key)
        if given is not None:
            out += _json_entries(given, image_id, category_id)
            continue
        instances = record.get("instances") or []
        if instances and all(isinstance(i, Mapping) and "mask" in i for i in instances):
            out += _json_entries(record, image_id, category_id)
            continue
        union = record["prediction"]
        if not masks.area([masks.normalize(union)])[0]:
            continue  # nothing predicted: no detection
        scores = [float(i.get("score", 1.0)) for i in instances if isinstance(i, Mapping)]
        out.append(_entry(image_id, category_id, union, max(scores, default=1.0)))
    return out
