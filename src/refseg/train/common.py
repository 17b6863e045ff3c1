"""What SFT and GRPO share: model/processor loading, LoRA, resume detection and step logs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from refseg.errors import InputError, ModelError
from refseg.train.config import TrainConfig


def guess_family(config: TrainConfig) -> str:
    """``qwen3-vl`` or ``qwen2.5-vl``: from the config, else from the model's config file/name."""
    if config.family:
        return config.family
    name = config.model.lower()
    config_file = Path(config.model) / "config.json"
    if config_file.is_file():
        try:
            name = json.loads(config_file.read_text()).get("model_type", name)
        except (OSError, ValueError):
            pass
    if "qwen2_5" in name or "qwen2.5" in name:
        return "qwen2.5-vl"
    return "qwen3-vl"


def convention_for(config: TrainConfig, model: Any, processor: Any) -> Any:
    """The coordinate convention of the trained model: the one its grounder will read.

    Taken from :class:`~refseg.grounding.qwen.QwenGrounder` built on the very model and
    processor being trained (0-1000 for Qwen3-VL; pixels of the processor-resized image, with
    this processor's pixel budget, for Qwen2.5-VL), so SFT targets, rewards and inference can
    never disagree. ``config.coords``, when set, must name that convention.
    """
    from refseg.grounding.qwen import QwenGrounder

    family = guess_family(config)
    convention = QwenGrounder(model, processor, family=family).convention
    if config.coords is not None and config.coords.split(":")[0] != convention.kind:
        raise InputError(
            f"coords {config.coords!r}: the {family} grounder reads {convention.kind} answers; "
            "remove coords or set it to that"
        )
    return convention


def load_processor(config: TrainConfig) -> Any:
    """The grounder's processor (image-only, as inference uses) with the pixel bounds applied."""
    from refseg.grounding.qwen import load_processor as qwen_processor

    try:
        processor = qwen_processor(
            config.model,
            family=guess_family(config),
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
        )
    except OSError as exc:
        raise ModelError(
            f"cannot load the processor of {config.model}: {str(exc).splitlines()[0]}"
        ) from None
    # Left padding: generation appends to the right end of every prompt in a batch.
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    return processor


def stage_inputs(
    config: TrainConfig, model: Any = None, processor: Any = None, samples: list | None = None
) -> tuple[Any, Any, Any, list]:
    """``(processor, model, convention, samples)`` for a training stage: the ones passed in
    (scripts that keep them in memory between stages), the rest loaded from ``config``.

    With beta > 0 and no LoRA, TRL loads the KL reference model from
    ``model.config._name_or_path``: ``config.model`` (a hub id or a saved folder) is that path.
    """
    from refseg.train.data import load_samples

    processor = processor if processor is not None else load_processor(config)
    if model is None:
        model = load_model(config)
    convention = convention_for(config, model, processor)
    if samples is None:
        samples = load_samples(config.datasets(), max_samples=config.max_samples, seed=config.seed)
    return processor, model, convention, samples


def load_model(config: TrainConfig, *, for_generation: bool = False) -> Any:
    """The model in training dtype, with the vision tower frozen unless ``train_vision``."""
    import torch
    from transformers import AutoModelForImageTextToText

    dtype = (
        torch.bfloat16 if (config.bf16 or (config.bf16 is None and _bf16_ok())) else torch.float32
    )
    try:
        model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=dtype)
    except OSError as exc:
        raise ModelError(f"cannot load model {config.model}: {str(exc).splitlines()[0]}") from None
    if config.lora is None and not config.train_vision:
        freeze_vision(model)
    return model


def _bf16_ok() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception:
        return False


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower (and its merger); returns the number of frozen tensors.

    Grounding is learned in the language model; the pretrained vision encoder is left intact
    unless asked, which also halves optimizer memory on full fine-tuning.
    """
    frozen = 0
    for name, param in model.named_parameters():
        if ".visual." in f".{name}" or name.startswith("visual.") or "vision_tower" in name:
            param.requires_grad_(False)
            frozen += 1
    return frozen


def peft_config(config: TrainConfig) -> Any:
    """A :class:`peft.LoraConfig` for the language model, or None for full fine-tuning."""
    if config.lora is None:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise InputError(
            "LoRA needs peft: pip install 'refseg[train]' (or set lora: null)"
        ) from None
    targets = config.lora.target_modules
    if isinstance(targets, list):
        # Only the language model: a regex that keeps the vision tower's projections out.
        targets = rf"^(?!.*visual).*\.({'|'.join(targets)})$"
    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def mask_loss_terms(logits: Any, target: Any) -> tuple[Any, Any, Any]:
    """BCE and soft Dice of mask logits against a 0-1 target, and the thresholded masks' IoU.

    The decoder and refiner trainers both learn masks with a quality head; they share these
    terms (Dice with +1 smoothing per mask; IoU 1 when both masks are empty, no gradient) and
    weight them in their own losses. Returns ``(bce, dice per mask, iou per mask)``.
    """
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    flat = target.flatten(1)
    dice = 1 - (2 * (prob * flat).sum(1) + 1) / (prob.sum(1) + flat.sum(1) + 1)
    with torch.no_grad():
        pred, truth = (logits > 0).flatten(1), flat > 0.5
        inter = (pred & truth).sum(1).float()
        union = (pred | truth).sum(1).float()
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return bce, dice, iou


def prune_checkpoints(output_dir: str | Path, limit: int | None) -> None:
    """Keep the newest ``limit`` ``checkpoint-N`` folders of refseg's own trainers (None: all).

    TRL's trainers prune their own (``save_total_limit``); the decoder and refiner trainers,
    which run their own loops, call this after each save.
    """
    if limit is None:
        return
    import shutil

    found = sorted(
        (int(p.name.split("-", 1)[1]), p)
        for p in Path(output_dir).glob("checkpoint-*")
        if p.name.split("-", 1)[1].isdigit()
    )
    for _, path in found[: max(0, len(found) - limit)]:
        shutil.rmtree(path, ignore_errors=True)


def save_final(trainer: Any, config: TrainConfig, output_dir: str | Path | None = None) -> None:
    """Save the trained model, its processor and how it must be asked (``refseg.json``).

    A model trained with a custom ``prompt_template`` answers only that prompt; writing it
    beside the weights lets every grounder built on the folder (CLI, batch, eval, server) ask it
    the same way without the user repeating the template.
    """
    from refseg.grounding.qwen import write_model_card

    folder = str(output_dir or config.output_dir)
    trainer.save_model(folder)
    if trainer.processing_class is not None:
        trainer.processing_class.save_pretrained(folder)
    write_model_card(folder, prompt_template=config.prompt_template, answer=config.answer)


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``output_dir`` (None if there is none).

    A checkpoint folder is complete once the trainer wrote its ``trainer_state.json`` (it is
    written last), so a run killed mid-save resumes from the previous one.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for child in root.iterdir():
        if not child.name.startswith("checkpoint-") or not child.is_dir():
            continue
        try:
            step = int(child.name.split("-", 1)[1])
        except ValueError:
            continue
        if not (child / "trainer_state.json").is_file():
            continue
        if best is None or step > best[0]:
            best = (step, child)
    return str(best[1]) if best else None


def step_log_callback(path: str | Path) -> Any:
    """A callback appending every log dict (with step and wall time) to a JSONL file."""
    from transformers import TrainerCallback

    class _JsonlLog(TrainerCallback):
        def __init__(self) -> None:
            self.path = Path(path)
            self.start = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[override]
            if not logs or not state.is_world_process_zero:
                return
            record = {"step": state.global_step, "time_s": round(time.time() - self.start, 3)}
            record.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    return _JsonlLog()


def set_threads() -> None:
    """Give torch this process's share of the CPU thread budget (:mod:`refseg.threads`:
    ``REFSEG_THREADS``, else the allowed cores divided among the launcher's local processes),
    so ranks on one shared machine do not each take every core."""
    import torch  # noqa: F401 - imported here so apply_torch sets it now

    from refseg.threads import apply_torch, thread_budget

    apply_torch(thread_budget())
