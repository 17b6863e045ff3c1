"""The VLM's own features, caught during the grounding pass, for the box decoder.

The box decoder (:mod:`refseg.segmentation.boxdec`) needs, per (image, phrase) pair, the
multi-scale vision features of the image and a hidden state summarising the answer. Both are
computed anyway while the grounder answers; a second forward would double the VLM's cost (the
whole point of the head is to have no second encoder). :class:`FeatureCapture` hooks the model
for the duration of one ``generate`` (or one teacher-forced forward in training) and keeps:

* **vision**: the output of the vision tower's forward. Qwen3-VL: the DeepStack features and
  the final merger output, each ``(tokens, text width)``; Qwen2.5-VL: the final merger output
  and the outputs of the chosen full-attention blocks (put back from window order into raster
  order). Each is cut per image and reshaped to ``(C, h, w)`` on the merged-token grid.
* **answer state**: the last-layer hidden states (after the final norm) of the position that
  starts the answer and of every answer token fed back during generation, averaged up to the
  end of turn. With teacher forcing (training) the same positions are averaged, so training
  and inference see the same summary.

Nothing is captured unless asked (the hooks exist only inside the ``with`` block); the caught
tensors are detached, stay on the model's device in its dtype, and are dropped as soon as the
decoder has run (:class:`refseg.pipeline.Pipeline` clears ``Grounding.features``).
Per image this costs ``sum(C_s) * h * w`` values plus one hidden vector: for Qwen3-VL-2B in
bfloat16 on a 1024x1024 image (32x32 merged tokens, 4 sources of 2048) 16 MiB; see
:func:`feature_bytes`.
"""

from __future__ import annotations

from typing import Any

import torch

from refseg.errors import ModelError
from refseg.vlm_features import (
    VLMFeatures,
    check_feature_grounder,
    feature_bytes,
    inner_model,
    vision_digest,
)

__all__ = [
    "FeatureCapture",
    "VLMFeatures",
    "check_feature_grounder",
    "feature_bytes",
    "vision_digest",
    "vision_features",
]


def answer_length(tokens: list[int], stop_ids: set[int]) -> int:
    """How many generated tokens were fed back as the answer: up to the first stop token, or all
    but the last when generation hit its token limit (the last one is never fed back)."""
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return i
    return max(0, len(tokens) - 1)


def stop_ids(grounder: Any) -> set[int]:
    """The end-of-turn and padding token ids of a grounder's generation config."""
    config = grounder._generation_config()
    eos = config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {config.pad_token_id}
    return {int(t) for t in ids if t is not None}


def teacher_forced(
    grounder: Any,
    images: list[Any],
    phrases: list[str],
    answers: list[str] | list[list[int]],
    sources: list[str],
    *,
    grad: bool = False,
) -> list[VLMFeatures]:
    """:class:`VLMFeatures` of (image, phrase, answer) triples from one forward pass.

    Training has the answer (formatted from ground-truth boxes) instead of a generation; the
    same positions as :meth:`FeatureCapture.answer_states` (the answer start and every answer
    token) are averaged, so the decoder trains on what inference gives it. ``grad`` keeps the
    graph (LoRA training through the decoder loss).
    """
    batch = grounder.prepare(images, phrases)
    tokenizer = grounder.processor.tokenizer
    ids = [
        tokenizer(a, add_special_tokens=False).input_ids if isinstance(a, str) else list(a)
        for a in answers
    ]
    longest = max(1, max(len(i) for i in ids))
    pad = tokenizer.pad_token_id
    device = batch["input_ids"].device
    answer = torch.tensor([i + [pad] * (longest - len(i)) for i in ids], device=device)
    mask = torch.tensor([[1] * len(i) + [0] * (longest - len(i)) for i in ids], device=device)
    inputs = dict(batch)
    start = batch["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([batch["input_ids"], answer], dim=1)
    inputs["attention_mask"] = torch.cat([batch["attention_mask"], mask], dim=1)
    if "mm_token_type_ids" in batch:
        inputs["mm_token_type_ids"] = torch.cat(
            [batch["mm_token_type_ids"], torch.zeros_like(answer)], dim=1
        )
    context = torch.enable_grad() if grad else torch.no_grad()
    with context, FeatureCapture(grounder.model, sources, detach=not grad) as capture:
        grounder.model(**inputs, use_cache=False)
    states = capture.forced_states(start, [len(i) for i in ids])
    fingerprint = grounder.feature_fingerprint
    out = []
    for (maps, (gh, gw)), hidden in zip(capture.vision_maps(), states):
        size = (gw * grounder.factor, gh * grounder.factor)
        out.append(VLMFeatures(list(sources), maps, hidden, size, fingerprint))
    return out


def vision_features(grounder: Any, images: list[Any], sources: list[str]) -> list[VLMFeatures]:
    """The vision maps of ``images`` alone (no language-model pass, no answer state).

    The vision tower's output does not depend on the phrase, so a head that reads only these
    maps (the trained refiner on VLM features) can cache them per image at training time; at
    inference it takes the same maps from the grounding pass.
    """
    batch = grounder.prepare(images, ["object"] * len(images))
    inner = inner_model(grounder.model)
    with torch.no_grad(), FeatureCapture(grounder.model, sources) as capture:
        inner.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
    empty = torch.zeros(0)
    return [
        VLMFeatures(
            list(sources),
            maps,
            empty,
            (gw * grounder.factor, gh * grounder.factor),
            grounder.feature_fingerprint,
        )
        for maps, (gh, gw) in capture.vision_maps()
    ]


class FeatureCapture:
    """Hooks that record vision features and final-norm hidden states of one pass.

    Use as a context manager around ``model.generate(...)`` or ``model(...)``, then call
    :meth:`vision_maps` and :meth:`answer_states`/:meth:`forced_states`.
    """

    def __init__(self, model: Any, sources: list[str], *, detach: bool = True) -> None:
        self.model = model
        self.detach = detach
        self.sources = list(sources)
        self.inner = inner_model(model)
        config = getattr(model, "config", None)
        self.model_type = getattr(config, "model_type", "")
        self._handles: list[Any] = []
        self._vision: dict[str, torch.Tensor] = {}
        self._grid: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []
        self.prefill: torch.Tensor | None = None

    # -- hooks --------------------------------------------------------------------------------

    def __enter__(self) -> FeatureCapture:
        visual = self.inner.visual
        self._handles.append(visual.register_forward_hook(self._on_visual, with_kwargs=True))
        for name in self.sources:
            if name.startswith("block"):
                block = visual.blocks[int(name[5:])]
                self._handles.append(block.register_forward_hook(self._tap(name)))
        norm = self.inner.language_model.norm
        self._handles.append(norm.register_forward_hook(self._on_norm))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _tap(self, name: str):
        def hook(module: Any, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            self._vision[name] = self._keep(out)

        return hook

    def _on_visual(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if grid is None:
            raise ModelError("the vision tower was called without grid_thw")
        self._grid = grid.detach().cpu()
        self._vision["final"] = self._keep(output.pooler_output)
        for i, feat in enumerate(getattr(output, "deepstack_features", None) or []):
            self._vision[f"deepstack{i}"] = self._keep(feat)

    def _on_norm(self, module: Any, args: Any, output: torch.Tensor) -> None:
        if output.shape[1] == 1 and self.prefill is not None:
            self.steps.append(self._keep(output[:, 0]))
        else:  # the prefill (or a teacher-forced forward): every position
            self.prefill = self._keep(output)

    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach() if self.detach else tensor

    # -- results ------------------------------------------------------------------------------

    def vision_maps(self) -> list[tuple[list[torch.Tensor], tuple[int, int]]]:
        """Per image: the ``(C, h, w)`` maps of every source, and the merged grid ``(h, w)``."""
        if self._grid is None:
            raise ModelError("no image went through the vision tower in this pass")
        visual = self.inner.visual
        merge = int(visual.spatial_merge_size)
        grid = self._grid
        sizes = (grid.prod(-1) // (merge * merge)).tolist()
        per_source: dict[str, tuple[torch.Tensor, ...]] = {}
        for name in self.sources:
            if name not in self._vision:
                raise ModelError(f"the model did not produce the vision source {name!r}")
            feat = self._vision[name]
            if name.startswith("block"):  # one row per patch -> one per merged token
                feat = feat.reshape(feat.shape[0] // (merge * merge), -1)
                if hasattr(visual, "window_size"):  # Qwen2.5-VL: window order -> raster order
                    order = torch.argsort(self._window_index(visual, grid).to(feat.device))
                    feat = feat[order]
            per_source[name] = torch.split(feat, sizes)
        out = []
        for i, (t, h, w) in enumerate(grid.tolist()):
            gh, gw = h // merge, w // merge
            maps = [
                per_source[name][i].reshape(t, gh, gw, -1)[0].permute(2, 0, 1).contiguous()
                for name in self.sources
            ]
            out.append((maps, (gh, gw)))
        return out

    @staticmethod
    def _window_index(visual: Any, grid: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        index, _ = get_vision_window_index(
            grid,
            spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        return index

    def answer_states(self, new_tokens: torch.Tensor, stop_ids: set[int]) -> list[torch.Tensor]:
        """Per row of a ``generate``: the mean state of the answer-start position and of every
        answer token fed back, up to (not including) the first stop token."""
        if self.prefill is None:
            raise ModelError("the language model did not run in this pass")
        states = [self.prefill[:, -1], *self.steps]
        out = []
        for row in range(new_tokens.shape[0]):
            n = answer_length(new_tokens[row].tolist(), stop_ids)
            use = torch.stack([s[row] for s in states[: min(n + 1, len(states))]])
            out.append(use.float().mean(0))
        return out

    def forced_states(self, start: int, lengths: list[int]) -> list[torch.Tensor]:
        """Per row of a teacher-forced batch (prompt left-padded to ``start`` tokens, answers
        right-padded): the mean state of positions ``start - 1 .. start + n - 1``."""
        if self.prefill is None:
            raise ModelError("the language model did not run in this pass")
        return [
            self.prefill[row, start - 1 : start + n].float().mean(0)
            for row, n in enumerate(lengths)
        ]
