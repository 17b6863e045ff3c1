"""SAM and SAM 2 through transformers: the ``sam:ID`` and ``sam2:ID`` segmenters.

``ID`` is a hub id (``facebook/sam-vit-base``, ``facebook/sam2.1-hiera-tiny``) or a folder written
by ``save_pretrained``. This backend is for users with a GPU or who want checkpoints the ONNX
default does not cover; it runs the real PyTorch model on ``cuda`` when available.

Pre- and post-processing are done here rather than through transformers' processors, because the
SAM 2 processor (and the fast SAM one) need torchvision, which refseg does not depend on. They
follow the reference predictors and the transformers processors exactly:

* SAM: the long side is resized to the model's input size (1024) with PIL bilinear, pixels are
  normalised with the image-processor mean/std, the image is padded at the bottom and right;
  prompt coordinates are scaled by the resize factors; low-res logits are upsampled to the padded
  square, cropped to the resized image, then upsampled to the original size.
* SAM 2: the image is squashed to the square input size (no aspect ratio kept, no padding),
  coordinates are scaled per axis, and low-res logits are upsampled straight to the original size.

Prompts are batched: those sharing the same token layout (number of points, box or not, mask
input or not) run in one decoder forward over the shared embedding. Prompts of different layouts
are *not* padded into one forward: SAM's padding label ``-10`` zeroes a token's embedding but the
token still takes part in attention, so a padded prompt gets a different mask from the same
prompt alone. Grouping keeps ``predict(many)`` equal to ``predict`` one by one, and the usual
case, every instance a box plus the same number of points, is still a single forward.

One mask per prompt: the decoder's single-mask output (``multimask_output=False``), as the ONNX
backend does; SAM 2's decoder then falls back on its best multimask output when the single mask
is unstable, as the reference SAM 2 predictor does. ``multimask=True`` asks for the three
ambiguity masks instead and keeps the best-scoring one (useful for lone-point prompts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from refseg.errors import InputError, ModelError
from refseg.hub import resolve_device, resolve_dtype, resolve_source
from refseg.segmentation.base import Embedding, MaskPrediction
from refseg.types import Prompt

if TYPE_CHECKING:
    import torch

#: Refinement rounds when the caller does not choose: the same default as the ONNX backend
#: (measured there on the COCO sample); not re-measured for these checkpoints.
DEFAULT_REFINE = 1

#: ImageNet statistics on the 0-1 scale, SAM's processor defaults.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_RESCALE = 1 / 255

#: model_type values accepted for each family (hub SAM 2.1 checkpoints say ``sam2_video``; the
#: image model loads them, the video-only parts are unused).
FAMILIES: dict[str, tuple[str, ...]] = {"sam": ("sam",), "sam2": ("sam2", "sam2_video")}

#: Files fetched for a hub id: configs and safetensors weights, nothing else in the repository.
_HUB_PATTERNS = ["*.json", "*.safetensors"]


# --------------------------------------------------------------------------- pre/post-processing


@dataclass(frozen=True)
class Preprocessing:
    """How an image and its prompts are mapped into the model's square input, and back.

    Attributes:
        size: side of the square model input (1024 for the released checkpoints).
        mean, std: per-channel statistics on the 0-255 scale.
        squash: SAM 2 and SAM 3 resize to ``size x size`` directly; SAM keeps the aspect ratio
            and pads.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    squash: bool

    @classmethod
    def for_model(cls, family: str, size: int, folder: Path | None = None) -> Preprocessing:
        """Statistics from ``folder/preprocessor_config.json`` when present, SAM's otherwise.

        The input size always comes from the model config: the encoder's position embeddings
        fix it, so a processor config that disagrees cannot be followed anyway.
        """
        mean, std, rescale = DEFAULT_MEAN, DEFAULT_STD, DEFAULT_RESCALE
        if family == "sam3":  # SAM 3's processor normalises to [-1, 1]
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        path = folder / "preprocessor_config.json" if folder is not None else None
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ModelError(f"{path}: unreadable image-processor config ({exc})") from exc
            if raw.get("do_normalize", True):
                mean = tuple(float(v) for v in raw.get("image_mean", mean))  # type: ignore[assignment]
                std = tuple(float(v) for v in raw.get("image_std", std))  # type: ignore[assignment]
            else:
                mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
            rescale = (
                float(raw.get("rescale_factor", rescale)) if raw.get("do_rescale", True) else 1.0
            )
            if len(mean) != 3 or len(std) != 3:
                raise ModelError(f"{path}: image_mean/image_std need 3 values")
        # Rescale-then-normalise folded into one normalisation on the 0-255 scale.
        return cls(
            size=size,
            mean=tuple(m / rescale for m in mean),  # type: ignore[arg-type]
            std=tuple(s / rescale for s in std),  # type: ignore[arg-type]
            squash=family in ("sam2", "sam3"),
        )

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """Size of the image inside the model input (before padding)."""
        if self.squash:
            return self.size, self.size
        scale = self.size / max(height, width)
        # At least one pixel: images over 2048:1 would otherwise round a side to 0.
        return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))

    def image(self, image: np.ndarray) -> np.ndarray:
        """``uint8`` RGB ``(H, W, 3)`` -> ``float32 [1, 3, size, size]`` encoder input."""
        height, width = image.shape[:2]
        new_h, new_w = self.resized_shape(height, width)
        if self.squash:
            # SAM 2's reference transform resizes a float tensor with antialiasing, not a
            # rounded uint8 PIL image.
            import torch
            import torch.nn.functional as F

            tensor = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
            resized = F.interpolate(
                tensor, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
            )[0].numpy()
        else:
            pil = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
            resized = np.asarray(pil, dtype=np.float32).transpose(2, 0, 1)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        out = np.zeros((1, 3, self.size, self.size), dtype=np.float32)
        out[0, :, :new_h, :new_w] = (resized - mean) / std
        return out

    def coords(self, coords: np.ndarray, height: int, width: int) -> np.ndarray:
        """Pixel ``(..., 2)`` x/y coordinates of the original image -> model input coordinates."""
        new_h, new_w = self.resized_shape(height, width)
        out = np.array(coords, dtype=np.float32, copy=True)
        out[..., 0] *= new_w / width
        out[..., 1] *= new_h / height
        return out

    def masks(self, low_res: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Low-res logits ``[N, 1, h, w]`` -> logits ``[N, 1, height, width]`` of the original."""
        import torch.nn.functional as F

        low_res = low_res.float()
        if self.squash:
            return F.interpolate(low_res, (height, width), mode="bilinear", align_corners=False)
        new_h, new_w = self.resized_shape(height, width)
        padded = F.interpolate(
            low_res, (self.size, self.size), mode="bilinear", align_corners=False
        )
        cropped = padded[..., :new_h, :new_w]
        return F.interpolate(cropped, (height, width), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- loading helpers


def _model_type(folder: Path) -> str:
    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder / 'config.json'}: unreadable model config ({exc})") from exc


def _input_size(config: Any, family: str) -> int:
    """Side of the square model input, checked against the encoder's own size."""
    size = config.prompt_encoder_config.image_size
    if family == "sam":
        encoder = config.vision_config.image_size
    else:
        encoder = config.vision_config.backbone_config.image_size
    sizes = {int(v) for v in (encoder if isinstance(encoder, (list, tuple)) else [encoder])}
    if sizes != {int(size)}:
        raise ModelError(
            f"model config is inconsistent: prompt encoder expects {size}px inputs, the image"
            f" encoder {sorted(sizes)}"
        )
    return int(size)


def load_checkpoint(
    model_id: str,
    *,
    family: str,
    accepted: dict[str, tuple[str, ...]],
    model_class: str,
    device: str | None = None,
    dtype: str | None = None,
) -> tuple[Any, Path]:
    """Load ``model_id`` (hub id or folder) with ``transformers.<model_class>``, eval mode, on
    its device: ``(model, folder)``.

    The folder's ``model_type`` must be one of ``accepted[family]`` (a one-line
    :class:`ModelError` naming the family that would load it otherwise); safetensors only,
    never a pickle; a checkpoint with missing weights is refused rather than run half random.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype or "float32", torch_device)
    folder = resolve_source(model_id, family, patterns=_HUB_PATTERNS)
    model_type = _model_type(folder)
    if model_type not in accepted[family]:
        other = next((k for k, v in accepted.items() if model_type in v), None)
        hint = f"; load it as {other}:{model_id}" if other else ""
        raise ModelError(f"{model_id} holds a {model_type or 'unknown'} model, not {family}{hint}")
    try:
        import transformers
        from transformers.utils import logging as hf_logging

        model_cls = getattr(transformers, model_class)
        # Loading a checkpoint of a wider model type (sam2_video into Sam2Model) warns about the
        # mismatch; that is expected (its weights are a superset). The per-tensor loading bar is
        # noise for a CLI that prints one result line. Missing weights, the warning that does
        # matter, are checked below instead.
        verbosity = hf_logging.get_verbosity()
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            model, info = model_cls.from_pretrained(  # safetensors only: never a pickle
                str(folder),
                local_files_only=True,
                dtype=torch_dtype,
                output_loading_info=True,
                use_safetensors=True,
            )
        finally:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
    except ImportError as exc:
        raise ModelError(
            f"the {family}: model needs torch and transformers>=5 (pip install 'refseg[vlm]'):"
            f" {exc}"
        ) from exc
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load {family} model from {folder}: {message[:200]}") from exc
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelError(
            f"{folder} is not a complete {family} checkpoint: {len(missing)} weights missing"
            f" (e.g. {missing[0]})"
        )
    return model.to(torch_device).eval(), folder


def _batches(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- the segmenter


class HFSam:
    """A SAM or SAM 2 model from transformers, behind the :class:`Segmenter` protocol.

    Args:
        model: a loaded ``SamModel`` or ``Sam2Model`` (eval mode, on its device).
        family: ``"sam"`` or ``"sam2"``.
        preprocessing: the image/prompt mapping for this model.
        refine: decoder passes after the first that feed back its own low-res mask.
        multimask: ask for the three ambiguity masks and keep the best-scoring one.
        max_batch: most prompts decoded in one forward (bounds memory on big prompt lists).
        name: the backend name stamped on embeddings.
    """

    def __init__(
        self,
        model: Any,
        *,
        family: str,
        preprocessing: Preprocessing,
        refine: int = DEFAULT_REFINE,
        multimask: bool = False,
        max_batch: int = 32,
        name: str | None = None,
    ) -> None:
        if family not in FAMILIES:
            raise InputError(f"unknown SAM family {family!r}; use sam or sam2")
        if refine < 0:
            raise InputError(f"refine must be >= 0, got {refine}")
        if max_batch < 1:
            raise InputError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.family = family
        self.preprocessing = preprocessing
        self.refine = refine
        self.multimask = multimask
        self.max_batch = max_batch
        self.name = name or f"{family}:hf"
        first = next(model.parameters())
        self.device = first.device
        self.dtype = first.dtype

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        family: str = "sam",
        device: str | None = None,
        dtype: str | None = None,
        refine: int = DEFAULT_REFINE,
        multimask: bool = False,
        max_batch: int = 32,
    ) -> HFSam:
        """Load ``model_id`` (hub id or folder) as a ``family`` model.

        Args:
            model_id: hub id or local folder with ``config.json`` and safetensors weights.
            family: ``"sam"`` (SamModel) or ``"sam2"`` (Sam2Model).
            device: ``auto`` (default: CUDA if available, else CPU), ``cpu``, ``cuda[:N]``, ``mps``.
            dtype: ``float32`` (default), ``float16`` or ``bfloat16`` weights and activations.
            refine, multimask, max_batch: see :class:`HFSam`.
        """
        if family not in FAMILIES:
            raise InputError(f"unknown SAM family {family!r}; use sam or sam2")
        model_cls = "SamModel" if family == "sam" else "Sam2Model"
        model, folder = load_checkpoint(
            model_id,
            family=family,
            accepted=FAMILIES,
            model_class=model_cls,
            device=device,
            dtype=dtype,
        )
        preprocessing = Preprocessing.for_model(family, _input_size(model.config, family), folder)
        return cls(
            model,
            family=family,
            preprocessing=preprocessing,
            refine=refine,
            multimask=multimask,
            max_batch=max_batch,
            name=f"{family}:{model_id}",
        )

    # ----------------------------------------------------------------------- protocol

    def embed(self, image: np.ndarray) -> Embedding:
        """Run the image encoder once; the embedding serves any number of :meth:`predict` calls.

        SAM keeps its single ``[1, C, 64, 64]`` map; SAM 2 keeps all three feature levels (the
        two high-resolution ones feed the mask decoder's upsampling path).
        """
        import torch

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(
                f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {tuple(image.shape)}"
            )
        height, width = image.shape[:2]
        if height < 1 or width < 1:
            raise InputError("the image is empty")
        pixels = torch.from_numpy(self.preprocessing.image(image)).to(self.device, self.dtype)
        with torch.inference_mode():
            features = self.model.get_image_embeddings(pixels)
        if self.family == "sam":
            data = {"image_embeddings": features}
        else:
            data = {f"level{i}": level for i, level in enumerate(features)}
        return Embedding(height=height, width=width, data=data, backend=self.name)

    def predict(
        self, embedding: Embedding, prompts: Sequence[Prompt], *, refine: int | None = None
    ) -> list[MaskPrediction]:
        """One mask per prompt, in order; prompts of one layout share a decoder forward."""
        if embedding.backend != self.name:
            raise ModelError(f"embedding made by {embedding.backend}, not {self.name}")
        rounds = self.refine if refine is None else refine
        if rounds < 0:
            raise InputError(f"refine must be >= 0, got {rounds}")
        groups: dict[tuple[int, bool, bool], list[int]] = {}
        for index, prompt in enumerate(prompts):
            key = (len(prompt.points), prompt.box is not None, prompt.mask_input is not None)
            groups.setdefault(key, []).append(index)
        results: list[MaskPrediction | None] = [None] * len(prompts)
        for indices in groups.values():
            for chunk in _batches(indices, self.max_batch):
                batch = [prompts[i] for i in chunk]
                for index, prediction in zip(chunk, self._decode(embedding, batch, rounds)):
                    results[index] = prediction
        return [r for r in results if r is not None]

    # ----------------------------------------------------------------------- internals

    def _low_res_size(self) -> int:
        return (
            4
            * int(self.model.config.prompt_encoder_config.image_size)
            // int(self.model.config.prompt_encoder_config.patch_size)
        )

    def _image_embeddings(self, embedding: Embedding, n: int) -> Any:
        """The stored features viewed ``n`` times along the batch axis (no copy).

        Prompts go on the batch axis, not SAM's ``point_batch`` axis: with a mask input per
        prompt the decoder would otherwise pair every mask with every prompt.
        """
        data = embedding.data
        if self.family == "sam":
            return data["image_embeddings"].expand(n, -1, -1, -1)
        return [data[f"level{i}"].expand(n, -1, -1, -1) for i in range(len(data))]

    def _mask_input(self, mask: np.ndarray) -> np.ndarray:
        size = self._low_res_size()
        array = np.asarray(mask, dtype=np.float32)
        if array.size != size * size:
            raise InputError(
                f"mask_input must be the {size}x{size} low-res logits of this model,"
                f" got shape {array.shape}"
            )
        return array.reshape(1, size, size)

    def _decode(
        self, embedding: Embedding, prompts: Sequence[Prompt], rounds: int
    ) -> list[MaskPrediction]:
        import torch

        n = len(prompts)
        height, width = embedding.height, embedding.width
        pre = self.preprocessing
        inputs: dict[str, Any] = {"image_embeddings": self._image_embeddings(embedding, n)}
        if prompts[0].points:
            coords = np.array([p.points for p in prompts], dtype=np.float32)
            coords = pre.coords(coords, height, width)
            inputs["input_points"] = torch.from_numpy(coords)[:, None].to(self.device)
            labels = np.array([p.labels for p in prompts], dtype=np.int64)
            inputs["input_labels"] = torch.from_numpy(labels)[:, None].to(self.device)
        if prompts[0].box is not None:
            boxes = np.array([p.box for p in prompts], dtype=np.float32).reshape(n, 2, 2)
            boxes = pre.coords(boxes, height, width).reshape(n, 1, 4)
            inputs["input_boxes"] = torch.from_numpy(boxes).to(self.device)
        masks: torch.Tensor | None = None
        if prompts[0].mask_input is not None:
            stacked = np.stack([self._mask_input(p.mask_input) for p in prompts])
            masks = torch.from_numpy(stacked).to(self.device, self.dtype)
        rows = torch.arange(n, device=self.device)
        with torch.inference_mode():
            for _ in range(1 + rounds):
                out = self.model(**inputs, input_masks=masks, multimask_output=self.multimask)
                low = out.pred_masks[:, 0]  # [n, K, h, w]
                iou = out.iou_scores[:, 0]  # [n, K]
                best = iou.argmax(dim=-1)
                low = low[rows, best]  # [n, h, w]
                scores = iou[rows, best]
                masks = low[:, None].to(self.dtype)
            predictions = []
            for i in range(n):
                logits = low[i : i + 1, None]
                full = pre.masks(logits, height, width)[0, 0] > 0.0
                predictions.append(
                    MaskPrediction(
                        mask=full.cpu().numpy(),
                        score=float(scores[i].float()),
                        low_res=low[i].float().cpu().numpy(),
                    )
                )
        return predictions
