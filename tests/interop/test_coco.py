"""COCO ``segm`` results files, scored by the real ``pycocotools.COCOeval`` on the COCO sample."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from refseg import masks
from refseg.errors import InputError
from refseg.interop.coco import (
    batch_coco_results,
    category_ids,
    eval_coco_results,
    image_ids,
    segm_entries,
    write_coco_results,
)
from refseg.types import Instance, Result


def coco_ap(ground_truth: Path, results: Path) -> float:
    """COCO mask AP (IoU 0.50:0.95) of a results file, as COCOeval computes it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ground_truth))
        evaluation = COCOeval(gt, gt.loadRes(str(results)), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def _results_from_ground_truth(instances: dict, shift: int = 0) -> list[tuple[Result, int, int]]:
    """One result per non-crowd annotation: its own mask (moved ``shift`` pixels right)."""
    sizes = {image["id"]: (image["height"], image["width"]) for image in instances["images"]}
    out = []
    for number, ann in enumerate(a for a in instances["annotations"] if not a["iscrowd"]):
        height, width = sizes[ann["image_id"]]
        segm = ann["segmentation"]
        if isinstance(segm, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        elif isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            rle = segm
        mask = mask_utils.decode(rle).astype(bool)
        if shift:
            mask = np.roll(mask, shift, axis=1)
        score = 1.0 - number / 1000  # distinct scores: COCOeval sorts by them
        result = Result(
            width=width, height=height, instances=[Instance.from_mask(mask, score=score)]
        )
        out.append((result, ann["image_id"], ann["category_id"]))
    return out


def test_ground_truth_masks_score_ap_1_and_moved_ones_less(
    coco_sample: Path, coco_instances: dict, tmp_path: Path
) -> None:
    # The sample repeats one annotation id (3937500, on both photos), and pycocotools keeps one
    # annotation per id: renumbered, every instance stays in the ground truth.
    renumbered = dict(coco_instances)
    renumbered["annotations"] = [
        dict(ann, id=k) for k, ann in enumerate(coco_instances["annotations"], start=1)
    ]
    gt_file = tmp_path / "instances.json"
    gt_file.write_text(json.dumps(renumbered))
    exact = _results_from_ground_truth(coco_instances)
    assert len(exact) == 40  # the sample's 43 instances less its 3 crowd regions
    path = tmp_path / "exact.json"
    entries = [
        e for result, image, category in exact for e in segm_entries(result, image, category)
    ]
    assert write_coco_results(path, entries) == 40
    written = json.loads(path.read_text())
    assert {type(e["segmentation"]["counts"]) for e in written} == {str}
    assert set(written[0]) == {"image_id", "category_id", "segmentation", "score"}
    assert coco_ap(gt_file, path) == pytest.approx(1.0)

    moved = _results_from_ground_truth(coco_instances, shift=4)
    entries = [
        e for result, image, category in moved for e in segm_entries(result, image, category)
    ]
    write_coco_results(path, entries)
    ap = coco_ap(gt_file, path)
    assert 0.0 < ap < 0.9

    # a wrong category is a miss for COCO: the ids are part of what it scores
    entries = [dict(e, category_id=e["category_id"] % 90 + 1) for e in entries]
    write_coco_results(path, entries)
    assert coco_ap(gt_file, path) < ap


def test_eval_records_keep_their_coco_ids_and_fall_back_on_the_union(tmp_path: Path) -> None:
    one = masks.encode(np.pad(np.ones((2, 2), bool), ((1, 1), (1, 1))))
    empty = masks.empty(4, 4)
    record = {"image": "/x/a.jpg", "phrase": "dog", "error_kind": None, "prediction": one}
    records = [
        {**record, "id": "1", "meta": {"image_id": 139, "category_id": 18},
         "instances": [{"score": 0.3}, {"score": 0.8}]},
        {**record, "id": "2", "meta": {"image_id": 139, "category_id": 18}, "prediction": empty},
        {**record, "id": "3", "meta": {"image_id": 139, "category_id": 18}, "error_kind": "parse"},
    ]  # fmt: skip
    (entry,) = eval_coco_results(records)
    assert (entry["image_id"], entry["category_id"], entry["score"]) == (139, 18, 0.8)
    assert masks.decode(entry["segmentation"]).sum() == 4
    # stored predictions give their instances one by one
    given = {"1": Result(4, 4, [Instance(one, score=0.5), Instance(one, score=0.2)]).to_dict()}
    assert [e["score"] for e in eval_coco_results(records, given)] == [0.5, 0.2]
    # without COCO ids on every record: ids from the file names and the phrases
    plain = [
        {**record, "id": "a", "image": "/d/cat_7.jpg", "phrase": "cat", "meta": {}},
        {**record, "id": "b", "image": "/d/cat_9.png", "phrase": "dog", "meta": {"image_id": 1}},
    ]
    assert [(e["image_id"], e["category_id"]) for e in eval_coco_results(plain)] == [
        (7, 1), (9, 2),
    ]  # fmt: skip


def test_ids_for_inputs_without_coco_ids() -> None:
    coco_names = ["/v/000000000139.jpg", "/v/COCO_val2014_000000000285.jpg", "/v/000000000139.jpg"]
    assert image_ids(coco_names) == [139, 285, 139]
    # numbers that collide, or a name without one: places in order of first appearance
    assert image_ids(["/a/1.jpg", "/b/1.jpg", "/a/1.jpg"]) == [1, 2, 1]
    assert image_ids(["/a/photo.jpg", "/a/12.jpg"]) == [1, 2]
    assert category_ids(["dog", "cat", "dog", None, None]) == [1, 2, 1, 3, 3]


def test_batch_records_write_every_instance_of_every_success() -> None:
    one = masks.encode(np.eye(3, dtype=bool))
    ok = Result(3, 3, [Instance(one, score=0.7), Instance(one, score=0.6)], phrase="x")
    records = [
        {"id": "1", "image_path": "/i/000000000005.jpg", **ok.to_dict()},
        {"id": "2", "image_path": "/i/000000000006.jpg", "phrase": "y", "error": "unreadable"},
        {"id": "3", "image_path": "/i/000000000006.jpg", **Result(3, 3, phrase="y").to_dict()},
    ]
    entries = batch_coco_results(records)
    assert [(e["image_id"], e["category_id"], e["score"]) for e in entries] == [
        (5, 1, 0.7), (5, 1, 0.6),
    ]  # fmt: skip


def test_writing_checks_every_entry_and_never_leaves_half_a_file(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    path.write_text("[]\n")
    good = segm_entries(Result(2, 2, [Instance(masks.empty(2, 2), score=0.1)]), 1, 1)[0]
    bad_rle = dict(good, segmentation={"size": [2, 2], "counts": [1, 1]})  # 2 of 4 pixels
    for entry, message in (
        (dict(good, image_id="1"), "image_id must be an integer"),
        (dict(good, category_id=True), "category_id must be an integer"),
        (dict(good, score=float("nan")), "score must be a number"),
        (bad_rle, "entry 1: RLE counts add up to 2 pixels"),
    ):
        with pytest.raises(InputError, match=message):
            write_coco_results(path, [good, entry])
        assert path.read_text() == "[]\n"
    assert not list(tmp_path.glob(".*part"))
