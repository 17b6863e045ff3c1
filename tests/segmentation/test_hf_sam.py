"""The ``sam:`` / ``sam2:`` segmenters on tiny, randomly initialised transformers models.

The models are built offline from small configs, saved with ``save_pretrained`` and loaded
through ``load_segmenter`` exactly as a user's folder would be; every test runs the real forward
path. Reference outputs come from transformers itself: its PIL SAM processor (pre- and
post-processing) and the model's own full forward on pixels.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from refseg.errors import InputError, ModelError  # noqa: E402
from refseg.segmentation import Embedding, MaskPrediction, Segmenter, load_segmenter  # noqa: E402
from refseg.segmentation.hf_sam import HFSam, Preprocessing  # noqa: E402
from refseg.testing.compare import assert_masks_agree  # noqa: E402
from refseg.testing.tiny_trackers import save_tracker_model, tiny_sam2_vision_config  # noqa: E402
from refseg.types import Prompt  # noqa: E402

SIZE = 128  # model input side: 8x8 embeddings, 32x32 low-res masks
LOW = 32
DECODER = {
    "hidden_size": 32,
    "mlp_dim": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "iou_head_hidden_dim": 32,
}
PROMPT_ENCODER = {"hidden_size": 32, "image_size": SIZE, "patch_size": 16, "mask_input_channels": 8}


def _full_logits(seg, prediction, image) -> np.ndarray:
    """A prediction's full-resolution logits: its low-res logits upsampled as predict does."""
    low = torch.from_numpy(prediction.low_res)[None, None]
    return seg.preprocessing.masks(low, *image.shape[:2])[0, 0].numpy()


def _sam_config():
    return transformers.SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": SIZE,
            "patch_size": 16,
            "window_size": 4,
            "global_attn_indexes": [1],
            "mlp_dim": 64,
            "num_pos_feats": 16,
        },
        prompt_encoder_config=PROMPT_ENCODER,
        mask_decoder_config=DECODER,
    )


def _sam2_parts() -> dict:
    return {
        "vision_config": tiny_sam2_vision_config(SIZE, fpn_hidden=32),
        "prompt_encoder_config": PROMPT_ENCODER,
        "mask_decoder_config": DECODER,
    }


def _spread_weights(model) -> None:
    """Random init in these configs gives logits ~1e-5 (SAM's vision init std is 1e-10), which
    would make thresholded masks meaningless; give every matrix a unit-gain scale instead (the
    random-Fourier positional matrices keep their own scale)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "positional_embedding" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param[0].numel()))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-sam")
    torch.manual_seed(0)
    models = {
        "sam": transformers.SamModel(_sam_config()),
        "sam2": transformers.Sam2Model(transformers.Sam2Config(**_sam2_parts())),
    }
    out = {}
    for family, model in models.items():
        _spread_weights(model)
        model.save_pretrained(root / family)
        out[family] = root / family
    return out


@pytest.fixture(scope="module")
def segmenters(folders) -> dict[str, HFSam]:
    return {
        family: load_segmenter(f"{family}:{folder}", device="cpu")
        for family, folder in folders.items()
    }


@pytest.fixture(scope="module")
def image(astronaut) -> np.ndarray:
    """Not square and odd-sized, so padding, cropping and per-axis scaling all matter."""
    return np.ascontiguousarray(
        astronaut[40:343, 11:468]
    )  # 303 x 457: resized height 84.9 rounds up


def _prompts(image: np.ndarray) -> list[Prompt]:
    """Three layouts (box+1 point, box only, 2 points) interleaved, two prompts each."""
    return [
        Prompt(box=(150, 20, 330, 290), points=[(240, 120)]),
        Prompt(box=(10, 5, 120, 200)),
        Prompt(points=[(60, 250), (400, 40)], labels=[1, 0]),
        Prompt(box=(300, 100, 450, 300), points=[(380, 200)]),
        Prompt(points=[(200, 150), (20, 20)], labels=[1, 1]),
        Prompt(box=(0, 0, 457, 303)),
    ]


FAMILIES = ["sam", "sam2"]


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("family", FAMILIES)
def test_protocol_shapes_and_one_mask_per_prompt(segmenters, image, family):
    seg = segmenters[family]
    assert isinstance(seg, Segmenter)
    assert seg.name.startswith(f"{family}:")
    embedding = seg.embed(image)
    assert (embedding.height, embedding.width) == image.shape[:2]
    assert embedding.nbytes > 0
    prompts = _prompts(image)
    predictions = seg.predict(embedding, prompts, refine=0)
    assert len(predictions) == len(prompts)
    for prediction in predictions:
        assert isinstance(prediction, MaskPrediction)
        assert prediction.mask.shape == image.shape[:2] and prediction.mask.dtype == bool
        assert prediction.low_res.shape == (LOW, LOW)
        assert math.isfinite(prediction.score)
    # Random weights still give prompt-dependent, non-trivial masks.
    areas = {int(p.mask.sum()) for p in predictions}
    assert len(areas) > 1
    assert any(0 < a < image.shape[0] * image.shape[1] for a in areas)


@pytest.mark.parametrize("family", FAMILIES)
def test_full_resolution_mask_is_the_upsampled_low_res(segmenters, image, family):
    """The returned mask is exactly the thresholded upsampling of the returned logits."""
    seg = segmenters[family]
    prediction = seg.predict(seg.embed(image), _prompts(image)[:1], refine=0)[0]
    logits = torch.from_numpy(prediction.low_res)[None, None]
    full = seg.preprocessing.masks(logits, *image.shape[:2])[0, 0].numpy()
    assert_masks_agree(prediction.mask, full > 0, full, eps=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_by_one_in_one_forward_per_layout(segmenters, image, family):
    seg = segmenters[family]
    embedding = seg.embed(image)
    prompts = _prompts(image)
    calls = []
    real_forward = seg.model.forward

    def counting_forward(*args, **kwargs):
        calls.append(kwargs["image_embeddings"])
        return real_forward(*args, **kwargs)

    seg.model.forward = counting_forward
    try:
        batched = seg.predict(embedding, prompts, refine=0)
        assert len(calls) == 3  # three layouts, six prompts
        single = [seg.predict(embedding, [p], refine=0)[0] for p in prompts]
    finally:
        del seg.model.forward
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.low_res, b.low_res, atol=1e-5)
        # Batching changes float rounding, so a pixel may flip only where the logit is within
        # the low-res difference of 0 (upsampling cannot enlarge that difference).
        eps = float(np.abs(a.low_res - b.low_res).max()) + 1e-6
        assert_masks_agree(a.mask, b.mask, _full_logits(seg, b, image), eps=eps)
        assert a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_embedding_reused_encoder_runs_once(segmenters, image, family):
    seg = segmenters[family]
    calls = []
    real = seg.model.get_image_embeddings

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    seg.model.get_image_embeddings = counting
    try:
        embedding = seg.embed(image)
        before = {k: v.clone() for k, v in embedding.data.items()}
        first = seg.predict(embedding, _prompts(image)[:2], refine=1)
        second = seg.predict(embedding, _prompts(image)[:2], refine=1)
    finally:
        del seg.model.get_image_embeddings
    assert len(calls) == 1
    for key, value in before.items():
        assert torch.equal(value, embedding.data[key])  # predict never mutates the embedding
    for a, b in zip(first, second):
        np.testing.assert_allclose(a.low_res, b.low_res, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_refine_rounds_feed_back_the_low_res_mask(segmenters, image, family):
    """``refine=1`` is exactly: predict, then predict again with its logits as ``mask_input``."""
    seg = segmenters[family]
    embedding = seg.embed(image)
    prompts = _prompts(image)[:3]
    plain = seg.predict(embedding, prompts, refine=0)
    refined = seg.predict(embedding, prompts, refine=1)
    manual = seg.predict(
        embedding,
        [
            Prompt(box=p.box, points=p.points, labels=p.labels, mask_input=q.low_res)
            for p, q in zip(prompts, plain)
        ],
        refine=0,
    )
    for r, m, p in zip(refined, manual, plain):
        np.testing.assert_allclose(r.low_res, m.low_res, atol=1e-5)
        assert not np.allclose(r.low_res, p.low_res)
    assert len(seg.predict(embedding, prompts, refine=2)) == 3


def test_default_refine_comes_from_load_segmenter(folders, image):
    seg = load_segmenter(f"sam:{folders['sam']}", device="cpu", refine=0)
    assert seg.refine == 0
    embedding = seg.embed(image)
    prompt = _prompts(image)[:1]
    np.testing.assert_allclose(
        seg.predict(embedding, prompt)[0].low_res,
        seg.predict(embedding, prompt, refine=0)[0].low_res,
        rtol=0,
        atol=1e-6,
    )


def test_multimask_keeps_the_best_of_three(folders, image):
    seg = HFSam.from_pretrained(str(folders["sam"]), family="sam", device="cpu", multimask=True)
    prompt = _prompts(image)[0]
    embedding = seg.embed(image)
    prediction = seg.predict(embedding, [prompt], refine=0)[0]
    height, width = image.shape[:2]
    point = seg.preprocessing.coords(np.array([[prompt.points[0]]]), height, width)
    box = seg.preprocessing.coords(np.array(prompt.box).reshape(2, 2), height, width)
    with torch.no_grad():
        out = seg.model(
            image_embeddings=embedding.data["image_embeddings"],
            input_points=torch.from_numpy(point)[None],
            input_labels=torch.tensor([[[1]]]),
            input_boxes=torch.from_numpy(box.reshape(1, 1, 4)),
            multimask_output=True,
        )
    scores = out.iou_scores[0, 0]
    assert scores.shape == (3,)
    best = int(scores.argmax())
    assert prediction.score == pytest.approx(float(scores[best]), abs=1e-5)
    np.testing.assert_allclose(prediction.low_res, out.pred_masks[0, 0, best].numpy(), atol=1e-5)


# --------------------------------------------------------------------------- vs transformers


def _pil_processor():
    processor = transformers.SamImageProcessorPil(
        size={"longest_edge": SIZE}, pad_size={"height": SIZE, "width": SIZE}
    )
    return transformers.SamProcessor(image_processor=processor)


def test_sam_matches_transformers_processor_and_forward(segmenters, image):
    """Our preprocessing, prompt transform, batching and postprocessing against transformers'
    PIL processor plus the model's full forward on pixels (prompts on the point-batch axis)."""
    seg = segmenters["sam"]
    prompts = [p for p in _prompts(image) if p.box is not None and len(p.points) == 1]
    processor = _pil_processor()
    inputs = processor(
        images=image,
        input_points=[[[list(p.points[0])] for p in prompts]],
        input_labels=[[[1] for _ in prompts]],
        input_boxes=[[list(p.box) for p in prompts]],
        return_tensors="pt",
    )
    ours = seg.preprocessing.image(image)
    np.testing.assert_allclose(ours, inputs["pixel_values"].numpy(), atol=1e-5)
    with torch.no_grad():
        out = seg.model(
            pixel_values=inputs["pixel_values"],
            input_points=inputs["input_points"],
            input_labels=inputs["input_labels"],
            input_boxes=inputs["input_boxes"],
            multimask_output=False,
        )
    reference = processor.image_processor.post_process_masks(
        [out.pred_masks[0]], inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0][:, 0]
    predictions = seg.predict(seg.embed(image), prompts, refine=0)
    for i, prediction in enumerate(predictions):
        np.testing.assert_allclose(prediction.low_res, out.pred_masks[0, i, 0].numpy(), atol=1e-4)
        assert prediction.score == pytest.approx(float(out.iou_scores[0, i, 0]), abs=1e-4)
        eps = float(np.abs(prediction.low_res - out.pred_masks[0, i, 0].numpy()).max()) + 1e-5
        assert_masks_agree(
            prediction.mask, reference[i].numpy(), _full_logits(seg, prediction, image), eps=eps
        )


def test_sam_postprocessing_matches_processor():
    processor = transformers.SamImageProcessorPil(pad_size={"height": SIZE, "width": SIZE})
    pre = Preprocessing.for_model("sam", SIZE)
    logits = torch.randn(3, 1, LOW, LOW, generator=torch.Generator().manual_seed(1))
    for height, width in [(303, 457), (301, 457), (640, 427), (50, 50)]:
        reshaped = pre.resized_shape(height, width)
        reference = processor.post_process_masks(
            [logits], [(height, width)], [reshaped], binarize=False
        )[0]
        np.testing.assert_allclose(
            pre.masks(logits, height, width).numpy(), reference.numpy(), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_coordinates_follow_the_resize(family):
    pre = Preprocessing.for_model(family, SIZE)
    corner = pre.coords(np.array([[457.0, 303.0]]), 303, 457)[0]
    new_h, new_w = pre.resized_shape(303, 457)
    np.testing.assert_allclose(corner, [new_w, new_h], rtol=1e-6)
    if family == "sam":
        assert (new_h, new_w) == (85, SIZE)  # aspect kept, then padded
    else:
        assert (new_h, new_w) == (SIZE, SIZE)  # squashed


def test_sam2_matches_full_forward(segmenters, image):
    """SAM 2's prompts on the batch axis over a reused embedding equal the model's own forward
    on pixels with the prompts on the point-batch axis."""
    seg = segmenters["sam2"]
    prompts = [p for p in _prompts(image) if p.box is not None and len(p.points) == 1]
    height, width = image.shape[:2]
    pre = seg.preprocessing
    points = pre.coords(np.array([[p.points[0]] for p in prompts], np.float32), height, width)
    boxes = pre.coords(
        np.array([p.box for p in prompts], np.float32).reshape(-1, 2, 2), height, width
    )
    with torch.no_grad():
        out = seg.model(
            pixel_values=torch.from_numpy(pre.image(image)),
            input_points=torch.from_numpy(points)[None],
            input_labels=torch.ones(1, len(prompts), 1, dtype=torch.long),
            input_boxes=torch.from_numpy(boxes.reshape(1, -1, 4)),
            multimask_output=False,
        )
    predictions = seg.predict(seg.embed(image), prompts, refine=0)
    for i, prediction in enumerate(predictions):
        np.testing.assert_allclose(prediction.low_res, out.pred_masks[0, i, 0].numpy(), atol=1e-4)
        assert prediction.score == pytest.approx(float(out.iou_scores[0, i, 0]), abs=1e-4)


def test_sam2_resize_squashes_like_a_bilinear_resize(image):
    """Antialiased bilinear squash to the square input: close to PIL's bilinear resize of the
    same image (they differ only by uint8 rounding), with no padding."""
    from PIL import Image

    pre = Preprocessing.for_model("sam2", SIZE)
    ours = pre.image(image)[0]
    pil = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    expected = (pil.transpose(2, 0, 1) - np.array(pre.mean)[:, None, None]) / np.array(pre.std)[
        :, None, None
    ]
    assert np.abs(ours - expected).max() < 2.0 / 255 / 0.224 + 1e-4


def test_preprocessor_config_statistics_are_used(folders, image, tmp_path):
    folder = tmp_path / "sam-stats"
    shutil.copytree(folders["sam"], folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})
    )
    seg = load_segmenter(f"sam:{folder}", device="cpu")
    pixels = seg.preprocessing.image(image)
    processor = transformers.SamImageProcessorPil(
        size={"longest_edge": SIZE},
        pad_size={"height": SIZE, "width": SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    np.testing.assert_allclose(
        pixels, processor(image, return_tensors="np")["pixel_values"], atol=1e-5
    )
    assert pixels[0, :, :85].min() >= -1.0 - 1e-6 and pixels[0, :, :85].max() <= 1.0 + 1e-6


def test_sam2_video_checkpoint_loads_as_sam2(tmp_path, image):
    """Hub SAM 2.1 folders say ``model_type: sam2_video``; the image model loads their weights."""
    folder = save_tracker_model(tmp_path / "video", "sam2-video")
    video = transformers.Sam2VideoModel.from_pretrained(folder)
    seg = load_segmenter(f"sam2:{folder}", device="cpu")
    saved = video.state_dict()
    for key, value in seg.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert len(seg.predict(seg.embed(image), _prompts(image)[:2])) == 2


def test_bfloat16_runs(folders, image):
    seg = HFSam.from_pretrained(str(folders["sam"]), family="sam", device="cpu", dtype="bfloat16")
    assert seg.dtype == torch.bfloat16
    prediction = seg.predict(seg.embed(image), _prompts(image)[:1])[0]
    assert prediction.mask.shape == image.shape[:2] and prediction.low_res.dtype == np.float32


# --------------------------------------------------------------------------- errors


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_folder_is_one_line_model_error(tmp_path):
    with pytest.raises(ModelError) as exc:
        load_segmenter(f"sam:{tmp_path / 'nope'}")
    assert "no such model folder" in _one_line(exc)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError) as exc:
        load_segmenter(f"sam2:{tmp_path}")
    assert "config.json" in _one_line(exc)


def test_incomplete_checkpoint_is_refused(folders, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(folders["sam"], folder)
    weights = load_file(folder / "model.safetensors")
    dropped = [k for k in weights if k.startswith("mask_decoder.iou_prediction_head")]
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped}, folder / "model.safetensors")
    with pytest.raises(ModelError) as exc:
        load_segmenter(f"sam:{folder}", device="cpu")
    assert "weights missing" in _one_line(exc)


def test_a_pickle_instead_of_safetensors_is_one_line_and_never_loaded(folders, tmp_path):
    """Issue 22: a folder whose weights are ``pytorch_model.bin`` (a pickle) is refused by
    transformers' weights-only unpickler with a traceback; safetensors only, one line."""
    import pickle

    folder = tmp_path / "pickled"
    shutil.copytree(folders["sam"], folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelError) as exc:
        load_segmenter(f"sam:{folder}", device="cpu")
    assert "safetensors" in _one_line(exc)


def test_empty_spec_is_input_error():
    with pytest.raises(InputError):
        load_segmenter("sam:")


def test_wrong_family_names_the_right_one(folders):
    with pytest.raises(ModelError) as exc:
        load_segmenter(f"sam:{folders['sam2']}", device="cpu")
    assert "sam2:" in _one_line(exc)


def test_uncached_hub_id_fails_fast_offline(monkeypatch, tmp_path):
    import time

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(ModelError) as exc:
        load_segmenter("sam:refseg-tests/not-a-model", device="cpu")
    assert time.monotonic() - start < 10
    message = _one_line(exc)
    assert "refseg-tests/not-a-model" in message and "folder" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_clear(folders):
    with pytest.raises(ModelError) as exc:
        load_segmenter(f"sam:{folders['sam']}", device="cuda")
    assert "CUDA" in _one_line(exc)


def test_bad_device_and_dtype(folders):
    with pytest.raises(InputError):
        HFSam.from_pretrained(str(folders["sam"]), device="toaster")
    with pytest.raises(InputError):
        HFSam.from_pretrained(str(folders["sam"]), device="cpu", dtype="int8")


def test_bad_inputs_at_predict(segmenters, image):
    seg = segmenters["sam"]
    embedding = seg.embed(image)
    with pytest.raises(InputError):
        seg.predict(embedding, [Prompt(box=(0, 0, 10, 10), mask_input=np.zeros((8, 8)))])
    with pytest.raises(InputError):
        seg.predict(embedding, _prompts(image)[:1], refine=-1)
    with pytest.raises(ModelError):
        seg.predict(Embedding(height=1, width=1, data={}, backend="onnx-sam"), _prompts(image)[:1])
    with pytest.raises(InputError):
        seg.embed(image.astype(np.float32))
    assert seg.predict(embedding, []) == []
