"""COCO polygons drawn as the REFER API's ``getMask`` draws them, vertices far outside included.

REFER's ``getMask`` hands an annotation's polygons to ``pycocotools.mask.frPyObjects`` as they
are, decodes and sums the parts; a pixel is in the object when that sum is non-zero. Each row
below checks refseg's mask against that, pixel for pixel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from refseg import masks
from refseg.data import open_dataset
from refseg.data.coco import segmentation_to_rle
from refseg.errors import InputError
from tests.data.helpers import write_refer

H, W = 48, 64


def refer_get_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """What REFER's getMask makes of a polygon annotation (non-zero = object)."""
    decoded = mask_utils.decode(mask_utils.frPyObjects(polygons, height, width))
    return decoded.sum(axis=2) > 0


def _random_far_polygons(seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    reach = float(rng.choice([70.0, 400.0, 5000.0]))
    return [rng.uniform(-reach, max(H, W) + reach, size=int(rng.integers(3, 9)) * 2).tolist()]


POLYGONS = [
    pytest.param([[10, 10, 30, 10, 30, 20, 10, 20]], id="inside"),
    pytest.param([[-500.0, 10.0, 30.0, -700.0, 40.0, 35.0]], id="two-vertices-far-out"),
    pytest.param([[-100.3, -80.7, 170.2, 5.5, 20.9, 130.1]], id="covering-corner"),
    pytest.param([[5, 5, 60, 5, 60, 40], [-300, 20, 10, 47, 12, 90]], id="two-parts-one-far"),
    pytest.param(
        [[0, 0, 40, 0, 40, 40, 0, 40], [20, 20, 60, 20, 60, 45, 20, 45]], id="overlapping-parts"
    ),
    *(pytest.param(_random_far_polygons(seed), id=f"random-{seed}") for seed in range(24)),
]


@pytest.mark.parametrize("polygons", POLYGONS)
def test_in_image_pixels_match_refer_get_mask(polygons: list[list[float]]) -> None:
    """Before: polygons reaching more than 64 px out were clipped first, and 2-3 edge pixels
    inside the image differed from REFER."""
    ours = masks.decode(segmentation_to_rle(polygons, H, W)).astype(bool)
    assert np.array_equal(ours, refer_get_mask(polygons, H, W))


def test_a_first_part_of_two_vertices_is_dropped_where_refer_raises() -> None:
    degenerate, triangle = [5.0, 5.0, 40.0, 30.0], [2.0, 2.0, 50.0, 3.0, 20.0, 40.0]
    with pytest.raises(TypeError):  # REFER cannot read it: pycocotools takes it for a box
        refer_get_mask([degenerate, triangle], H, W)
    ours = masks.decode(segmentation_to_rle([degenerate, triangle], H, W)).astype(bool)
    # refseg draws the rest, as pycocotools draws the same part in a later position
    assert np.array_equal(ours, refer_get_mask([triangle], H, W))
    assert np.array_equal(ours, refer_get_mask([triangle, degenerate], H, W))


@pytest.mark.parametrize("far", [1e9, 1e15])
def test_coordinates_unsafe_for_pycocotools_are_clipped(far: float) -> None:
    """Far beyond what pycocotools' 32-bit arithmetic holds: clipped (REFER cannot draw these)."""
    polygon = [[-far, -far, far, -far, far, far, -far, far]]
    assert masks.area([segmentation_to_rle(polygon, H, W)])[0] == H * W


def test_an_outline_past_the_perimeter_bound_is_clipped_not_walked() -> None:
    """Unclipped, pycocotools would walk a 10^7-pixel outline (about a gigabyte)."""
    polygon = [[-1e7, 10, 30, -1e7, 40, 35]]
    rle = segmentation_to_rle(polygon, H, W)
    assert masks.area([rle])[0] > 0


def test_bad_coordinates_stay_one_line_errors() -> None:
    with pytest.raises(InputError, match="finite"):
        segmentation_to_rle([[0, 0, float("nan"), 1, 2, 2]], H, W)


def test_refcoco_reader_draws_far_polygons_as_refer(tmp_path: Path) -> None:
    root = write_refer(tmp_path / "refcoco", "unc")
    instances = json.loads((root / "instances.json").read_text())
    ann = instances["annotations"][0]
    image = next(i for i in instances["images"] if i["id"] == ann["image_id"])
    far = [-400.0, 10.0, 30.0, -600.0, image["width"] + 300.0, image["height"] - 5.0]
    ann["segmentation"] = [far]
    (root / "instances.json").write_text(json.dumps(instances))
    sample = next(s for s in open_dataset(f"refcoco:{root}") if ann["id"] in s.meta["ann_ids"])
    expected = refer_get_mask([far], image["height"], image["width"])
    assert np.array_equal(masks.decode(sample.masks[0]).astype(bool), expected)
