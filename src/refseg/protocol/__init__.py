"""The answer protocol: the one prompt, parser and answer format shared by inference, evaluation
and training.

A grounding model is asked (:func:`build_prompt`) to answer with::

    <think>...</think><answer>[{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}, ...]</answer>

or, for the path mask head (``answer="path"``), with the object's outline as SVG path data in
the same coordinates as the box::

    <answer>[{"bbox_2d": [x1, y1, x2, y2], "path": "M x y L x y ... Z"}]</answer>

where the ``<think>`` block is present only when reasoning was asked for and ``[]`` means that
nothing in the image matches. Coordinates are in the model's own space (see
:mod:`refseg.grounding.coords`); this package never converts them.

Keeping prompt (:mod:`.templates`), parser (:mod:`.parser`, which documents every accepted form)
and SFT target formatting (:mod:`.formatting`) in one package is what makes a trained model's
answers parse at inference, and what makes the training format reward reward exactly what
inference can read. Everything is re-exported here: import from ``refseg.protocol``.
"""

from __future__ import annotations

from refseg.protocol.answers import BOX_PATH_VIEWBOX, ParsedAnswer, ParsedInstance
from refseg.protocol.formatting import format_answer
from refseg.protocol.parser import MAX_ANSWER_VERTICES, parse_answer
from refseg.protocol.templates import (
    ANSWERS,
    COORDS,
    PATH_FORMAT_EXAMPLE,
    SYSTEM_PROMPT,
    build_prompt,
)

__all__ = [
    "ANSWERS",
    "BOX_PATH_VIEWBOX",
    "COORDS",
    "MAX_ANSWER_VERTICES",
    "PATH_FORMAT_EXAMPLE",
    "SYSTEM_PROMPT",
    "ParsedAnswer",
    "ParsedInstance",
    "build_prompt",
    "format_answer",
    "parse_answer",
]
