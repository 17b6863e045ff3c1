"""SAM through onnxruntime: any encoder/decoder pair in the standard SAM ONNX interface.

Encoder: ``image [1, 3, 1024, 1024]`` (normalised, padded) -> ``[1, 256, 64, 64]``.
Decoder: ``image_embeddings, point_coords, point_labels, mask_input, has_mask_input,
orig_im_size`` -> ``masks, iou_predictions, low_res_masks``; a box is two corner points labelled
2 and 3, and a prompt without a box ends with a padding point labelled -1.

Pre-processing follows SAM's own predictor: the long side is resized to 1024 with PIL bilinear
(antialiased), pixels are normalised with ImageNet statistics on the 0-255 scale, the image is
padded at the bottom and right, and prompt coordinates are scaled by the same factors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from refseg.errors import ModelError
from refseg.segmentation.base import Embedding, MaskPrediction
from refseg.types import Prompt

INPUT_SIZE = 1024
LOW_RES = 256
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

#: Refinement rounds used when the caller does not choose. Measured on the COCO sample (36 boxes):
#: mean IoU 0.631 with none, 0.654 with one round, 0.650 with two, 0.648 with three.
DEFAULT_REFINE = 1


def preprocess_shape(height: int, width: int, long_side: int = INPUT_SIZE) -> tuple[int, int]:
    """SAM's resized size: the long side becomes ``long_side``, rounding half up.

    The short side is kept at one pixel or more: SAM's own rule rounds it to 0 for images more
    elongated than 2048:1 (a 2049x1 strip), and a zero-sized resize fails.
    """
    scale = long_side / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


#: Normalisation as a per-channel lookup table: indexing a uint8 image into it is ~3x faster than
#: float arithmetic over the whole 1024-pixel tensor, and gives identical values.
_NORMALISE_LUT = (
    (np.arange(256, dtype=np.float32)[None, :] - PIXEL_MEAN[:, None]) / PIXEL_STD[:, None]
).astype(np.float32)


def preprocess(image: np.ndarray) -> np.ndarray:
    """``uint8`` RGB ``(H, W, 3)`` -> the encoder's ``float32 [1, 3, 1024, 1024]`` input."""
    height, width = image.shape[:2]
    new_h, new_w = preprocess_shape(height, width)
    resized = np.asarray(
        Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.uint8
    )
    tensor = np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for channel in range(3):
        np.take(
            _NORMALISE_LUT[channel], resized[:, :, channel], out=tensor[0, channel, :new_h, :new_w]
        )
    return tensor


def transform_coords(coords: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel coordinates of the original image -> coordinates in the resized encoder input."""
    new_h, new_w = preprocess_shape(height, width)
    out = np.asarray(coords, dtype=np.float32).copy()
    out[..., 0] *= new_w / width
    out[..., 1] *= new_h / height
    return out


def _session(path: Path, providers: Sequence | None, threads: int | None, *, arena: bool = True):
    """An onnxruntime session; ``arena=False`` returns each run's memory when it ends.

    onnxruntime's CPU arena keeps the peak of every run for the life of the session. That suits
    the encoder (one fixed input size) but not the decoder, whose buffers scale with the image
    and the prompt: one large request would otherwise pin gigabytes in a long-lived server.

    ``threads`` (default: the thread budget, :mod:`refseg.threads`) sizes the intra-op pool.
    With less than the whole budget (a server share, say) the pool's threads do not spin while
    waiting for work: spinning burns the cores the other concurrent calls were given.
    """
    import onnxruntime as ort

    from refseg.threads import thread_budget

    budget = thread_budget()
    threads = threads or budget
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if threads < budget:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    requested = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # A provider is a name or a (name, options) pair; keep those this onnxruntime build has.
    chosen = [p for p in requested if (p[0] if isinstance(p, tuple) else p) in available]
    chosen = chosen or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:
        raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc


class OnnxSam:
    """A SAM encoder/decoder pair run with onnxruntime (the embedded CPU default).

    Args:
        encoder: path of the image encoder ``.onnx``.
        decoder: path of the prompt decoder ``.onnx``.
        refine: decoder passes after the first that feed back its own low-res mask.
        providers: onnxruntime execution providers (CUDA first when available).
        threads: intra-op threads (the thread budget, :func:`refseg.threads.thread_budget`,
            when None).
    """

    def __init__(
        self,
        encoder: str | os.PathLike[str],
        decoder: str | os.PathLike[str],
        *,
        refine: int = DEFAULT_REFINE,
        providers: Sequence | None = None,
        threads: int | None = None,
        name: str = "onnx-sam",
    ) -> None:
        self.name = name
        self.refine = refine
        self.encoder = _session(Path(encoder), providers, threads)
        self.decoder = _session(Path(decoder), providers, threads, arena=False)
        self._encoder_input = self.encoder.get_inputs()[0].name
        shape = self.encoder.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != [INPUT_SIZE, INPUT_SIZE]:
            raise ModelError(
                f"{encoder}: expected a SAM encoder input [1,3,1024,1024], got {shape}"
            )
        names = {i.name for i in self.decoder.get_inputs()}
        needed = {
            "image_embeddings",
            "point_coords",
            "point_labels",
            "mask_input",
            "has_mask_input",
            "orig_im_size",
        }
        if not needed <= names:
            raise ModelError(
                f"{decoder}: not a SAM decoder, missing inputs {sorted(needed - names)}"
            )

    @classmethod
    def default(cls, **kwargs) -> OnnxSam:
        """The embedded default weights (fetched and verified on first use)."""
        from refseg.segmentation.weights import default_sam_onnx

        encoder, decoder = default_sam_onnx()
        return cls(encoder, decoder, **kwargs)

    def encode_tensor(self, tensor: np.ndarray) -> np.ndarray:
        """Run the bare encoder on an already pre-processed tensor."""
        return self.encoder.run(None, {self._encoder_input: tensor})[0]

    def embed(self, image: np.ndarray) -> Embedding:
        height, width = image.shape[:2]
        features = self.encode_tensor(preprocess(image))
        return Embedding(height=height, width=width, data=features, backend=self.name)

    def predict(
        self, embedding: Embedding, prompts: Sequence[Prompt], *, refine: int | None = None
    ) -> list[MaskPrediction]:
        """One mask per prompt.

        The standard SAM decoder export fixes the prompt batch at 1, so prompts run one after
        another on the shared embedding (each costs a decoder pass, not an encoder pass).
        """
        if embedding.backend != self.name:
            raise ModelError(f"embedding made by {embedding.backend}, not {self.name}")
        rounds = self.refine if refine is None else refine
        return [self._predict_one(embedding, prompt, rounds) for prompt in prompts]

    def _predict_one(self, embedding: Embedding, prompt: Prompt, rounds: int) -> MaskPrediction:
        height, width = embedding.height, embedding.width
        coords: list[tuple[float, float]] = list(prompt.points)
        labels: list[float] = [float(v) for v in prompt.labels]
        if prompt.box is not None:
            x1, y1, x2, y2 = prompt.box
            coords += [(x1, y1), (x2, y2)]
            labels += [2.0, 3.0]
        else:
            coords.append((0.0, 0.0))
            labels.append(-1.0)
        # The standard export crops its upsampled logits to SAM's rounded resize of
        # ``orig_im_size``, which is 0 pixels on one side past 2048:1. For such images ask for
        # the logits at the encoder's own resized size and upsample them here instead.
        scale = INPUT_SIZE / max(height, width)
        elongated = min(int(height * scale + 0.5), int(width * scale + 0.5)) < 1
        out_size = preprocess_shape(height, width) if elongated else (height, width)
        feeds = {
            "image_embeddings": embedding.data,
            "point_coords": transform_coords(np.array([coords], dtype=np.float32), height, width),
            "point_labels": np.array([labels], dtype=np.float32),
        }
        mask_input = prompt.mask_input
        passes = 1 + max(0, rounds)
        for index in range(passes):
            # Only the last pass's full-size mask is used; earlier passes feed back their
            # low-res logits, which do not depend on ``orig_im_size``. Asking them for the small
            # resized size skips a full-resolution upsampling per round on large images.
            size = out_size if index == passes - 1 else preprocess_shape(height, width)
            feeds["orig_im_size"] = np.array(size, dtype=np.float32)
            if mask_input is None:
                feeds["mask_input"] = np.zeros((1, 1, LOW_RES, LOW_RES), dtype=np.float32)
                feeds["has_mask_input"] = np.zeros(1, dtype=np.float32)
            else:
                feeds["mask_input"] = np.asarray(mask_input, np.float32).reshape(
                    1, 1, LOW_RES, LOW_RES
                )
                feeds["has_mask_input"] = np.ones(1, dtype=np.float32)
            masks, scores, low_res = self.decoder.run(None, feeds)
            mask_input = low_res[0, 0]
        logits = masks[0, 0]
        if elongated:
            logits = _upsample(logits, height, width)
        return MaskPrediction(mask=logits > 0.0, score=float(scores[0, 0]), low_res=low_res[0, 0])


def _upsample(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float logit map to ``height x width`` (PIL's ``F`` mode)."""
    image = Image.fromarray(np.ascontiguousarray(logits, dtype=np.float32))  # mode F
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
