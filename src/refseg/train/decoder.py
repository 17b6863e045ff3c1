"""``refseg train decoder``: train the box decoder (:mod:`refseg.segmentation.boxdec`).

The VLM is frozen (Qwen3-VL-Seg's stage 1 trains LoRA adapters with the decoder; ``lora:``
turns that on) and only reads: per sample, one teacher-forced forward of the prompt and an
answer naming the boxes (:func:`refseg.grounding.features.teacher_forced`, which gives the
same features a grounding pass gives), or with ``boxes: predicted`` the real grounding pass.
The boxes the decoder is prompted with are

* ``gt``: the ground-truth boxes;
* ``jitter``: the ground-truth boxes with every side moved by up to ``jitter`` of the box size
  (uniform), to simulate grounding error; the answer text names the jittered box, as a model
  that made that error would have written it;
* ``predicted``: the model's own answer, each predicted box matched to the ground-truth object
  it overlaps most (box IoU >= ``match_iou``); unmatched ones are skipped.

Loss: BCE + Dice on the mask logits (the ground-truth mask averaged down to the logits' 1/4
resolution) + MSE of the IoU head against the IoU the mask really has. No-target samples have
no box to decode and are skipped.

The loop is the plain PyTorch one refseg's own trainers share (:mod:`refseg.train.loop`; the
decoder is small and its inputs are not a language model's, so TRL/transformers trainers would
add nothing): ``checkpoint-N/`` folders (decoder, optimizer, step) every ``save_steps``, resumed
from the newest complete one on rerun; one JSON line per logged step in ``log.jsonl`` (lines
past the resumed step dropped, so a redone step is logged once); the final decoder in
``output_dir`` (``boxdec:DIR``).
The data order is a seeded permutation per epoch and jitter is seeded per step, so a resumed
run takes exactly the steps an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refseg.errors import InputError
from refseg.train.config import (
    LoraSection,
    RunConfig,
    _build,
    check_templates,
    run_default,
    short_repr,
)

BOX_SOURCES = ("gt", "jitter", "predicted")


@dataclass
class DecoderSection:
    """The decoder's shape (:class:`refseg.segmentation.boxdec.BoxDecConfig`)."""

    sources: list[str] | None = field(
        default=None,
        metadata={"help": "Vision sources (None = the family's default: DeepStack + final)."},
    )
    width: int = field(default=384, metadata={"help": "Channel width."})
    depth: int = field(default=3, metadata={"help": "Two-way attention blocks."})
    heads: int = field(default=8, metadata={"help": "Attention heads."})
    mlp_ratio: float = field(default=6.0, metadata={"help": "Block MLP width over width."})
    pixel_channels: int = field(default=32, metadata={"help": "Raw-image CNN channels."})
    fourier: int = field(default=16, metadata={"help": "Box Fourier frequencies."})
    refine_rounds: int = field(default=1, metadata={"help": "Mask-aware query refinements."})
    multiscale: bool = field(default=True, metadata={"help": "Read every source (ablation)."})
    pixel_fusion: bool = field(default=True, metadata={"help": "Raw-image branch (ablation)."})
    gate_expand: float = field(default=0.15, metadata={"help": "Box gate growth per side."})
    gate_slope: float = field(default=20.0, metadata={"help": "Box gate sigmoid slope."})


@dataclass
class LossSection:
    """Loss weights."""

    bce: float = field(default=1.0, metadata={"help": "Binary cross-entropy weight."})
    dice: float = field(default=1.0, metadata={"help": "Dice loss weight."})
    iou: float = field(default=1.0, metadata={"help": "IoU-head MSE weight."})


@dataclass
class DecoderTrainConfig(RunConfig):
    """One box decoder training run (``refseg train decoder --config FILE.yaml``).

    The run fields (``output_dir``, ``max_steps``, ``learning_rate``, ``weight_decay``,
    ``save_steps``, ``save_total_limit``, ``logging_steps``, ``seed``) are
    :class:`~refseg.train.config.RunConfig`'s, with its defaults but ``max_steps``.
    """

    model: str = field(metadata={"help": "Hub id or folder of the (frozen) Qwen-VL model."})
    dataset: str | list[str] = field(metadata={"help": "Dataset spec(s) KIND:PATH[:SPLIT]."})
    family: str | None = field(
        default=None, metadata={"help": "qwen3-vl or qwen2.5-vl (None = from the model)."}
    )
    prompt_template: str | None = field(
        default=None, metadata={"help": "The grounder's prompt template (None = the protocol's)."}
    )
    max_pixels: int | None = field(default=None, metadata={"help": "Processor max pixels."})
    min_pixels: int | None = field(default=None, metadata={"help": "Processor min pixels."})
    max_samples: int | None = field(default=None, metadata={"help": "Use at most this many."})
    boxes: str = field(default="jitter", metadata={"help": "gt, jitter or predicted."})
    jitter: float = field(
        default=0.1, metadata={"help": "jitter: largest side shift, as a fraction of box size."}
    )
    match_iou: float = field(
        default=0.5, metadata={"help": "predicted: box IoU needed to match a GT object."}
    )
    decoder: DecoderSection = field(
        default_factory=DecoderSection, metadata={"help": "Decoder shape."}
    )
    loss: LossSection = field(default_factory=LossSection, metadata={"help": "Loss weights."})
    lora: LoraSection | None = field(
        default=None, metadata={"help": "LoRA on the VLM trained with the decoder (None: frozen)."}
    )
    max_steps: int = run_default("max_steps", -1, "Steps (-1 = num_train_epochs).")
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs when max_steps < 0."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Samples per step."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda (None = auto)."})
    dtype: str | None = field(
        default=None, metadata={"help": "VLM dtype (None = bfloat16 on GPU, float32 on CPU)."}
    )

    def datasets(self) -> list[str]:
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)


def config_from_dict(data: dict[str, Any], where: str = "config") -> DecoderTrainConfig:
    """Build and check a :class:`DecoderTrainConfig` from a mapping (one-line errors)."""
    config = _build(DecoderTrainConfig, data, where)
    if config.boxes not in BOX_SOURCES:
        raise InputError(
            f"{where}: boxes must be {', '.join(BOX_SOURCES)}, got {short_repr(config.boxes)}"
        )
    if config.family not in (None, "qwen3-vl", "qwen2.5-vl"):
        raise InputError(f"{where}: family must be qwen3-vl or qwen2.5-vl")
    if not 0.0 <= config.jitter <= 1.0:
        raise InputError(f"{where}: jitter must be between 0 and 1, got {config.jitter}")
    config.check_run(where, at_least_one=("per_device_train_batch_size",))
    if config.max_steps == 0 or config.max_steps < -1:
        raise InputError(f"{where}: max_steps must be -1 or at least 1")
    check_templates(config, where)
    return config


def load_decoder_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Read a decoder run file (YAML; see :func:`refseg.train.config.load_config`)."""
    from refseg.train.config import load_config

    return load_config(path, overrides, build=config_from_dict)


def decoder_settings(config: DecoderTrainConfig) -> dict[str, Any]:
    """The :class:`BoxDecConfig` overrides of a run config."""
    settings = dataclasses.asdict(config.decoder)
    if settings["sources"] is None:
        settings.pop("sources")
    return settings


# ---------------------------------------------------------------------------------------------
# Pieces


def jitter_box(box: list[float], amount: float, rng: np.random.Generator, width: int, height: int):
    """``box`` with every side moved by up to ``amount`` of the box size, kept in the image."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    dx = rng.uniform(-amount, amount, 2) * bw
    dy = rng.uniform(-amount, amount, 2) * bh
    nx1, nx2 = sorted((x1 + dx[0], x2 + dx[1]))
    ny1, ny2 = sorted((y1 + dy[0], y2 + dy[1]))
    nx1, nx2 = max(0.0, nx1), min(float(width), max(nx2, nx1 + 1.0))
    ny1, ny2 = max(0.0, ny1), min(float(height), max(ny2, ny1 + 1.0))
    return [nx1, ny1, nx2, ny2]


def box_iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mask_losses(logits: Any, target: Any, iou_pred: Any, weights: LossSection) -> dict[str, Any]:
    """BCE + Dice on the logits (``target`` in 0-1 at their size) + MSE of the IoU head."""
    import torch.nn.functional as F

    from refseg.train.common import mask_loss_terms

    bce, dice, iou = mask_loss_terms(logits, target)
    iou_loss = F.mse_loss(iou_pred.float(), iou)
    total = weights.bce * bce + weights.dice * dice.mean() + weights.iou * iou_loss
    return {
        "loss": total,
        "bce": bce,
        "dice": dice.mean(),
        "iou_loss": iou_loss,
        "miou": iou.mean(),
    }


def target_at(rle: Any, size: tuple[int, int]) -> Any:
    """A GT mask (COCO RLE) averaged down to ``size`` ``(h, w)``: a soft 0-1 target."""
    import torch
    import torch.nn.functional as F

    from refseg import masks

    dense = torch.from_numpy(masks.decode(rle).astype(np.float32))[None, None]
    return F.interpolate(dense, size=size, mode="area")[0]


# ---------------------------------------------------------------------------------------------
# The loop


class DecoderTrainer:
    """Builds the grounder, data and decoder of a run; :meth:`train` runs (or resumes) it."""

    def __init__(
        self, config: DecoderTrainConfig, *, grounder: Any = None, samples: list | None = None
    ) -> None:
        import torch

        from refseg.segmentation.boxdec import BoxDecConfig, BoxDecoder
        from refseg.train.data import load_samples

        self.config = config
        self.grounder = grounder if grounder is not None else self._load_grounder()
        self.device = self.grounder.device
        if samples is None:
            samples = load_samples(
                config.datasets(), max_samples=config.max_samples, seed=config.seed
            )
        self.samples = [s for s in samples if not s.no_target]
        if not self.samples:
            raise InputError(f"dataset {', '.join(config.datasets())} has no sample with a target")
        self.decoder_config = BoxDecConfig.from_vlm_config(
            self.grounder.model.config, **decoder_settings(config)
        )
        torch.manual_seed(config.seed)
        self.decoder = BoxDecoder(self.decoder_config).to(self.device)
        self.lora = config.lora is not None
        params = list(self.decoder.parameters())
        if self.lora:
            params += self._add_lora()
        else:
            for p in self.grounder.model.parameters():
                p.requires_grad_(False)
        self.grounder.model.eval()
        self.optimizer = torch.optim.AdamW(
            params, lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.step = 0
        self.total_steps = self._total_steps()

    def _load_grounder(self) -> Any:
        from refseg.grounding.qwen import QwenGrounder
        from refseg.train.common import guess_family

        c = self.config
        return QwenGrounder.from_pretrained(
            c.model,
            family=guess_family(c),  # type: ignore[arg-type]
            device=c.device,
            dtype=c.dtype,
            min_pixels=c.min_pixels,
            max_pixels=c.max_pixels,
            prompt_template=c.prompt_template,
            max_new_tokens=256,
        )

    def _add_lora(self) -> list:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise InputError(
                "LoRA needs peft: pip install 'refseg[train]' (or lora: null)"
            ) from None
        lora = self.config.lora
        assert lora is not None
        targets = lora.target_modules
        if isinstance(targets, list):
            targets = rf"^(?!.*visual).*\.({'|'.join(targets)})$"
        peft_config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets
        )
        self.grounder.model = get_peft_model(self.grounder.model, peft_config)
        return [p for p in self.grounder.model.parameters() if p.requires_grad]

    def _total_steps(self) -> int:
        c = self.config
        if c.max_steps > 0:
            return c.max_steps
        per_epoch = math.ceil(len(self.samples) / c.per_device_train_batch_size)
        return max(1, math.ceil(per_epoch * c.num_train_epochs))

    def _batch(self, step: int) -> list:
        """The samples of optimizer step ``step`` (0-based): seeded permutation per epoch."""
        size = self.config.per_device_train_batch_size
        n = len(self.samples)
        out = []
        for k in range(step * size, (step + 1) * size):
            epoch, index = divmod(k, n)
            order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
            out.append(self.samples[int(order[index])])
        return out

    # -- one step -----------------------------------------------------------------------------

    def _instances(self, batch: list, step: int) -> tuple[list, list]:
        """Per sample ``(features, [(box, rle), ...])`` for the configured box source."""
        from refseg.grounding.coords import from_pixels
        from refseg.grounding.features import teacher_forced
        from refseg.image import load_image
        from refseg.protocol import format_answer
        from refseg.train.data import pixel_targets

        c = self.config
        sources = self.decoder_config.sources
        images = [load_image(s.image) for s in batch]
        phrases = [s.phrase for s in batch]
        if c.boxes == "predicted":
            groundings = self.grounder.ground(images, phrases, features=sources)
            features, pairs = [], []
            for sample, grounding in zip(batch, groundings):
                gt = sample.gt_boxes()
                chosen = []
                for inst in grounding.instances:
                    ious = [box_iou(list(inst.box), g) for g in gt]
                    best = int(np.argmax(ious)) if ious else -1
                    if best >= 0 and ious[best] >= c.match_iou:
                        chosen.append((list(inst.box), sample.masks[best]))
                features.append(grounding.features)
                pairs.append(chosen)
            return images, list(zip(features, pairs))
        rng = np.random.default_rng([c.seed, 1_000_003, step])
        answers, pairs = [], []
        for sample in batch:
            targets = pixel_targets(sample)
            boxes = [
                jitter_box(box, c.jitter, rng, sample.width, sample.height)
                if c.boxes == "jitter"
                else box
                for box, _ in targets
            ]
            instances = []
            for b, (_, pts) in zip(boxes, targets):
                inside = [p for p in pts if b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]]
                conv = self.grounder.convention
                instances.append(from_pixels(b, inside, conv, sample.width, sample.height))
            answers.append(format_answer(instances))
            pairs.append(list(zip(boxes, sample.masks)))
        features = teacher_forced(self.grounder, images, phrases, answers, sources, grad=self.lora)
        return images, list(zip(features, pairs))

    def train_step(self) -> dict[str, float]:
        import torch

        from refseg.segmentation.boxdec import prepare_image

        batch = self._batch(self.step)
        images, items = self._instances(batch, self.step)
        dtype = next(self.decoder.parameters()).dtype
        feats, pix, boxes, hidden, targets = [], [], [], [], []
        for image, (f, pairs) in zip(images, items):
            if f is None or not pairs:
                continue
            height, width = image.shape[:2]
            tensor = prepare_image(image, f.input_size)
            for box, rle in pairs:
                feats.append([m.to(self.device, dtype) for m in f.maps])
                pix.append(tensor)
                x1, y1, x2, y2 = box
                boxes.append([x1 / width, y1 / height, x2 / width, y2 / height])
                hidden.append(f.hidden.to(self.device, dtype))
                targets.append(rle)
        self.decoder.train()
        lr = self.config.learning_rate * min(
            1.0, (self.step + 1) / max(1, self.config.warmup_steps)
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        record: dict[str, float] = {"step": self.step + 1, "lr": lr, "instances": len(targets)}
        if targets:
            # One decoder call per distinct feature-map size (images of one size batch together).
            losses = []
            groups: dict[tuple, list[int]] = {}
            for i, f in enumerate(feats):
                groups.setdefault(tuple(f[0].shape), []).append(i)
            for index in groups.values():
                maps = [torch.stack([feats[i][s] for i in index]) for s in range(len(feats[0]))]
                logits, iou = self.decoder(
                    maps,
                    torch.cat([pix[i] for i in index]).to(self.device, dtype),
                    torch.tensor([boxes[i] for i in index], device=self.device, dtype=dtype),
                    torch.stack([hidden[i] for i in index]),
                )
                size = tuple(logits.shape[-2:])
                target = torch.stack([target_at(targets[i], size) for i in index])
                out = mask_losses(logits.float(), target.to(self.device), iou, self.config.loss)
                losses.append((len(index), out))
            n = sum(k for k, _ in losses)
            total = sum(k * out["loss"] for k, out in losses) / n
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            for key in ("loss", "bce", "dice", "iou_loss", "miou"):
                record[key] = float(sum(k * out[key].item() for k, out in losses) / n)
        self.step += 1
        return record

    # -- checkpoints --------------------------------------------------------------------------

    def save(self, folder: Path, *, final: bool = False) -> None:
        import torch

        from refseg.segmentation.boxdec import save_checkpoint

        extra = {
            "vlm": self.config.model,
            "steps": self.step,
            "boxes": self.config.boxes,
            "train_config": dataclasses.asdict(self.config),
        }
        if not final:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            if self.lora:
                self.grounder.model.save_pretrained(folder / "lora")
        save_checkpoint(folder, self.decoder, self.grounder.feature_fingerprint, extra=extra)
        if not final:  # written last: its presence marks the checkpoint complete
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": self.step}))

    def resume(self, folder: str) -> None:
        import torch

        from refseg.segmentation.boxdec import load_checkpoint

        decoder, meta = load_checkpoint(folder)
        if meta.get("vlm_fingerprint") != self.grounder.feature_fingerprint:
            raise InputError(f"{folder}: a checkpoint of another VLM config; use a new output_dir")
        if decoder.config != self.decoder_config:
            raise InputError(
                f"{folder}: a checkpoint of another decoder shape; use a new output_dir"
            )
        self.decoder.load_state_dict(decoder.state_dict())
        self.optimizer.load_state_dict(
            torch.load(Path(folder) / "optimizer.pt", map_location=self.device, weights_only=True)
        )
        if self.lora:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            state = load_file(str(Path(folder) / "lora" / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.grounder.model, state)
        state = json.loads((Path(folder) / "trainer_state.json").read_text())
        self.step = int(state["global_step"])

    def train(self) -> DecoderTrainer:
        """Run to ``total_steps`` from the newest checkpoint (if any); save the decoder
        (:func:`refseg.train.loop.run_loop`)."""
        from refseg.train.loop import run_loop

        output = run_loop(self, self.total_steps)
        if self.lora:  # the grounder to pair with this decoder: the adapted VLM, merged
            merged = self.grounder.model.merge_and_unload()
            merged.save_pretrained(output / "vlm")
            self.grounder.processor.save_pretrained(output / "vlm")
        return self


def train(config: DecoderTrainConfig, **kwargs: Any) -> DecoderTrainer:
    """Build a :class:`DecoderTrainer` for ``config`` and run it (resuming if possible)."""
    from refseg.train.common import set_threads

    set_threads()
    return DecoderTrainer(config, **kwargs).train()
