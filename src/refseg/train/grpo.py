"""``refseg train grpo``: GRPO on TRL's :class:`~trl.GRPOTrainer` with refseg's rewards.

The trainer samples ``num_generations`` answers per (image, phrase), scores them with the
configured rewards (:mod:`refseg.train.rewards`), and pushes the policy towards the answers that
beat their group's mean. Rerunning the same command resumes from the newest complete
``checkpoint-*`` in ``output_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refseg.errors import InputError
from refseg.train import common
from refseg.train.config import TrainConfig, grpo_args


def build_trainer(
    config: TrainConfig,
    *,
    model: Any = None,
    processor: Any = None,
    samples: list[Any] | None = None,
    segmenter: Any = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """A ready :class:`trl.GRPOTrainer` for ``config``.

    ``model``/``processor``/``samples``/``segmenter`` may be passed in (scripts that keep them
    in memory between stages); otherwise they are loaded from the config.
    """
    from trl import GRPOTrainer

    from refseg.train.data import grpo_rows, to_dataset
    from refseg.train.rewards import build_rewards

    if config.grpo.generation_backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise InputError("generation_backend vllm: vllm is not installed") from None
    args = grpo_args(config)
    processor, model, convention, samples = common.stage_inputs(config, model, processor, samples)
    dataset = to_dataset(
        grpo_rows(
            samples,
            think=config.think,
            coords=str(convention),
            template=config.prompt_template,
            answer=config.answer,
        )
    )
    rewards = config.grpo.rewards
    funcs, weights = build_rewards(
        rewards.weights,
        think=config.think,
        convention=convention,
        iou_threshold=rewards.iou_threshold,
        l1_threshold=rewards.l1_threshold,
        segmenter=segmenter if segmenter is not None else rewards.segmenter,
        max_path_vertices=rewards.max_path_vertices or config.path_vertices,
        raster_scale=rewards.raster_scale,
        boundary_ratio=rewards.boundary_ratio,
    )
    recorder = None
    if config.grpo.record_rollouts:
        from refseg.train.rollouts import attach

        recorder, funcs, weights = attach(
            config.grpo.record_rollouts, funcs, weights, convention=convention
        )
        recorder.prepare(_resume_step(config.output_dir))
    args.reward_weights = weights
    log_path = Path(config.output_dir) / "log.jsonl"
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=common.peft_config(config),
        callbacks=[common.step_log_callback(log_path), *(callbacks or [])],
    )
    trainer.rollout_recorder = recorder
    return trainer


def _resume_step(output_dir: str) -> int:
    """The step a rerun resumes from (0 for a fresh run): rollouts from it on are regenerated."""
    checkpoint = common.last_checkpoint(output_dir)
    return int(Path(checkpoint).name.split("-", 1)[1]) if checkpoint else 0


def train(config: TrainConfig, **kwargs: Any) -> Any:
    """Build the trainer, resume from the last checkpoint if any, train and save the model."""
    common.set_threads()
    trainer = build_trainer(config, **kwargs)
    resume = common.last_checkpoint(config.output_dir)
    trainer.train(resume_from_checkpoint=resume)
    common.save_final(trainer, config)
    return trainer
