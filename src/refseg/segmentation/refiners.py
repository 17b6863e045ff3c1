"""Refiners: a coarse mask (a rasterized path answer) in, a detailed mask out.

The path mask head (Moondream Segmentation's design) has the grounder write an outline, which
is rasterized (:mod:`refseg.paths`) into a coarse mask; a refiner then turns the
coarse mask into the final one, iterating ``n`` times on its own output. One protocol serves
every refiner: :meth:`Refiner.refine` ``(image, embedding, coarse mask, box) -> RefineOutput``,
and :func:`run_refiner` iterates it. The image's embedding is made once by the caller and shared
by every instance and iteration.

Refiners (selected with ``--refiner``, built by :func:`load_refiner`):

* ``none``: the raster as is.
* ``sam-raw``: the segmenter's decoder (SAM's ``mask_input`` is made for exactly this: a
  previous low-resolution logit mask) prompted with the coarse mask in SAM's 256x256 low-res
  frame, the box, and one interior point (the coarse mask's most interior pixel).
* ``sam`` (the default when refining): ``sam-raw`` behind an agreement gate. Measured on the
  COCO sample (README, "Path answers"), SAM repairs a poor outline (10% vertex noise: raster
  IoU ~0.59, SAM ~0.70) but degrades a precise one (exact 16-vertex outline: raster ~0.93, SAM
  ~0.81): SAM's mask follows image edges but also drops or adds whole regions, which a good
  outline does not. The gate keeps the raster when at least half of its edge lies near SAM's
  mask edge (:func:`boundary_agreement` >= :data:`DEFAULT_GATE`), that is when the outline
  already sits on the object's edge, and takes SAM's mask otherwise. The threshold and its
  table are in ``benchmarks/bench_refiners.py`` and the README.
* ``PATH``: a trained refiner checkpoint (:class:`TorchRefiner`, a small network over frozen
  image features and the coarse mask; its training is a separate step). The features are the
  embedded SAM encoder's (``onnx-sam``) or the grounder's own vision features (``vlm:SOURCE``,
  caught during the grounding pass like the box decoder's: no second image encoder).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from refseg.errors import InputError, ModelError
from refseg.types import Box, Prompt

__all__ = [
    "DEFAULT_GATE",
    "DEFAULT_ITERATIONS",
    "REFINER_FORMAT",
    "GatedRefiner",
    "NoRefiner",
    "RefineOutput",
    "Refiner",
    "SamRefiner",
    "TorchRefiner",
    "boundary_agreement",
    "box_to_low_res",
    "interior_point",
    "load_refiner",
    "mask_to_low_res",
    "run_refiner",
    "vlm_feature_grid",
]

#: :func:`boundary_agreement` at or above which the gated refiner keeps the raster (chosen on
#: the COCO-sample table, see the module docstring).
DEFAULT_GATE = 0.5
#: Edge tolerance of :func:`boundary_agreement`, as a fraction of the box's size.
BOUNDARY_TOLERANCE = 0.02
#: Refinement iterations when the caller does not choose (Moondream runs its refiner 5 times;
#: SAM's decoder gains nothing after the first pass on its own output, see onnx_sam).
DEFAULT_ITERATIONS = 1
#: Logit magnitude of the coarse mask fed to SAM: inside +L, outside -L (SAM's own low-res
#: logits are of this order).
MASK_LOGIT = 8.0
#: The checkpoint format tag a trained refiner file must carry.
REFINER_FORMAT = "refseg-refiner"
LOW_RES = 256
SAM_INPUT = 1024
#: The trained refiner's feature grid: SAM's embedding grid (the padded 1024 frame / 16).
FEATURE_GRID = 64
#: What a trained refiner reads: the embedded SAM encoder's embedding (the default) or one of
#: the grounder's vision sources (``vlm:final``, ``vlm:deepstack0``, ``vlm:block0`` ...).
REFINER_FEATURES = ("onnx-sam", "vlm:SOURCE")
#: The most bytes a refiner checkpoint's records may hold once inflated. The largest network
#: the config bounds allow (512 channels, 16 blocks, 4096 feature dims) is ~310 MB of float32;
#: ``torch.load`` inflates deflated zip records whole, so a 1 MB file could otherwise become
#: gigabytes before anything is checked.
MAX_CHECKPOINT_BYTES = 512 << 20
#: The config's integer fields: default, lowest, highest.
_NET_SIZES = {"channels": (64, 1, 512), "blocks": (2, 0, 16), "feature_dim": (256, 1, 4096)}


@dataclass
class RefineOutput:
    """A refined mask (boolean, image size) and the refiner's own quality estimate (or None)."""

    mask: np.ndarray
    score: float | None = None


@runtime_checkable
class Refiner(Protocol):
    """What every refiner provides. ``needs_embedding`` says whether the caller must embed."""

    name: str
    needs_embedding: bool

    def refine(
        self, image: np.ndarray | None, embedding: Any, coarse: np.ndarray, box: Box
    ) -> RefineOutput:
        """One refinement step of ``coarse`` (boolean, image size) for the object in ``box``."""
        ...


def run_refiner(
    refiner: Refiner,
    image: np.ndarray | None,
    embedding: Any,
    coarse: np.ndarray,
    box: Box,
    iterations: int = DEFAULT_ITERATIONS,
) -> RefineOutput:
    """Refine ``coarse`` ``iterations`` times, each step starting from the previous mask.

    Zero iterations return the coarse mask. An empty mask stops early (nothing to refine).
    """
    if iterations < 0 or iterations > 16:
        raise InputError("refinement iterations must be 0 to 16")
    out = RefineOutput(mask=np.asarray(coarse, dtype=bool))
    for _ in range(iterations):
        if not out.mask.any():
            break
        out = refiner.refine(image, embedding, out.mask, box)
    return out


class NoRefiner:
    """``none``: the raster is the mask."""

    name = "none"
    needs_embedding = False

    def refine(
        self, image: np.ndarray | None, embedding: Any, coarse: np.ndarray, box: Box
    ) -> RefineOutput:
        return RefineOutput(mask=np.asarray(coarse, dtype=bool))


def _resized_shape(height: int, width: int) -> tuple[int, int]:
    scale = SAM_INPUT / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def vlm_feature_grid(feature_map: Any, height: int, width: int) -> np.ndarray:
    """A VLM vision map ``(C, h, w)`` on the image's merged-token grid -> ``float32
    (1, C, 64, 64)`` in the refiner's feature frame.

    That frame is SAM's embedding grid (the image in the top-left ``resized/16`` region, zeros
    over the padding), the same frame as the coarse mask's low-res logits, so one network reads
    either kind of features and the mask lines up with them.
    """
    import torch
    import torch.nn.functional as F

    new_h, new_w = _resized_shape(height, width)
    grid_h = max(1, round(new_h * FEATURE_GRID / SAM_INPUT))
    grid_w = max(1, round(new_w * FEATURE_GRID / SAM_INPUT))
    source = torch.as_tensor(feature_map).float()[None]
    resized = F.interpolate(source, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
    out = np.zeros((1, source.shape[1], FEATURE_GRID, FEATURE_GRID), dtype=np.float32)
    out[:, :, :grid_h, :grid_w] = resized.numpy()
    return out


def mask_to_low_res(mask: np.ndarray, logit: float = MASK_LOGIT) -> np.ndarray:
    """A boolean image-size mask -> ``float32 (256, 256)`` logits in SAM's low-res frame.

    SAM's low-res frame covers the padded 1024x1024 encoder input at a quarter of its size: the
    image occupies the top-left ``resized/4`` region (long side 256), the rest is padding and
    stays at ``-logit``. The mask is area-resampled, so a partly covered low-res cell gets an
    intermediate logit.
    """
    import cv2

    height, width = mask.shape
    new_h, new_w = _resized_shape(height, width)
    low_h, low_w = max(1, round(new_h / 4)), max(1, round(new_w / 4))
    coverage = cv2.resize(mask.astype(np.float32), (low_w, low_h), interpolation=cv2.INTER_AREA)
    out = np.full((LOW_RES, LOW_RES), -logit, dtype=np.float32)
    out[:low_h, :low_w] = (2.0 * coverage - 1.0) * logit
    return out


def box_to_low_res(box: Box, height: int, width: int) -> np.ndarray:
    """A pixel box as a ``float32 (256, 256)`` plane in SAM's low-res frame: +1 inside, -1 out.

    Same frame as :func:`mask_to_low_res` (the image in the top-left ``resized/4`` region), so
    the trained refiner sees the box where it sees the mask.
    """
    new_h, new_w = _resized_shape(height, width)
    sx, sy = new_w / 4 / width, new_h / 4 / height
    x1, y1, x2, y2 = (float(v) for v in box)
    c0, c1 = max(0, math.floor(x1 * sx)), min(LOW_RES, math.ceil(x2 * sx))
    r0, r1 = max(0, math.floor(y1 * sy)), min(LOW_RES, math.ceil(y2 * sy))
    out = np.full((LOW_RES, LOW_RES), -1.0, dtype=np.float32)
    out[r0:r1, c0:c1] = 1.0
    return out


def interior_point(mask: np.ndarray) -> tuple[float, float] | None:
    """The mask pixel farthest from its edge (distance transform), as a pixel-centre point.

    This is a point inside the object for any shape (unlike the centroid of a ring or a C), so
    it is a safe foreground click for SAM.
    """
    import cv2

    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(col) + 0.5, float(row) + 0.5


class SamRefiner:
    """``sam-raw``: the segmenter's decoder prompted with the coarse mask, box and a point.

    Works with any :class:`~refseg.segmentation.base.Segmenter` that reads
    ``Prompt.mask_input`` (the ONNX and transformers SAM backends do). One decoder pass per
    iteration on the shared embedding.
    """

    needs_embedding = True

    def __init__(self, segmenter: Any, *, logit: float = MASK_LOGIT, points: bool = True):
        self.segmenter = segmenter
        self.logit = logit
        self.points = points
        self.name = "sam-raw"

    def refine(
        self, image: np.ndarray | None, embedding: Any, coarse: np.ndarray, box: Box
    ) -> RefineOutput:
        if embedding is None:
            raise ModelError("the sam refiner needs the image embedding")
        point = interior_point(coarse) if self.points else None
        prompt = Prompt(
            box=tuple(box),  # type: ignore[arg-type]
            points=[point] if point else [],
            mask_input=mask_to_low_res(coarse, self.logit),
        )
        (prediction,) = self.segmenter.predict(embedding, [prompt], refine=0)
        return RefineOutput(mask=np.asarray(prediction.mask, dtype=bool), score=prediction.score)


def boundary_agreement(coarse: np.ndarray, refined: np.ndarray, box: Box) -> float:
    """The share of the coarse mask's edge pixels lying near the refined mask's edge.

    "Near" is within 2% of the box's size (``sqrt(w * h)``, at least one pixel). A precise
    outline runs along the object's edge, where SAM's mask edge also is, for most of its length
    (SAM's errors are whole regions: a missed part, a neighbour included); a poor outline crosses
    the object and SAM's edge nowhere near it. This separates the two better than the region
    IoU between the masks (see ``benchmarks/bench_refiners.py``).
    """
    import cv2

    from refseg.masks import boundary

    x1, y1, x2, y2 = box
    distance = max(1.0, BOUNDARY_TOLERANCE * math.sqrt(max(0.0, (x2 - x1) * (y2 - y1))))
    edge = boundary(coarse, 1)
    if not edge.any():
        return 0.0
    other = boundary(refined, 1)
    if not other.any():
        return 0.0
    far = cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2, 3)
    return float((edge & (far <= distance)).sum() / edge.sum())


class GatedRefiner:
    """``sam``: keep the coarse mask where the inner refiner's edge agrees with it, else refine.

    ``threshold`` is the :func:`boundary_agreement` at or above which the coarse mask is kept
    (see the module docstring for why agreement is the signal).
    """

    needs_embedding = True

    def __init__(self, inner: Refiner, *, threshold: float = DEFAULT_GATE, name: str = "sam"):
        if not 0.0 <= threshold <= 1.0:
            raise InputError("the refiner gate must be between 0 and 1")
        self.inner = inner
        self.threshold = threshold
        self.name = name

    def refine(
        self, image: np.ndarray | None, embedding: Any, coarse: np.ndarray, box: Box
    ) -> RefineOutput:
        refined = self.inner.refine(image, embedding, coarse, box)
        if boundary_agreement(coarse, refined.mask, box) >= self.threshold:
            return RefineOutput(mask=np.asarray(coarse, dtype=bool), score=refined.score)
        return refined


# ---------------------------------------------------------------------------------------------
# A trained refiner (the class and its loading; training is a separate step)


def _build_net(config: dict[str, Any]):
    """The refiner network: image features + coarse low-res mask -> refined low-res logits.

    A deliberately small head over a frozen segmenter's 256x64x64 features: the coarse mask is
    downsampled to 64x64 by a strided conv stack, concatenated with the features, mixed by a few
    residual conv blocks, and upsampled back to 256x256 logits added to the input logits (so an
    untrained or zero-initialised head returns its input). Also predicts an IoU score.
    ``box_channel`` (config) adds the instance's box as a second input plane (+1 inside, -1
    outside, same frame): the coarse mask alone does not say which object a thin or partial
    outline was meant for. Checkpoints without the key have no box plane (version 1 as before).
    """
    import torch
    from torch import nn

    sizes = {}
    for name, (default, low, high) in _NET_SIZES.items():
        value = config.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ModelError(
                f"refiner config: {name} must be an integer in {low}..{high}, got "
                f"{_short_repr(value)}"
            )
        sizes[name] = value
    channels, blocks, feature_dim = sizes["channels"], sizes["blocks"], sizes["feature_dim"]
    box_channel = config.get("box_channel", False)
    if not isinstance(box_channel, bool):
        raise ModelError(
            f"refiner config: box_channel must be true or false, got {_short_repr(box_channel)}"
        )
    in_planes = 2 if box_channel else 1

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.GroupNorm(8 if channels % 8 == 0 else 1, channels),
                nn.GELU(),
                nn.Conv2d(channels, channels, 3, padding=1),
            )

        def forward(self, x):
            return x + self.body(x)

    class RefinerNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mask_down = nn.Sequential(
                nn.Conv2d(in_planes, channels // 2, 4, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(channels // 2, channels, 4, stride=2, padding=1),
            )
            self.feat_proj = nn.Conv2d(feature_dim, channels, 1)
            self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])
            self.up = nn.Sequential(
                nn.ConvTranspose2d(channels, channels // 2, 2, stride=2),
                nn.GELU(),
                nn.ConvTranspose2d(channels // 2, 1, 2, stride=2),
            )
            self.iou_head = nn.Linear(channels, 1)

        def forward(self, features, low_res, box_plane=None):
            planes = low_res if box_plane is None else torch.cat([low_res, box_plane], dim=1)
            x = self.mask_down(planes) + self.feat_proj(features)
            x = self.blocks(x)
            logits = low_res + self.up(x)
            iou = torch.sigmoid(self.iou_head(x.mean(dim=(2, 3))))[:, 0]
            return logits, iou

    return RefinerNet()


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, (list, dict, tuple)) else type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def check_checkpoint_size(file: Path, limit: int = MAX_CHECKPOINT_BYTES) -> None:
    """Refuse a torch checkpoint whose zip records would inflate past ``limit`` bytes.

    Reads only the zip's central directory (each record's declared uncompressed size), so a
    deflate bomb is one line before :func:`torch.load` inflates anything; ``torch.save``'s
    own files store records uncompressed, so this never refuses one. The declared sizes are
    what zipfile and torch's reader both trust (zipfile checks them while inflating).
    """
    import zipfile

    try:
        with zipfile.ZipFile(file) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        kind = type(exc).__name__
        raise InputError(f"refiner {file}: not a readable checkpoint ({kind})") from None
    if total > limit:
        raise InputError(
            f"refiner {file}: its records hold {total:,} bytes uncompressed, more than the "
            f"{limit:,} a refiner checkpoint may (a compressed-file bomb?)"
        )


def check_features(spec: Any) -> str:
    """A refiner's feature source: ``onnx-sam`` or ``vlm:SOURCE`` (one line if neither)."""
    if spec == "onnx-sam" or (
        isinstance(spec, str) and spec.startswith("vlm:") and spec[4:].isidentifier()
    ):
        return spec
    raise InputError(f"refiner features {_short_repr(spec)}: use {' or '.join(REFINER_FEATURES)}")


class TorchRefiner:
    """A trained refiner checkpoint (``--refiner PATH``) over frozen image features.

    The checkpoint is a ``torch.save`` dict: ``{"format": "refseg-refiner", "version": 1,
    "config": {...}, "state_dict": {...}}`` (read with ``weights_only=True``). Each step feeds
    the current mask as low-res logits and takes the refined logits' sign, upsampled like SAM's.
    Features (``config["features"]``) come from an ONNX-SAM embedding (``Embedding.data``,
    ``1x256x64x64``, the default) or, for ``vlm:SOURCE``, from the grounder's vision features
    of the same pass (:class:`VLMFeatureRefiner`, which :meth:`load` returns for such a
    checkpoint; it records the VLM's fingerprint and refuses another model).
    """

    def __init__(self, net: Any, config: dict[str, Any], name: str) -> None:
        self.net = net.eval()
        self.config = config
        self.name = name
        self.features = check_features(config.get("features", "onnx-sam"))
        #: SAM features are the segmenter's embedding; VLM ones come from the grounding pass.
        self.needs_embedding = self.features == "onnx-sam"
        self.fingerprint = str(config.get("vlm_fingerprint", ""))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TorchRefiner:
        file = Path(path)
        if not file.is_file():
            raise InputError(f"refiner {path}: not a file (use none, sam, sam-raw or a checkpoint)")
        try:
            import torch
        except ImportError as exc:  # the base install has no torch
            raise ModelError("a trained refiner needs torch: install refseg[train]") from exc
        check_checkpoint_size(file)  # before torch.load inflates anything
        try:
            data = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            kind = type(exc).__name__
            raise InputError(f"refiner {path}: not a readable checkpoint ({kind})") from None
        if not isinstance(data, dict) or data.get("format") != REFINER_FORMAT:
            raise InputError(f"refiner {path}: not a refseg refiner checkpoint")
        if data.get("version") != 1:
            version = _short_repr(data.get("version"))
            raise InputError(f"refiner {path}: unsupported version {version}")
        config = data.get("config") or {}
        if not isinstance(config, dict):
            raise InputError(f"refiner {path}: config is not a mapping")
        net = _build_net(config)
        try:
            net.load_state_dict(data.get("state_dict") or {})
        except (RuntimeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise InputError(f"refiner {path}: weights do not fit the network: {first}") from None
        chosen = cls if config.get("features", "onnx-sam") == "onnx-sam" else VLMFeatureRefiner
        return chosen(net, config, name=str(file))

    @staticmethod
    def save(net: Any, config: dict[str, Any], path: str | os.PathLike[str]) -> None:
        """Write a checkpoint :meth:`load` reads (for training code and tests)."""
        import torch

        state = {"format": REFINER_FORMAT, "version": 1, "config": dict(config)}
        state["state_dict"] = net.state_dict()
        torch.save(state, Path(path))

    @staticmethod
    def build(config: dict[str, Any] | None = None) -> Any:
        """A fresh network for ``config`` (for training code and tests)."""
        return _build_net(dict(config or {}))

    def refine(
        self, image: np.ndarray | None, embedding: Any, coarse: np.ndarray, box: Box
    ) -> RefineOutput:
        import cv2
        import torch

        features = getattr(embedding, "data", None)
        dim = int(self.config.get("feature_dim", 256))
        if not isinstance(features, np.ndarray) or features.shape[:2] != (1, dim):
            raise ModelError(
                f"refiner {self.name} reads {self.features} features (1x{dim}x64x64); got "
                f"{getattr(features, 'shape', type(features).__name__)}"
            )
        height, width = coarse.shape
        low = mask_to_low_res(coarse)[None, None]
        box_plane = None
        if self.config.get("box_channel", False):
            box_plane = torch.from_numpy(box_to_low_res(box, height, width)[None, None])
        with torch.inference_mode():
            logits, iou = self.net(torch.from_numpy(features), torch.from_numpy(low), box_plane)
        low_out = logits[0, 0].numpy()
        new_h, new_w = _resized_shape(height, width)
        full = cv2.resize(low_out, (SAM_INPUT, SAM_INPUT), interpolation=cv2.INTER_LINEAR)
        full = cv2.resize(full[:new_h, :new_w], (width, height), interpolation=cv2.INTER_LINEAR)
        return RefineOutput(mask=full > 0, score=float(iou[0]))


class VLMFeatureRefiner(TorchRefiner):
    """A trained refiner on the grounding VLM's own vision features (``vlm:SOURCE``): a
    :class:`~refseg.segmentation.base.FeatureReader`, so the pipeline hands it the grounding
    pass's maps and no image encoder runs for path answers."""

    def __init__(self, net: Any, config: dict[str, Any], name: str) -> None:
        super().__init__(net, config, name)
        self.sources = [self.features[4:]]

    def check_grounder(self, grounder: Any) -> None:
        """Refuse, with one line, a grounder whose features this refiner cannot read."""
        from refseg.vlm_features import check_feature_grounder

        vision = self.config.get("vision_digest")
        check_feature_grounder(f"refiner {self.name}", self.fingerprint, grounder, vision=vision)

    def embed_features(self, image: np.ndarray, features: Any) -> Any:
        """The refiner's input for one image from the grounding pass's ``VLMFeatures``."""
        from refseg.segmentation.base import Embedding

        if features is None or self.sources[0] not in features.sources:
            raise ModelError(f"refiner {self.name}: the grounder returned no {self.features}")
        if features.fingerprint and features.fingerprint != self.fingerprint:
            raise InputError(f"refiner {self.name}: features of another VLM config")
        height, width = image.shape[:2]
        feature_map = features.maps[features.sources.index(self.sources[0])]
        data = vlm_feature_grid(feature_map, height, width)
        return Embedding(height=height, width=width, data=data, backend=self.name)


# ---------------------------------------------------------------------------------------------

REFINER_NAMES = ("none", "sam", "sam-raw")


def load_refiner(spec: str, segmenter: Any = None, *, gate: float = DEFAULT_GATE) -> Refiner:
    """``none``, ``sam`` (gated), ``sam-raw`` or the path of a trained refiner checkpoint."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("the refiner is empty; use none, sam, sam-raw or a checkpoint path")
    spec = spec.strip()
    if spec == "none":
        return NoRefiner()
    if spec in ("sam", "sam-raw"):
        if segmenter is None:
            raise InputError(f"the {spec} refiner needs a segmenter")
        raw = SamRefiner(segmenter)
        return raw if spec == "sam-raw" else GatedRefiner(raw, threshold=gate)
    if os.sep in spec or spec.endswith((".pt", ".pth")) or os.path.exists(spec):
        return TorchRefiner.load(spec)
    raise InputError(f"unknown refiner {spec!r}; use none, sam, sam-raw or a checkpoint path")


def refine_all(
    refiner: Refiner,
    image: np.ndarray | None,
    embedding: Any,
    coarse: Sequence[np.ndarray],
    boxes: Sequence[Box],
    iterations: int = DEFAULT_ITERATIONS,
) -> list[RefineOutput]:
    """:func:`run_refiner` for every instance of one image (one shared embedding)."""
    return [
        run_refiner(refiner, image, embedding, mask, box, iterations)
        for mask, box in zip(coarse, boxes)
    ]
