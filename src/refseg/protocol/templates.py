"""Prompt templates: the user-turn text that asks a grounding model for boxes or outlines.

Three answer kinds share one wording for the coordinate convention and the empty answer:

* ``box`` (the default): a box and one interior point per object, for a promptable segmenter;
* ``path``: a box and the object's outline as SVG path data in the same coordinates (the path
  mask head, after Moondream Segmentation), rasterized and optionally refined into the mask;
* ``outline``: a box and the outline in the compact box-relative encoding of
  :mod:`refseg.protocol.outline` (the same mask head; about half the tokens of a path).
"""

from __future__ import annotations

import string

from refseg.errors import InputError

#: No system prompt: every instruction is in the user turn, so the model's own chat template
#: default (if any) is kept and the same text works through any chat-completions server.
SYSTEM_PROMPT: str | None = None

#: The coordinate wordings :func:`build_prompt` knows; ``resized:...`` specs use the pixel wording
#: because a Qwen2.5-VL model sees (and answers in) pixels of its own resized input.
COORDS = ("norm1000", "pixels")

#: The answer kinds :func:`build_prompt` can ask for.
ANSWERS = ("box", "path", "outline")

_COORD_TEXT = {
    "norm1000": (
        "Coordinates are integers on a 0-1000 scale relative to the image size: (0, 0) is the "
        "top-left corner and (1000, 1000) the bottom-right corner, whatever the image's size."
    ),
    "pixels": (
        "Coordinates are integer pixel positions in the image as you see it: (0, 0) is the "
        "top-left corner, x grows to the right and y downwards."
    ),
}

_FORMAT_EXAMPLE = '[{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}]'
PATH_FORMAT_EXAMPLE = '[{"bbox_2d": [x1, y1, x2, y2], "path": "M x y L x y L x y ... Z"}]'
OUTLINE_FORMAT_EXAMPLE = '[{"bbox_2d": [x1, y1, x2, y2], "outline": "xxyy xxyy xxyy ..."}]'
_EXAMPLES = {"box": _FORMAT_EXAMPLE, "path": PATH_FORMAT_EXAMPLE, "outline": OUTLINE_FORMAT_EXAMPLE}

_ASK = {
    "box": (
        "Several objects may match: list each of them. For each object give its bounding box "
        "[x1, y1, x2, y2] (top-left and bottom-right corners) and one point [x, y] that lies "
        "on the object itself, inside its box."
    ),
    "path": (
        "Several objects may match: list each of them. For each object give its bounding box "
        "[x1, y1, x2, y2] (top-left and bottom-right corners) and its outline as an SVG path "
        '("M x y L x y ... Z", absolute coordinates in the same system as the box), following '
        "the object's visible edge closely; an object seen in several separate parts gets one "
        '"M ... Z" subpath per part.'
    ),
    "outline": (
        "Several objects may match: list each of them. For each object give its bounding box "
        "[x1, y1, x2, y2] (top-left and bottom-right corners) and its outline as vertices "
        "relative to that box: each vertex is four digits, two for x and two for y, from 00 "
        "(the box's left or top edge) to 99 (its right or bottom edge), vertices separated by "
        "spaces, following the object's visible edge; an object seen in several separate parts "
        'gets one outline per part, separated by ";".'
    ),
}


#: A prompt template is a page at most, filling ``{phrase}`` a few times: a 1,000-character
#: phrase in 10,000 fields would be a 10 MB prompt.
MAX_TEMPLATE_CHARS = 10_000
MAX_TEMPLATE_FIELDS = 8


def check_template(
    template: object, what: str = "prompt template", *, required: bool = True
) -> str:
    """``template`` if it only fills in ``{phrase}``, else one line saying why not.

    Templates come from other people's model cards and configs. ``str.format`` reads more than
    field names: ``{phrase:>3000000000}`` pads to 3 GB, ``{phrase.__class__.__mro__}`` walks
    attributes, ``{phrase!r}`` changes the text. So exactly ``{phrase}`` is allowed (at most
    :data:`MAX_TEMPLATE_FIELDS` times, in at most :data:`MAX_TEMPLATE_CHARS` characters), and
    ``{{``/``}}`` for literal braces; nothing else. ``required``: the field must be there.
    """
    if not isinstance(template, str):
        raise InputError(f"{what} must be a string with a {{phrase}} field")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InputError(f"{what} is over {MAX_TEMPLATE_CHARS:,} characters")
    fields = 0
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(f"{what}: {exc} (write a literal brace as {{{{ or }}}})") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name != "phrase" or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "")
            shown = (shown + (f":{spec}" if spec else "") + "}")[:40]
            raise InputError(
                f"{what}: {shown!r} is not allowed; only {{phrase}} may be filled in "
                "(no format specs, conversions, indexes or attributes)"
            )
        fields += 1
    if required and not fields:
        raise InputError(f"{what} must contain a {{phrase}} field")
    if fields > MAX_TEMPLATE_FIELDS:
        raise InputError(f"{what} fills {{phrase}} {fields} times; at most {MAX_TEMPLATE_FIELDS}")
    return template


def _coords_key(coords: str) -> str:
    if coords == "norm1000":
        return "norm1000"
    if coords == "pixels" or coords == "resized" or coords.startswith("resized:"):
        return "pixels"
    raise InputError(f"unknown coordinate convention {coords!r}; use norm1000, pixels or resized")


def build_prompt(
    phrase: str,
    *,
    think: bool,
    coords: str = "norm1000",
    template: str | None = None,
    answer: str = "box",
) -> str:
    """The user-turn text asking the model to ground ``phrase`` (the image goes before it).

    ``coords`` names the coordinate convention the model answers in (``norm1000``, ``pixels``
    or a ``resized:...`` spec, which uses the pixel wording; a
    :class:`~refseg.grounding.coords.Convention` works too): the prompt states it because
    Qwen models follow either convention when told, and a mismatch silently misplaces boxes.

    ``answer`` is ``box`` (box + point per object), ``path`` (box + outline as SVG path data) or
    ``outline`` (box + the compact box-relative outline of :mod:`refseg.protocol.outline`, about
    half the tokens of a path).

    ``template`` (with a ``{phrase}`` field) replaces the whole text: for models trained with a
    custom prompt (``prompt_template`` in a training config), which must be asked the same way.
    """
    if not isinstance(phrase, str) or not phrase.strip():
        raise InputError("the phrase is empty")
    if answer not in ANSWERS:
        raise InputError(f"unknown answer kind {answer!r}; use {' or '.join(ANSWERS)}")
    if template is not None:
        return check_template(template).format(phrase=phrase.strip())
    wording = _COORD_TEXT[_coords_key(str(coords))]
    example = _EXAMPLES[answer]
    lines = [
        f'Find every object in the image that matches this description: "{phrase.strip()}".',
        _ASK[answer],
        wording,
        "If nothing in the image matches, the answer is the empty list [].",
    ]
    if think:
        lines.append(
            "First think step by step inside <think> </think> tags, then give the final answer "
            "as a JSON list inside <answer> </answer> tags, in this form:"
        )
        lines.append(f"<think>...</think><answer>{example}</answer>")
    else:
        lines.append(
            "Give only the answer, as a JSON list inside <answer> </answer> tags, in this form:"
        )
        lines.append(f"<answer>{example}</answer>")
    return "\n".join(lines)
