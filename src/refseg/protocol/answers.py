"""The answer types :func:`refseg.protocol.parse_answer` returns (model coordinates)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Moondream-style box-relative paths (the ``box_path`` key): coordinates on a 0-960 square
#: that spans the instance's ``bbox_2d`` (0 is the box's left/top edge, 960 its right/bottom).
BOX_PATH_VIEWBOX = 960.0

Ring = list[tuple[float, float]]


@dataclass
class ParsedInstance:
    """One instance as the model wrote it, in the model's coordinate space.

    ``polygons`` holds the outline of a path answer (one ring per subpath, already in the model's
    absolute coordinates whatever form was written); empty for a box answer. ``box_derived`` is
    true when the answer gave no box and ``box`` is the outline's bounding box.
    """

    box: tuple[float, float, float, float]
    points: list[tuple[float, float]] = field(default_factory=list)
    polygons: list[Ring] = field(default_factory=list)
    box_derived: bool = False
    #: The grounder's confidence in this instance from its token probabilities
    #: (:func:`refseg.protocol.confidence.instance_scores`); None when it has none.
    score: float | None = None

    @property
    def has_path(self) -> bool:
        return bool(self.polygons)


@dataclass
class ParsedAnswer:
    """What :func:`parse_answer` read from one model output.

    Attributes:
        instances: the instances, empty on error or for an explicit ``[]``.
        no_target: true only for an explicit empty answer (``[]``).
        reasoning: the ``<think>`` text (stripped), or the text before a lone ``</think>``.
        error: None when the answer was read, else a short reason.
        raw: the text given.
        has_think: a complete ``<think>...</think>`` block came before the answer.
        has_answer_tags: an ``<answer>`` tag was found.
        answer_closed: the ``<answer>`` was closed by ``</answer>``.
        repairs: each deviation from the canonical form that was tolerated (e.g.
            ``"single_quotes"``, ``"trailing_comma"``, ``"dict_not_list"``, ``"key:points"``);
            empty for a canonical answer. Training format rewards read this.
        truncated: the answer's list was cut off (the token limit); ``instances`` holds the
            objects it completed. Also a repair (``"truncated"``), so never canonical.
    """

    instances: list[ParsedInstance] = field(default_factory=list)
    no_target: bool = False
    reasoning: str | None = None
    error: str | None = None
    raw: str = ""
    has_think: bool = False
    has_answer_tags: bool = False
    answer_closed: bool = False
    repairs: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """The answer was read (instances or an explicit no-target)."""
        return self.error is None

    @property
    def canonical(self) -> bool:
        """Read without any repair, inside closed ``<answer>`` tags.

        Says nothing about reasoning: a format reward for thinking mode also checks ``has_think``.
        """
        return self.ok and self.has_answer_tags and self.answer_closed and not self.repairs
