"""The contract between a grounder's own features and the mask heads that read them.

Two heads read the grounding VLM's features instead of running a second image encoder: the box
decoder (:mod:`refseg.segmentation.boxdec`) and the trained refiner on VLM features
(:mod:`refseg.segmentation.refiners`, ``vlm:SOURCE``). The grounder captures the features during
its own pass (:mod:`refseg.grounding.features`); the heads only read them. What both sides must
agree on lives here, below both, so that neither imports the other:

* :class:`VLMFeatures`, what one (image, phrase) pair hands over;
* :func:`vision_sources`, the names and widths of the vision sources a config offers;
* :func:`vlm_fingerprint` (the feature layout of a config) and :func:`vision_digest` (the vision
  weights), which a head's checkpoint records and :func:`check_feature_grounder` checks, so a
  head never reads another model's features as noise without an error;
* :func:`feature_bytes`, the memory the features of one image hold.

torch is imported only where tensors are touched: a base install (no torch) can import this.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from refseg.errors import InputError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = [
    "FeatureGrounder",
    "VLMFeatures",
    "check_feature_grounder",
    "config_value",
    "feature_bytes",
    "inner_model",
    "vision_digest",
    "vision_sources",
    "vlm_fingerprint",
]


class FeatureGrounder(Protocol):
    """A grounder that can hand over its own features (``ground(..., features=SOURCES)``)."""

    name: str
    supports_features: bool
    model: Any

    @property
    def feature_fingerprint(self) -> str: ...


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """A field of a transformers config object or of its dict form (checkpoints store dicts)."""
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def vision_sources(vlm_config: Any, *, every: bool = False) -> list[tuple[str, int]]:
    """The default multi-scale sources of a VLM config: ``[(name, channels), ...]``.

    ``every`` adds every vision block's output (``blockN``, both families) to choose from.

    Qwen3-VL: every DeepStack layer (``deepstack0``...; already merged 2x2 to the text width
    by their own mergers) and the final merger output (``final``). Qwen2.5-VL has no DeepStack;
    its full-attention blocks before the last (``blockN``, ``4 * vision hidden`` channels: the
    2x2 patches of each merged token side by side) are the natural intermediate scales, since
    only they have seen the whole image.
    """
    model_type = config_value(vlm_config, "model_type", "")
    vision = config_value(vlm_config, "vision_config")
    text = config_value(vlm_config, "text_config")
    if vision is None or text is None:
        raise InputError("the VLM config has no vision_config/text_config")
    if model_type not in ("qwen3_vl", "qwen3_vl_moe", "qwen2_5_vl"):
        raise InputError(
            f"the box decoder needs a Qwen3-VL or Qwen2.5-VL config, got {model_type!r}"
        )
    out_hidden = int(config_value(vision, "out_hidden_size"))
    merge = int(config_value(vision, "spatial_merge_size", 2))
    block_dim = int(config_value(vision, "hidden_size")) * merge * merge
    if model_type in ("qwen3_vl", "qwen3_vl_moe"):
        deep = list(config_value(vision, "deepstack_visual_indexes", []) or [])
        out = [(f"deepstack{i}", out_hidden) for i in range(len(deep))] + [("final", out_hidden)]
    else:
        full = list(config_value(vision, "fullatt_block_indexes", []) or [])[:-1]
        out = [(f"block{i}", block_dim) for i in full] + [("final", out_hidden)]
    if every:
        names = {name for name, _ in out}
        depth = int(config_value(vision, "depth", 0) or 0)
        out += [(f"block{i}", block_dim) for i in range(depth) if f"block{i}" not in names]
    return out


def vlm_fingerprint(vlm_config: Any) -> str:
    """A short hash of the VLM config fields the decoder's inputs depend on.

    Two models with the same fingerprint give features of the same layout (sources, widths,
    patch grid); a decoder checkpoint records the fingerprint it was trained with and refuses
    any other model, whose features it would read as noise without an error.
    """
    vision = config_value(vlm_config, "vision_config")
    text = config_value(vlm_config, "text_config")
    fields = {
        "model_type": config_value(vlm_config, "model_type"),
        "text_hidden": config_value(text, "hidden_size"),
        "text_layers": config_value(text, "num_hidden_layers"),
        "vocab": config_value(text, "vocab_size"),
    }
    for key in (
        "depth",
        "hidden_size",
        "out_hidden_size",
        "patch_size",
        "spatial_merge_size",
        "deepstack_visual_indexes",
        "fullatt_block_indexes",
    ):
        fields[f"vision_{key}"] = config_value(vision, key)
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class VLMFeatures:
    """What the box decoder reads for one (image, phrase) pair.

    Attributes:
        sources: names of the vision sources, in the order of ``maps``.
        maps: one ``(C_s, h, w)`` tensor per source on the merged-token grid.
        hidden: ``(C_text,)`` answer state.
        input_size: ``(width, height)`` of the image as the VLM saw it (after its resize).
        fingerprint: :func:`vlm_fingerprint` of the model.
    """

    sources: list[str]
    maps: list[torch.Tensor]
    hidden: torch.Tensor
    input_size: tuple[int, int]
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Memory held by the tensors."""
        tensors = [*self.maps, self.hidden]
        return int(sum(t.numel() * t.element_size() for t in tensors))


def feature_bytes(vlm_config: Any, width: int, height: int, bytes_per_value: int = 2) -> int:
    """Bytes :class:`VLMFeatures` holds for one image of ``width x height`` (already resized by
    the processor), computed from a model config's shapes (no model needed)."""
    vision = config_value(vlm_config, "vision_config")
    cell = int(config_value(vision, "patch_size")) * int(
        config_value(vision, "spatial_merge_size", 2)
    )
    tokens = (width // cell) * (height // cell)
    channels = sum(c for _, c in vision_sources(vlm_config))
    text = int(config_value(config_value(vlm_config, "text_config"), "hidden_size"))
    return (channels * tokens + text) * bytes_per_value


def vision_digest(model: Any) -> str:
    """A short hash of the vision tower's weights: what its features depend on, and all they
    depend on. Two checkpoints of one config (a base model and its fine-tune) share a
    :func:`vlm_fingerprint` but not, unless the tower was frozen,
    this digest; a feature cache keyed by it never serves one model's maps to the other."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(inner_model(model).visual.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_feature_grounder(
    user: str, fingerprint: str, grounder: Any, *, vision: str | None = None
) -> None:
    """Refuse, with one line, a grounder whose features ``user`` (a head trained on the features
    of the VLM with ``fingerprint``) cannot read: an API grounder has none, another VLM config
    has features of another layout, which would be read as noise without an error; with
    ``vision`` (a :func:`vision_digest`), other vision weights are refused too."""
    if not getattr(grounder, "supports_features", False):
        raise InputError(
            f"{user} reads the grounder's own features; grounder "
            f"{getattr(grounder, 'name', grounder)} cannot give them (use a qwen3-vl: or "
            "qwen2.5-vl: grounder)"
        )
    theirs = grounder.feature_fingerprint
    if theirs != fingerprint:
        raise InputError(
            f"{user} was trained on another VLM config (fingerprint {fingerprint}) than "
            f"grounder {grounder.name} ({theirs}); use the model it was trained with"
        )
    if vision and vision_digest(grounder.model) != vision:
        raise InputError(
            f"{user} was trained on the features of another checkpoint (its vision weights "
            f"differ from grounder {grounder.name}'s); use the model it was trained with"
        )


def inner_model(model: Any) -> Any:
    """The ``Qwen*VLModel`` inside a conditional-generation model (or a peft wrapper)."""
    for _ in range(4):
        if hasattr(model, "visual") and hasattr(model, "language_model"):
            return model
        inner = getattr(model, "model", None)
        if inner is None:
            inner = getattr(model, "base_model", None)
        if inner is None:
            break
        model = inner
    raise ModelError("the box decoder needs a Qwen-VL model (no visual tower found)")
