"""RefShapes expressions: descriptors, the unambiguity checks, and phrasing templates.

Every expression is checked against the whole scene before it is emitted:

* descriptors (``the red circle``, ``the circle``, ``the red shape``) refer by count: a
  singular one is used only when exactly one object matches;
* absolute position (``the leftmost square``) needs the target ahead of every other match by a
  clear margin (:data:`POSITION_MARGIN`) in *both* its visible centre and its visible edge;
* relations (``the triangle above the blue circle``) use a three-valued test per candidate:
  clearly true (direction within 35° and a visible gap), clearly false (more than 65° off), or
  unclear; an expression is emitted only when exactly one candidate is clearly true and all
  others are clearly false, and the anchor is itself uniquely described;
* comparisons (``the larger of the two stars``) need exactly two matches of different size class
  (radius ratio about 1.45) whose visible areas also differ by at least 1.5x;
* multi-target (``all green shapes``) needs at least two matches, all well visible;
* no-target (``the purple triangle``) names a descriptor nothing in the scene matches.

Targets (and every member of a multi-target set) are at least :data:`TARGET_VISIBLE` visible,
anchors :data:`ANCHOR_VISIBLE`; every object is at least ``MIN_VISIBLE`` visible by layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from refseg.data.refshapes_scene import SceneObject

TARGET_VISIBLE = 0.7
ANCHOR_VISIBLE = 0.6
#: How far (fraction of the image side) an extreme must lead every other match, in both its
#: visible centre and its visible edge, for "leftmost"-style expressions.
POSITION_MARGIN = 0.08
#: Relation cones (degrees): clearly in the direction / clearly not.
REL_TRUE_DEG, REL_FALSE_DEG = 35.0, 65.0

Descriptor = tuple[str | None, str | None]  # (colour, shape); None = unspecified


def matches(obj: SceneObject, d: Descriptor) -> bool:
    return (d[0] is None or obj.colour == d[0]) and (d[1] is None or obj.shape == d[1])


def members(objects: list[SceneObject], d: Descriptor) -> list[int]:
    return [i for i, o in enumerate(objects) if matches(o, d)]


def descriptors_of(obj: SceneObject) -> list[Descriptor]:
    return [(obj.colour, obj.shape), (None, obj.shape), (obj.colour, None)]


def noun_phrase(d: Descriptor, *, plural: bool = False) -> str:
    """``red circle`` / ``circle`` / ``red shape`` (plural: ``red circles`` ...)."""
    noun = (d[1] or "shape") + ("s" if plural else "")
    return f"{d[0]} {noun}" if d[0] else noun


@dataclass
class Expression:
    """A checked referring expression before phrasing."""

    kind: str
    difficulty: str
    targets: list[int]
    descriptor: Descriptor
    slots: dict[str, Any] = field(default_factory=dict)
    anchor: int | None = None

    def involved(self) -> list[int]:
        """Objects the phrase is about (targets and anchor)."""
        return self.targets + ([self.anchor] if self.anchor is not None else [])


def _single_attribute_unique(objects: list[SceneObject], index: int) -> bool:
    obj = objects[index]
    return any(len(members(objects, d)) == 1 for d in descriptors_of(obj)[1:])


def attribute_expressions(objects: list[SceneObject]) -> list[Expression]:
    out = []
    for i, obj in enumerate(objects):
        if obj.visible_fraction() < TARGET_VISIBLE:
            continue
        easy = len(objects) == 1 or _single_attribute_unique(objects, i)
        for d in descriptors_of(obj):
            if len(members(objects, d)) == 1:
                out.append(Expression("attribute", "easy" if easy else "medium", [i], d))
    return out


_POSITION_AXES = {  # direction -> (axis index, sign): smaller signed value = more extreme
    "left": (0, 1.0),
    "right": (0, -1.0),
    "top": (1, 1.0),
    "bottom": (1, -1.0),
}


def position_expressions(objects: list[SceneObject], size: int) -> list[Expression]:
    margin = POSITION_MARGIN * size
    out = []
    seen: set[Descriptor] = set()
    for obj in objects:
        for d in descriptors_of(obj):
            if d in seen:
                continue
            seen.add(d)
            group = members(objects, d)
            if len(group) < 2:
                continue
            for direction, (axis, sign) in _POSITION_AXES.items():
                centre = {i: sign * objects[i].visible_centre()[axis] for i in group}
                side = axis if sign > 0 else axis + 2  # x1 / y1 ahead, or x2 / y2
                edge = {i: sign * objects[i].visible_box()[side] for i in group}
                best = min(group, key=lambda i: centre[i])
                others = [i for i in group if i != best]
                if objects[best].visible_fraction() < TARGET_VISIBLE:
                    continue
                if all(
                    centre[j] - centre[best] >= margin and edge[j] - edge[best] >= margin
                    for j in others
                ):
                    out.append(
                        Expression("position", "medium", [best], d, {"direction": direction})
                    )
    return out


def relation_state(obj: SceneObject, anchor: SceneObject, direction: str, size: int) -> str:
    """``"true"``, ``"false"`` or ``"unclear"``: is ``obj`` ``direction`` of ``anchor``?"""
    ox, oy = obj.visible_centre()
    ax, ay = anchor.visible_centre()
    dx, dy = ox - ax, oy - ay
    obox, abox = obj.visible_box(), anchor.visible_box()
    if direction == "above":
        primary, secondary, gap = -dy, dx, abox[1] - obox[3]
    elif direction == "below":
        primary, secondary, gap = dy, dx, obox[1] - abox[3]
    elif direction == "left":
        primary, secondary, gap = -dx, dy, abox[0] - obox[2]
    else:
        primary, secondary, gap = dx, dy, obox[0] - abox[2]
    angle = math.degrees(math.atan2(abs(secondary), primary))
    if angle <= REL_TRUE_DEG and gap >= 0.02 * size:
        return "true"
    if angle >= REL_FALSE_DEG:
        return "false"
    return "unclear"


def unique_descriptors(objects: list[SceneObject], index: int) -> list[Descriptor]:
    return [d for d in descriptors_of(objects[index]) if len(members(objects, d)) == 1]


def relation_expressions(objects: list[SceneObject], size: int) -> list[Expression]:
    out = []
    for a, anchor in enumerate(objects):
        if anchor.visible_fraction() < ANCHOR_VISIBLE:
            continue
        anchor_names = unique_descriptors(objects, a)
        if not anchor_names:
            continue
        seen: set[Descriptor] = set()
        for obj in objects:
            for d in descriptors_of(obj):
                if d in seen:
                    continue
                seen.add(d)
                group = [i for i in members(objects, d) if i != a]
                if len(group) < 2:  # with one candidate the relation would be decoration
                    continue
                for direction in ("above", "below", "left", "right"):
                    states = {i: relation_state(objects[i], anchor, direction, size) for i in group}
                    true = [i for i, s in states.items() if s == "true"]
                    if len(true) != 1 or any(s == "unclear" for s in states.values()):
                        continue
                    if objects[true[0]].visible_fraction() < TARGET_VISIBLE:
                        continue
                    for name in anchor_names:
                        out.append(
                            Expression(
                                "relation",
                                "hard",
                                true,
                                d,
                                {"direction": direction, "anchor_descriptor": name},
                                anchor=a,
                            )
                        )
    return out


def comparison_expressions(objects: list[SceneObject]) -> list[Expression]:
    out = []
    seen: set[Descriptor] = set()
    for obj in objects:
        for d in descriptors_of(obj):
            if d in seen:
                continue
            seen.add(d)
            group = members(objects, d)
            if len(group) != 2:
                continue
            i, j = group
            if min(objects[i].visible_fraction(), objects[j].visible_fraction()) < TARGET_VISIBLE:
                continue
            if objects[i].size == objects[j].size:
                continue
            big, small = (i, j) if objects[i].radius > objects[j].radius else (j, i)
            if objects[big].visible_area() < 1.5 * objects[small].visible_area():
                continue
            out.append(Expression("comparison", "hard", [big], d, {"comparative": "larger"}))
            out.append(Expression("comparison", "hard", [small], d, {"comparative": "smaller"}))
    return out


def multi_expressions(objects: list[SceneObject]) -> list[Expression]:
    out = []
    seen: set[Descriptor] = set()
    for obj in objects:
        for d in descriptors_of(obj):
            if d in seen:
                continue
            seen.add(d)
            group = members(objects, d)
            if len(group) < 2:
                continue
            if any(objects[i].visible_fraction() < TARGET_VISIBLE for i in group):
                continue
            out.append(Expression("multi", "medium", group, d, {"count": len(group)}))
    return out


def no_target_expression(objects: list[SceneObject], d: Descriptor) -> Expression | None:
    """``d`` as a no-target expression if nothing matches it (``None`` otherwise)."""
    if members(objects, d):
        return None
    hard = (d[0] is None or any(o.colour == d[0] for o in objects)) and (
        d[1] is None or any(o.shape == d[1] for o in objects)
    )
    difficulty = "medium" if hard and len(objects) > 1 else "easy"
    return Expression("no_target", difficulty, [], d)


# ------------------------------------------------------------------------------------------
# Phrasing. Template ids are recorded per sample; those marked OOD never appear outside the
# ``ood`` split.

#: (template id, pattern, out-of-distribution?) per kind. Placeholders: {np} noun phrase,
#: {pl} plural noun phrase, {colour}, {noun}, plus kind-specific slots.
TEMPLATES: dict[str, list[tuple[str, str, bool]]] = {
    "attribute": [
        ("attr.the", "the {np}", False),
        ("attr.in_picture", "the {np} in the picture", False),
        ("attr.find", "find the {np}", False),
        ("attr.that_is", "the {noun} that is {colour}", True),
        ("attr.only", "the only {np}", True),
    ],
    "position": [
        ("pos.superlative", "the {superlative} {np}", False),
        ("pos.far", "the {np} {far}", False),
        ("pos.most", "the {most} {np}", True),
    ],
    "relation": [
        ("rel.plain", "the {np} {rel} the {anchor}", False),
        ("rel.that_is", "the {np} that is {rel} the {anchor}", False),
        ("rel.inverse", "the {np} with the {anchor} {inverse} it", True),
    ],
    "comparison": [
        ("cmp.of_two", "the {larger} of the two {pl}", False),
        ("cmp.adjective", "the {bigger} {np}", False),
        ("cmp.one", "of the two {pl}, the {larger} one", True),
    ],
    "multi": [
        ("multi.all", "all {pl}", False),
        ("multi.all_the", "all the {pl}", False),
        ("multi.both", "both {pl}", False),
        ("multi.every", "every {np}", True),
    ],
}
TEMPLATES["no_target"] = TEMPLATES["attribute"]  # absence must not be visible in the wording

_POSITION_WORDS = {
    "left": {"superlative": "leftmost", "far": "on the far left", "most": "furthest-left"},
    "right": {"superlative": "rightmost", "far": "on the far right", "most": "furthest-right"},
    "top": {"superlative": "topmost", "far": "at the very top", "most": "highest"},
    "bottom": {"superlative": "bottommost", "far": "at the very bottom", "most": "lowest"},
}
_RELATION_WORDS = {
    "above": ("above", "below"),
    "below": ("below", "above"),
    "left": ("to the left of", "to the right of"),
    "right": ("to the right of", "to the left of"),
}


def applicable_templates(expr: Expression) -> list[tuple[str, str, bool]]:
    """The templates that can phrase ``expr`` (colour-needing ones need a colour ...)."""
    out = []
    for template in TEMPLATES[expr.kind]:
        tid = template[0]
        if tid == "attr.that_is" and expr.descriptor[0] is None:
            continue
        if tid == "multi.both" and len(expr.targets) != 2:
            continue
        out.append(template)
    return out


def phrase(expr: Expression, pattern: str) -> str:
    """Fill ``pattern`` for ``expr``."""
    d = expr.descriptor
    slots: dict[str, str] = {
        "np": noun_phrase(d),
        "pl": noun_phrase(d, plural=True),
        "colour": d[0] or "",
        "noun": d[1] or "shape",
    }
    if expr.kind == "position":
        slots.update(_POSITION_WORDS[expr.slots["direction"]])
    elif expr.kind == "relation":
        rel, inverse = _RELATION_WORDS[expr.slots["direction"]]
        slots.update(rel=rel, inverse=inverse, anchor=noun_phrase(expr.slots["anchor_descriptor"]))
    elif expr.kind == "comparison":
        larger = expr.slots["comparative"] == "larger"
        slots.update(
            larger="larger" if larger else "smaller", bigger="bigger" if larger else "smaller"
        )
    return pattern.format(**slots)
