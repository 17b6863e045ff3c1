"""The embedded default segmenter on real photos with real weights."""

import numpy as np
import pytest

from refseg import masks
from refseg.image import load_image
from refseg.segmentation.onnx_sam import (
    INPUT_SIZE,
    PIXEL_MEAN,
    PIXEL_STD,
    preprocess,
    preprocess_shape,
    transform_coords,
)
from refseg.types import Prompt


def test_preprocess_shape_follows_sam_rounding():
    assert preprocess_shape(427, 640) == (683, 1024)  # 427 * 1.6 = 683.2
    assert preprocess_shape(640, 427) == (1024, 683)
    assert preprocess_shape(360, 640) == (576, 1024)
    assert preprocess_shape(2048, 2048) == (1024, 1024)


def test_preprocess_normalises_and_pads_bottom_right():
    image = np.full((100, 200, 3), 128, np.uint8)
    tensor = preprocess(image)
    assert tensor.shape == (1, 3, INPUT_SIZE, INPUT_SIZE) and tensor.dtype == np.float32
    expected = (128 - PIXEL_MEAN) / PIXEL_STD
    np.testing.assert_allclose(tensor[0, :, 0, 0], expected, rtol=1e-6)
    assert (tensor[0, :, 512:, :] == 0).all()  # 100 -> 512 rows, the rest is padding
    np.testing.assert_allclose(tensor[0, :, 511, 1023], expected, rtol=1e-6)


def test_transform_coords_scales_like_the_image():
    coords = transform_coords(np.array([[[640.0, 427.0], [0.0, 0.0]]]), 427, 640)
    np.testing.assert_allclose(coords[0, 0], [1024.0, 683.0], rtol=1e-6)


def coco_boxes(coco_instances, image_id):
    for ann in coco_instances["annotations"]:
        if ann["image_id"] == image_id and not ann["iscrowd"] and ann["area"] >= 400:
            x, y, w, h = ann["bbox"]
            yield (x, y, x + w, y + h), masks.normalize(ann["segmentation"])


def real_data_ious(sam, coco_sample, coco_instances, refine):
    ious = []
    for info in coco_instances["images"]:
        image = load_image(coco_sample / "images" / info["file_name"])
        assert image.shape[:2] == (info["height"], info["width"])
        embedding = sam.embed(image)
        pairs = list(coco_boxes(coco_instances, info["id"]))
        predictions = sam.predict(embedding, [Prompt(box=b) for b, _ in pairs], refine=refine)
        for prediction, (_, truth) in zip(predictions, pairs):
            assert prediction.mask.shape == image.shape[:2]
            ious.append(masks.iou(masks.encode(prediction.mask), truth))
    return ious


def test_oracle_boxes_reach_mean_iou_060_on_real_coco(sam, coco_sample, coco_instances):
    """Issue requirement: GT box of each non-crowd instance >= 400 px -> mean IoU >= 0.60."""
    default = real_data_ious(sam, coco_sample, coco_instances, refine=None)
    assert len(default) == 36
    assert np.mean(default) >= 0.60, np.mean(default)
    single = real_data_ious(sam, coco_sample, coco_instances, refine=0)
    assert np.mean(single) >= 0.60
    # The default (one refinement round) was chosen because it measured better; keep it honest.
    assert np.mean(default) >= np.mean(single)


def test_batched_predict_equals_one_by_one_and_reuses_embedding(sam, astronaut):
    embedding = sam.embed(astronaut)
    prompts = [
        Prompt(box=(140, 20, 320, 200)),
        Prompt(points=[(230, 110)]),
        Prompt(box=(350, 0, 460, 110), points=[(410, 60), (360, 100)], labels=[1, 0]),
    ]
    together = sam.predict(embedding, prompts)
    for prompt, joint in zip(prompts, together):
        alone = sam.predict(embedding, [prompt])[0]
        np.testing.assert_array_equal(alone.mask, joint.mask)
        assert alone.score == pytest.approx(joint.score)
        assert joint.low_res.shape == (256, 256)
    # A foreground point lies inside its own mask on this photo (the face).
    assert together[1].mask[110, 230]


def test_mask_input_is_used(sam, astronaut):
    embedding = sam.embed(astronaut)
    first = sam.predict(embedding, [Prompt(box=(140, 20, 320, 200))], refine=0)[0]
    fed = Prompt(box=(140, 20, 320, 200), mask_input=first.low_res)
    refined = sam.predict(embedding, [fed], refine=0)[0]
    assert refined.mask.shape == first.mask.shape
    assert not np.array_equal(refined.low_res, first.low_res)


def test_embedding_from_other_backend_is_refused(sam, astronaut):
    from refseg.errors import ModelError
    from refseg.segmentation.base import Embedding

    with pytest.raises(ModelError):
        sam.predict(Embedding(8, 8, None, "other"), [Prompt(points=[(1, 1)])])


def test_device_selection(astronaut):
    from refseg.errors import ModelError
    from refseg.segmentation import load_segmenter

    cpu = load_segmenter("onnx-sam", device="cpu")
    assert cpu.encoder.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="no CUDA provider"):
        load_segmenter("onnx-sam", device="cuda:0")


# --- extreme aspect ratios and refinement passes ----------------------------------------------


@pytest.mark.parametrize("shape", [(1, 2049), (2049, 1), (2, 6000), (1, 1)])
def test_extremely_elongated_images_segment(sam, shape):
    """SAM's resize rounds the short side of a >2048:1 image to 0; it must still work."""
    height, width = shape
    image = np.full((height, width, 3), 30, np.uint8)
    if width > 1:
        image[:, : width // 2] = 230  # a bright left half to find
    embedding = sam.embed(image)
    box = Prompt(box=(0.0, 0.0, float(max(1, width // 2)), float(height)))
    [prediction] = sam.predict(embedding, [box])
    assert prediction.mask.shape == (height, width)
    if width > 1000:
        left, right = prediction.mask[:, : width // 2], prediction.mask[:, width // 2 :]
        assert left.mean() > 0.8 and right.mean() < 0.2


def test_refine_round_equals_feeding_back_the_first_low_res(sam, astronaut):
    """Intermediate passes may skip the full-size mask: their low-res logits are the same."""
    embedding = sam.embed(astronaut)
    box = (150.0, 40.0, 370.0, 260.0)
    [first] = sam.predict(embedding, [Prompt(box=box)], refine=0)
    [manual] = sam.predict(embedding, [Prompt(box=box, mask_input=first.low_res)], refine=0)
    [refined] = sam.predict(embedding, [Prompt(box=box)], refine=1)
    assert np.array_equal(refined.mask, manual.mask)
    assert refined.score == pytest.approx(manual.score, abs=1e-6)
