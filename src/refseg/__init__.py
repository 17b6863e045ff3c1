"""refseg: language-guided image segmentation.

A grounder (a vision-language model) turns a phrase into boxes and interior points (or an
outline); a mask head (a promptable segmenter of the SAM family, a refiner, a box decoder) turns
those into masks::

    import refseg
    pipe = refseg.load_pipeline("qwen3-vl:Qwen/Qwen3-VL-2B-Instruct", "onnx-sam",
                                refseg.PipelineOptions(think=True))
    result = pipe("photo.jpg", "the man in red on the left")
"""

from __future__ import annotations

from refseg.errors import InputError, ModelError, RefsegError, WeightsError
from refseg.grounding import load_grounder
from refseg.image import load_image
from refseg.pipeline import Pipeline, PipelineOptions, load_pipeline, segment_prompts
from refseg.segmentation import load_segmenter
from refseg.types import Instance, Prompt, Result

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "Instance",
    "ModelError",
    "Pipeline",
    "PipelineOptions",
    "Prompt",
    "RefsegError",
    "Result",
    "WeightsError",
    "load_grounder",
    "load_image",
    "load_pipeline",
    "load_segmenter",
    "segment_prompts",
]
