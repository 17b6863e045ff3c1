"""``refseg train sft``: teach the answer format from ground truth (TRL's SFTTrainer).

Targets are the GT boxes and one interior point per object (the distance-transform maximum of
its mask), written in the model's coordinate convention with :func:`refseg.protocol.format_answer`
— exactly what inference parses. The loss is on the completion only. This is the warm start for
GRPO: a model that cannot yet write a readable answer gets zero reward from every rollout and
GRPO has nothing to compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refseg.train import common
from refseg.train.config import TrainConfig, sft_args


def build_trainer(
    config: TrainConfig,
    *,
    model: Any = None,
    processor: Any = None,
    samples: list[Any] | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """A ready :class:`trl.SFTTrainer` for ``config`` (pieces may be passed in, as for GRPO)."""
    from trl import SFTTrainer

    from refseg.train.data import sft_rows, to_dataset

    args = sft_args(config)
    processor, model, convention, samples = common.stage_inputs(config, model, processor, samples)
    rows = sft_rows(
        samples,
        think=config.think,
        coords=str(convention),
        convention=convention,
        reasoning_template=config.sft.reasoning_template,
        template=config.prompt_template,
        answer=config.answer,
        path_vertices=config.path_vertices,
    )
    log_path = Path(config.output_dir) / "log.jsonl"
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(rows),
        processing_class=processor,
        peft_config=common.peft_config(config),
        callbacks=[common.step_log_callback(log_path), *(callbacks or [])],
    )


def train(config: TrainConfig, **kwargs: Any) -> Any:
    """Build the trainer, resume from the last checkpoint if any, train and save the model."""
    common.set_threads()
    trainer = build_trainer(config, **kwargs)
    trainer.train(resume_from_checkpoint=common.last_checkpoint(config.output_dir))
    common.save_final(trainer, config)
    return trainer
