"""Training configuration: dataclasses with help text, loaded from YAML, unknown keys refused.

A run is described by one YAML file (see ``train/configs/`` for the shipped starting points):

.. code-block:: yaml

    model: Qwen/Qwen3-VL-2B-Instruct      # hub id or a local folder
    dataset: refcocog:data/refcocog:train # any refseg dataset spec
    output_dir: runs/qwen3vl2b-refcocog-grpo
    think: true
    grpo: {num_generations: 8, beta: 0.04}
    rewards: {weights: {format: 0.5, accuracy: 1.0}}
    lora: {r: 16}                         # or `lora: null` for full fine-tuning

Top-level fields are shared by ``refseg train sft`` and ``refseg train grpo``; ``grpo`` /
``sft`` sections hold the stage-specific knobs. ``trainer_extra`` passes any further field of
TRL's :class:`~trl.GRPOConfig` / :class:`~trl.SFTConfig` verbatim (checked against its fields), so
nothing TRL offers is out of reach without a new config key here.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refseg.errors import InputError


@dataclass
class LoraSection:
    """LoRA adapters (peft). Set ``lora: null`` in YAML for full fine-tuning."""

    r: int = field(default=16, metadata={"help": "Adapter rank."})
    alpha: int = field(
        default=32, metadata={"help": "LoRA scaling numerator (effective scale alpha / r)."}
    )
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapter input."})
    target_modules: list[str] | str = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        metadata={
            "help": "Module names to adapt, or 'all-linear'. The vision tower is excluded by "
            "default "
            "(see `train_vision`)."
        },
    )


@dataclass
class RewardSection:
    """GRPO reward weights and thresholds (see :mod:`refseg.train.rewards`)."""

    weights: dict[str, float] = field(
        default_factory=lambda: {
            "format": 0.5,
            "validity": 0.25,
            "accuracy": 1.0,
            "no_target": 0.5,
        },
        metadata={
            "help": "Weight per reward: format, validity, accuracy, no_target, non_repetition, "
            "segmenter_iou. Zero or missing = not computed."
        },
    )
    iou_threshold: float = field(
        default=0.5, metadata={"help": "Accuracy reward: box IoU must exceed this."}
    )
    l1_threshold: float = field(
        default=0.02,
        metadata={
            "help": "Accuracy reward: mean corner error, as a fraction of the image side, must "
            "be below this."
        },
    )
    segmenter: str = field(
        default="onnx-sam", metadata={"help": "Segmenter spec for the segmenter_iou reward."}
    )
    max_path_vertices: int | None = field(
        default=None,
        metadata={
            "help": "path_validity reward: most outline vertices per instance (None = the "
            "config's path_vertices, the SFT targets' budget)."
        },
    )
    boundary_ratio: float = field(
        default=0.02,
        metadata={"help": "boundary_iou reward: boundary width as a fraction of the diagonal."},
    )
    raster_scale: float = field(
        default=1.0,
        metadata={
            "help": "mask_iou/boundary_iou: rasterize at this fraction of the image size. 1 (full) "
            "is the default: at 640x480 it was measured faster than 0.5 or 0.25 (rasterizing "
            "costs per outline crossing, resizing the GT per pixel) and exact; 0.25 is off by "
            "up to 0.07 IoU (benchmarks/bench_path_rewards.py)."
        },
    )


@dataclass
class GRPOSection:
    """Knobs specific to ``refseg train grpo`` (map to TRL's GRPOConfig)."""

    num_generations: int = field(
        default=8, metadata={"help": "Group size: rollouts sampled per prompt."}
    )
    beta: float = field(
        default=0.0,
        metadata={
            "help": "KL coefficient against the reference model (0 = no reference model is loaded)."
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of the rollouts."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling of the rollouts."})
    max_completion_length: int = field(default=256, metadata={"help": "Longest rollout in tokens."})
    num_iterations: int = field(
        default=1, metadata={"help": "Policy updates per generated batch (mu in the GRPO paper)."}
    )
    epsilon: float = field(default=0.2, metadata={"help": "PPO-style clip range."})
    loss_type: str = field(
        default="dapo", metadata={"help": "TRL loss type: grpo, dapo, dr_grpo, bnpo, ..."}
    )
    scale_rewards: str = field(
        default="group", metadata={"help": "Advantage scaling: group, batch or none."}
    )
    generation_backend: str = field(
        default="transformers",
        metadata={"help": "transformers, or vllm (colocate mode; needs vllm installed and a GPU)."},
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "vLLM colocate: GPU memory fraction."}
    )
    rewards: RewardSection = field(
        default_factory=RewardSection, metadata={"help": "Reward weights and thresholds."}
    )
    record_rollouts: str | None = field(
        default=None,
        metadata={
            "help": "Folder to append every rollout to (rollouts.jsonl: path, rasterized mask "
            "RLE, rewards, the sample's GT), the refiner's training data; resumes with the run."
        },
    )


@dataclass
class SFTSection:
    """Knobs specific to ``refseg train sft`` (map to TRL's SFTConfig)."""

    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Truncate sequences longer than this many tokens (None = no truncation; "
            "image tokens "
            "must never be cut)."
        },
    )
    reasoning_template: str | None = field(
        default="The user asks for {phrase}. I locate it in the image.",
        metadata={
            "help": "With think on, the <think> text of the targets ({phrase} is filled in); SFT "
            "has no "
            "reasoning traces, so this only teaches the structure."
        },
    )


@dataclass
class TrainConfig:
    """One training run (``refseg train sft|grpo --config FILE.yaml``)."""

    model: str = field(metadata={"help": "Hub id or local folder of the Qwen-VL model to train."})
    dataset: str | list[str] = field(
        metadata={
            "help": "Dataset spec(s) KIND:PATH[:SPLIT] (refseg.data.open_dataset), e.g. "
            "refcocog:data/refcocog:train."
        }
    )
    output_dir: str = field(
        metadata={
            "help": "Checkpoints and logs go here; rerunning resumes from the last checkpoint."
        }
    )
    family: str | None = field(
        default=None,
        metadata={"help": "qwen3-vl or qwen2.5-vl (None = guessed from the model name)."},
    )
    think: bool = field(default=False, metadata={"help": "Reason in <think> before the <answer>."})
    answer: str = field(
        default="box",
        metadata={
            "help": "Answer kind trained: box (box + interior point) or path (box + outline as "
            "SVG path data, the path mask head)."
        },
    )
    path_vertices: int = field(
        default=32,
        metadata={
            "help": "answer: path: most vertices of an SFT target outline per instance (all its "
            "rings: parts and holes), traced from the GT mask."
        },
    )
    coords: str | None = field(
        default=None,
        metadata={
            "help": "Coordinate convention of the answers; None = the family's own, which is what "
            "its grounder reads: norm1000 (0-1000 grid) for Qwen3-VL, resized (pixels of the "
            "processor-resized image, budget from min_pixels/max_pixels) for Qwen2.5-VL."
        },
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "User text of the prompt with {phrase} filled in; None = the protocol's "
            "prompt, which is what the grounder sends. Only for models trained from scratch "
            "(they must be prompted the same way at inference)."
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Processor's max pixels per image (caps visual tokens; None = the "
            "checkpoint's own)."
        },
    )
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Processor's min pixels per image (None = the checkpoint's own)."},
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training samples (None = all)."}
    )
    lora: LoraSection | None = field(
        default_factory=LoraSection,
        metadata={"help": "LoRA settings, or null for full fine-tuning."},
    )
    train_vision: bool = field(
        default=False, metadata={"help": "Also train the vision tower (full fine-tuning only)."}
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    lr_scheduler_type: str = field(
        default="constant_with_warmup", metadata={"help": "transformers scheduler name."}
    )
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer steps (-1 = use num_train_epochs)."}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs when max_steps is -1."})
    per_device_train_batch_size: int = field(
        default=8,
        metadata={
            "help": "Per-device batch (GRPO: completions, a multiple of num_generations across "
            "devices)."
        },
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Trade compute for memory."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision (None = on when a GPU supports it)."}
    )
    save_steps: int = field(
        default=100, metadata={"help": "Checkpoint interval in optimizer steps."}
    )
    save_total_limit: int | None = field(
        default=3, metadata={"help": "Keep at most this many checkpoints."}
    )
    logging_steps: int = field(default=1, metadata={"help": "Log every this many steps."})
    report_to: str | list[str] = field(
        default="none", metadata={"help": "Loggers: none, tensorboard, wandb, ..."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of data order, sampling and initialisation."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loader workers."})
    grpo: GRPOSection = field(
        default_factory=GRPOSection, metadata={"help": "GRPO-specific settings."}
    )
    sft: SFTSection = field(default_factory=SFTSection, metadata={"help": "SFT-specific settings."})
    trainer_extra: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Further GRPOConfig/SFTConfig fields passed verbatim (checked against TRL)."
        },
    )

    def datasets(self) -> list[str]:
        return [self.dataset] if isinstance(self.dataset, str) else list(self.dataset)


# --------------------------------------------------------------------------------------------
# Runs of refseg's own trainers (box decoder, refiner)


@dataclass(kw_only=True)
class RunConfig:
    """The run fields of refseg's own trainers (``refseg train decoder`` / ``refiner``), declared
    once: where the run lives, how long it is, its optimizer and its save/log cadence. The shared
    loop (:mod:`refseg.train.loop`) reads them.

    A trainer's config subclasses this and adds its own fields; where a trainer wants another
    default it re-declares the field with :func:`run_default` (the help text stays this one
    unless given). The fields are keyword-only, so a subclass may still declare required fields.
    """

    output_dir: str = field(
        metadata={
            "help": "Checkpoints (checkpoint-N), log.jsonl and the final model go here; a rerun "
            "resumes from the newest checkpoint."
        }
    )
    max_steps: int = field(default=500, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint interval in steps."})
    save_total_limit: int | None = field(
        default=3, metadata={"help": "Keep at most this many checkpoints (None: all)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log every this many steps."})
    seed: int = field(
        default=0,
        metadata={"help": "Seed of data order, perturbations and initialisation (exact resume)."},
    )

    def check_run(self, where: str, *, at_least_one: tuple[str, ...] = ()) -> None:
        """One-line errors: ``at_least_one`` (the trainer's own fields, e.g. its batch size),
        then ``save_steps`` and ``logging_steps``, must be at least 1."""
        for name in (*at_least_one, "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise InputError(f"{where}: {name} must be at least 1")


def run_default(name: str, default: Any, help_text: str | None = None) -> Any:
    """A :class:`RunConfig` field re-declared with a trainer's own default (and help)."""
    base = RunConfig.__dataclass_fields__[name]
    text = base.metadata["help"] if help_text is None else help_text
    return field(default=default, kw_only=True, metadata={"help": text})


# --------------------------------------------------------------------------------------------
# Loading


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _section_type(tp: Any) -> type | None:
    """The dataclass inside ``X``, ``X | None`` or ``Optional[X]``, else None."""
    if _is_dataclass_type(tp):
        return tp
    for arg in typing.get_args(tp):
        if _is_dataclass_type(arg):
            return arg
    return None


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(
            f"{where}: unknown key {short_repr(unknown[0])} (known: {', '.join(sorted(fields))})"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        section = _section_type(hints[name])
        if section is not None and value is not None:
            kwargs[name] = _build(section, value, f"{where}.{name}")
        else:
            kwargs[name] = _check_scalar(value, hints[name], f"{where}.{name}")
    missing = [
        f.name
        for f in fields.values()
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        # A class's own keys before inherited ones (a decoder run names ``model`` before the
        # RunConfig's ``output_dir``).
        own = inspect.get_annotations(cls)
        missing.sort(key=lambda name: name not in own)
        raise InputError(f"{where}: missing required key {short_repr(missing[0])}")
    return cls(**kwargs)


def _check_scalar(value: Any, tp: Any, where: str) -> Any:
    """Light type checks with YAML's usual coercions (1e-5 may arrive as a string)."""
    import types

    if tp is Any:
        return value
    is_union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    allowed = typing.get_args(tp) if is_union else (tp,)
    if value is None:
        if type(None) in allowed:
            return None
        raise InputError(f"{where}: may not be null")
    if float in allowed and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise InputError(f"{where}: expected a number, got {short_repr(value)}") from None
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if bool in allowed and isinstance(value, bool):
        return value
    if str in allowed and isinstance(value, str):
        return value
    origins = {typing.get_origin(a) or a for a in allowed}
    if list in origins and isinstance(value, list):
        items = [typing.get_args(a) for a in allowed if typing.get_origin(a) is list]
        item = items[0][0] if items and items[0] else Any
        if item in (str, int, float) and not all(
            isinstance(v, item) and not isinstance(v, bool) for v in value
        ):
            bad = next(v for v in value if not isinstance(v, item) or isinstance(v, bool))
            raise InputError(f"{where}: expected a list of {item.__name__}, got {short_repr(bad)}")
        return value
    if dict in origins and isinstance(value, dict):
        return value
    expected = " or ".join(sorted({getattr(o, "__name__", str(o)) for o in origins}))
    raise InputError(f"{where}: expected {expected}, got {short_repr(value)}")


#: A run file is a page of YAML; anything far larger is a wrong path, not a config.
_MAX_CONFIG_BYTES = 1024 * 1024
#: How deep a run file's mappings and lists may nest (the deepest real key is three levels).
MAX_YAML_DEPTH = 32


def _plain_loader() -> type:
    """PyYAML's safe loader without aliases, nesting at most :data:`MAX_YAML_DEPTH` deep.

    An alias (``*name``) is how 468 bytes become a billion leaves (the "billion laughs"), and no
    run file needs one; deep nesting exhausts the composer's recursion. Both are refused while
    composing, before anything is built.
    """
    import yaml

    class PlainLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"YAML aliases (*name) are not allowed in run files (line {mark.line + 1})"
                )
            self.depth += 1
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"nested more than {MAX_YAML_DEPTH} levels deep (line {mark.line + 1})"
                )
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return PlainLoader


def load_yaml(text: str, where: str) -> Any:
    """``text`` as plain YAML data (no aliases, bounded nesting); one line naming ``where``
    if it is not."""
    import yaml

    try:
        return yaml.load(text, Loader=_plain_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        line = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise InputError(f"{where}: {line}") from None
    except RecursionError:
        raise InputError(f"{where}: nested too deeply") from None


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about values from files: a
    containers' repr is as large as the container."""
    if isinstance(value, (list, tuple, dict, set)):
        return f"a {type(value).__name__} of {len(value):,} items"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_config(
    path: str | Path, overrides: dict[str, Any] | None = None, *, build: Any = None
) -> Any:
    """Read a YAML run file into a :class:`TrainConfig` (unknown keys are refused).

    ``overrides`` are applied on top (dotted keys, e.g. ``{"grpo.beta": 0.0}``), for scripts and
    tests that start from a shipped config. ``build`` (mapping, where) -> config replaces
    :func:`config_from_dict` for other run files (the box decoder's,
    :mod:`refseg.train.decoder`), which share this reading and its one-line errors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config {path} does not exist")
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise InputError(f"config {path}: over {_MAX_CONFIG_BYTES // 1024} KiB; is it a run file?")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"config {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    data = load_yaml(text, f"config {path}") or {}
    if not isinstance(data, dict):
        raise InputError(f"config {path}: expected a mapping of keys, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                node[parent] = {}
            node = node[parent]
        node[leaf] = value
    return (build or config_from_dict)(data, where=path.name)


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a :class:`TrainConfig` from a plain mapping (what the YAML holds)."""
    config = _build(TrainConfig, data, where)
    weights_given = (
        isinstance(data.get("grpo"), dict)
        and isinstance(data["grpo"].get("rewards"), dict)
        and "weights" in data["grpo"]["rewards"]
    )
    if config.answer in ("path", "outline") and not weights_given:
        # The box rewards score points a path answer does not write: use the path set.
        config.grpo.rewards.weights = dict(PATH_REWARD_WEIGHTS)
    validate(config, where)
    return config


#: The reward weights of ``answer: path`` runs that do not set ``grpo.rewards.weights``.
PATH_REWARD_WEIGHTS = {
    "format": 0.5,
    "path_validity": 0.25,
    "mask_iou": 1.0,
    "boundary_iou": 0.5,
    "no_target": 0.5,
}


def validate(config: TrainConfig, where: str = "config") -> None:
    """Cross-field checks with one-line errors."""
    from refseg.grounding.coords import Convention
    from refseg.train.rewards import REWARD_NAMES

    if config.coords is not None:
        Convention.parse(config.coords)  # one-line error for an unknown convention
    from refseg.protocol import ANSWERS

    if config.answer not in ANSWERS:
        raise InputError(
            f"{where}: answer must be {' or '.join(ANSWERS)}, got {short_repr(config.answer)}"
        )
    if not 3 <= config.path_vertices <= 10_000:
        raise InputError(f"{where}: path_vertices must be 3 to 10000, got {config.path_vertices}")
    budget = config.grpo.rewards.max_path_vertices
    if budget is not None and not 3 <= budget <= 100_000:
        raise InputError(f"{where}: grpo.rewards.max_path_vertices must be 3 to 100000")
    if not 0.05 <= config.grpo.rewards.raster_scale <= 1.0:
        raise InputError(f"{where}: grpo.rewards.raster_scale must be 0.05 to 1")
    if not 0 < config.grpo.rewards.boundary_ratio <= 0.5:
        raise InputError(f"{where}: grpo.rewards.boundary_ratio must be in (0, 0.5]")
    if config.family not in (None, "qwen3-vl", "qwen2.5-vl"):
        raise InputError(
            f"{where}: family must be qwen3-vl or qwen2.5-vl, got {short_repr(config.family)}"
        )
    g = config.grpo
    if g.num_generations < 2:
        raise InputError(
            f"{where}: grpo.num_generations must be at least 2 (advantages are group-relative)"
        )
    if g.generation_backend not in ("transformers", "vllm"):
        raise InputError(f"{where}: grpo.generation_backend must be transformers or vllm")
    unknown = sorted(set(g.rewards.weights) - set(REWARD_NAMES))
    if unknown:
        raise InputError(
            f"{where}: unknown reward {short_repr(unknown[0])} in grpo.rewards.weights "
            f"(known: {', '.join(REWARD_NAMES)})"
        )
    for name, value in g.rewards.weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(
                f"{where}: grpo.rewards.weights.{name} must be a number, got {short_repr(value)}"
            )
    if not any(float(v) for v in g.rewards.weights.values()):
        raise InputError(f"{where}: grpo.rewards.weights are all zero")
    if config.train_vision and config.lora is not None:
        raise InputError(f"{where}: train_vision needs full fine-tuning (lora: null)")
    check_templates(config, where)


def check_templates(config: Any, where: str = "config") -> None:
    """The config's templates fill in only ``{phrase}`` (see
    :func:`~refseg.protocol.templates.check_template`): checked here so that ``train check``
    refuses what training would otherwise write into the model's card."""
    from refseg.protocol.templates import check_template

    if getattr(config, "prompt_template", None) is not None:
        check_template(config.prompt_template, f"{where}: prompt_template")
    sft = getattr(config, "sft", None)
    if sft is not None and sft.reasoning_template is not None:
        check_template(sft.reasoning_template, f"{where}: sft.reasoning_template", required=False)


def check_datasets(config: TrainConfig, where: str = "config") -> None:
    """Refuse dataset specs that are malformed or whose path does not exist.

    ``refseg train check`` calls this so that a config it calls ok can start training: without
    it a typo in a dataset path was found only after the model had loaded. Relative paths are
    read from the current folder, as the trainers read them; the datasets are not opened (that
    can take minutes), so a present but unreadable folder is still found by the trainer.
    """
    from refseg.data.base import DatasetSpec

    for spec in config.datasets():
        path = DatasetSpec.parse(spec).path
        if not path.exists():
            shown = path if path.is_absolute() else f"{path} (from {Path.cwd()})"
            raise InputError(f"{where}: dataset {spec}: {shown} does not exist")


def describe(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(key, default, help)`` rows of every config key, for ``refseg train keys``."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        section = _section_type(hints[f.name])
        key = f"{prefix}{f.name}"
        if section is not None:
            rows.append((key, "{...}", f.metadata.get("help", "")))
            rows.extend(describe(section, key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "(required)"
        rows.append((key, default, f.metadata.get("help", "")))
    return rows


# --------------------------------------------------------------------------------------------
# TRL arguments


def _common_args(config: TrainConfig) -> dict[str, Any]:
    bf16 = config.bf16
    if bf16 is None:
        try:
            import torch

            bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        except Exception:
            bf16 = False
    return {
        "output_dir": config.output_dir,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "max_steps": config.max_steps,
        "num_train_epochs": config.num_train_epochs,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "activation_checkpointing": config.gradient_checkpointing,
        "bf16": bf16,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "logging_steps": config.logging_steps,
        "report_to": config.report_to,
        "seed": config.seed,
        "data_seed": config.seed,
        "dataloader_num_workers": config.dataloader_num_workers,
        "remove_unused_columns": False,
    }


def _apply_extra(cls: type, kwargs: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(extra) - names)
    if unknown:
        raise InputError(f"trainer_extra: {short_repr(unknown[0])} is not a {cls.__name__} field")
    return {**kwargs, **extra}


def grpo_args(config: TrainConfig) -> Any:
    """TRL :class:`~trl.GRPOConfig` for ``config`` (no model is loaded)."""
    from trl import GRPOConfig

    g = config.grpo
    kwargs = _common_args(config)
    kwargs.update(
        num_generations=g.num_generations,
        beta=g.beta,
        temperature=g.temperature,
        top_p=g.top_p,
        max_completion_length=g.max_completion_length,
        num_iterations=g.num_iterations,
        epsilon=g.epsilon,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        log_completions=False,
    )
    if g.generation_backend == "vllm":
        kwargs.update(
            use_vllm=True,
            vllm_mode="colocate",
            vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        )
    kwargs = _apply_extra(GRPOConfig, kwargs, config.trainer_extra)
    try:
        return GRPOConfig(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"GRPO settings rejected by TRL: {str(exc).splitlines()[0]}") from None


def sft_args(config: TrainConfig) -> Any:
    """TRL :class:`~trl.SFTConfig` for ``config`` (no model is loaded)."""
    from trl import SFTConfig

    kwargs = _common_args(config)
    kwargs.update(max_length=config.sft.max_length, completion_only_loss=True)
    kwargs = _apply_extra(SFTConfig, kwargs, config.trainer_extra)
    try:
        return SFTConfig(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"SFT settings rejected by TRL: {str(exc).splitlines()[0]}") from None
