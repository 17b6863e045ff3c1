"""The input side of a batch: a pairs JSONL or a folder of images with a phrase list, read and
validated whole before any work (errors read ``FILE: line N: ...``); see :mod:`refseg.batch`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refseg.errors import InputError

if TYPE_CHECKING:
    from refseg.types import Prompt


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """Read and validate the whole input first, so a typo on line 900 fails before any work.

    Errors are one line, ``FILE: line N: what is wrong``.
    """
    from refseg.pipeline import check_phrase

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    pairs, seen = [], set()
    folder = Path(os.path.abspath(path.parent))
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{path}: line {number}"
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{where}: not UTF-8 text (byte {exc.start + 1} of the line); save it as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON ({exc.msg})") from None
        except ValueError:  # an integer of more than 4300 digits
            raise InputError(f"{where}: not JSON (a number too long to read)") from None
        except RecursionError:
            raise InputError(f"{where}: not JSON (nested too deeply)") from None
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise InputError(f'{where}: needs an "image" path string')
        if not item["image"].strip() or "\0" in item["image"]:
            raise InputError(f'{where}: "image" is not a usable path')
        prompted = [key for key in PROMPT_KEYS if item.get(key) is not None]
        what: dict[str, Any]
        if prompted and item.get("phrase") is not None:
            raise InputError(
                f'{where}: give either a "phrase" or "boxes"/"points" prompts, not both'
            )
        if prompted:
            try:
                what = {"prompts": pair_prompts(item)}
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
        else:
            if not isinstance(item.get("phrase"), str):
                raise InputError(f'{where}: needs a "phrase" string, or "boxes"/"points" prompts')
            try:
                what = {"phrase": check_phrase(item["phrase"])}
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
        raw_id = item.get("id", number)
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise InputError(f'{where}: "id" must be a string or an integer')
        pair_id = str(raw_id)
        if pair_id in seen:
            raise InputError(f"{where}: duplicate id {pair_id!r}")
        seen.add(pair_id)
        try:
            image = str(folder / item["image"])  # an absolute "image" stays as it is
            image.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f'{where}: "image" is not valid text (a lone surrogate)') from None
        pairs.append({"id": pair_id, "image": image, **what})
    return pairs


#: The keys of a prompt-only pair (instead of ``"phrase"``).
PROMPT_KEYS = ("boxes", "points", "point_labels")


def _numbers(value: Any, size: int) -> list[float] | None:
    """``value`` as ``size`` finite floats, or None when it is not that (bools are not numbers,
    and JSON's ``NaN``/``Infinity`` that Python's reader accepts are not finite)."""
    if not isinstance(value, list) or len(value) != size:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        return None
    numbers = [float(v) for v in value]
    return numbers if all(math.isfinite(v) for v in numbers) else None


def _shown(value: Any) -> str:
    """A bad value as the line had it, short enough for a one-line error."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def pair_prompts(item: dict[str, Any]) -> dict[str, list]:
    """The ``boxes``/``points``/``point_labels`` of a prompt-only pair, normalized (floats, one
    label per point) and checked as far as they can be without the image, so a bad line fails
    before any work: the counts against :mod:`refseg.limits` (before the lists are walked),
    number shapes, boxes with an area, points at non-negative coordinates, and the rules of
    :func:`refseg.types.build_prompts` (points go with at most one box; points alone need a
    foreground one). What needs the image size is checked when the pair runs
    (:func:`_build_prompts`). Raises :class:`InputError` without the file and line.
    """
    from refseg.limits import check_prompt_counts

    raw = {key: item.get(key) for key in PROMPT_KEYS}
    shapes = {
        "boxes": "[x1, y1, x2, y2] boxes",
        "points": "[x, y] points",
        "point_labels": "labels",
    }
    for key, value in raw.items():
        if value is not None and not isinstance(value, list):
            raise InputError(f'"{key}" must be a list of {shapes[key]}')
    boxes_in, points_in = raw["boxes"] or [], raw["points"] or []
    labels_in = raw["point_labels"]
    if not boxes_in and not points_in:
        raise InputError('no prompts: "boxes" and "points" are both empty')
    # The counts first: a line of a million boxes is refused before any of them is read.
    check_prompt_counts(len(boxes_in) if boxes_in else 1, [len(points_in)])
    if labels_in is not None and len(labels_in) != len(points_in):
        raise InputError(
            f'"point_labels" needs one label per point ({len(labels_in)} labels, '
            f"{len(points_in)} points)"
        )
    boxes = []
    for number, value in enumerate(boxes_in, start=1):
        box = _numbers(value, 4)
        if box is None:
            raise InputError(
                f"box {number} ({_shown(value)}) must be 4 finite numbers x1, y1, x2, y2"
            )
        if not (box[0] < box[2] and box[1] < box[3]):
            raise InputError(
                f"box {number} ({_shown(value)}) has no area: need x1 < x2 and y1 < y2"
            )
        boxes.append(box)
    points = []
    for number, value in enumerate(points_in, start=1):
        point = _numbers(value, 2)
        if point is None:
            raise InputError(f"point {number} ({_shown(value)}) must be 2 finite numbers x, y")
        if point[0] < 0 or point[1] < 0:
            raise InputError(f"point {number} ({_shown(value)}) is outside the image (x, y < 0)")
        points.append(point)
    labels = [1] * len(points) if labels_in is None else []
    for number, value in enumerate(labels_in or [], start=1):
        if isinstance(value, bool) or value not in (0, 1):
            raise InputError(
                f"point label {number} ({_shown(value)}) must be 1 (foreground) or 0 (background)"
            )
        labels.append(int(value))
    if len(boxes) > 1 and points:
        raise InputError("points with several boxes are ambiguous: give points with one box")
    if not boxes and not any(labels):
        raise InputError("points alone need at least one foreground point (label 1)")
    return {"boxes": boxes, "points": points, "point_labels": labels}


def _build_prompts(pair: dict[str, Any], width: int, height: int) -> list[Prompt]:
    """A prompt-only pair's prompts on its image, by the rules of ``refseg segment --box/--point``
    (:func:`refseg.types.build_prompts`: boxes clipped, points inside, pixels x prompts)."""
    from refseg.types import build_prompts

    spec = pair["prompts"]
    points = [(x, y, label) for (x, y), label in zip(spec["points"], spec["point_labels"])]
    return build_prompts(spec["boxes"], points, width, height)


#: Image files a folder batch takes (by suffix, any case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: Bounds on a folder batch: entries scanned in the folder, and phrases in the list.
MAX_FOLDER_ENTRIES = 1_000_000
MAX_PHRASES = 10_000


def folder_pairs(folder: Path, phrases_file: Path) -> list[dict[str, Any]]:
    """Every image file directly in ``folder`` (sorted by name) with every phrase of
    ``phrases_file`` (one a line, UTF-8; blank lines skipped), as pairs with ids ``NAME#K``
    (K: the phrase's 1-based place in the list), so a rerun resumes like a pairs file."""
    from refseg.pipeline import check_phrase

    if not phrases_file.is_file():
        raise InputError(f"{phrases_file}: no such file")
    try:
        text = phrases_file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{phrases_file}: not UTF-8 text (byte {exc.start + 1})") from None
    except OSError as exc:
        raise InputError(f"{phrases_file}: cannot read it ({exc.strerror})") from None
    phrases = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(phrases) >= MAX_PHRASES:
            raise InputError(f"{phrases_file}: more than {MAX_PHRASES} phrases")
        try:
            phrases.append(check_phrase(line))
        except InputError as exc:
            raise InputError(f"{phrases_file}: line {number}: {exc}") from None
    if not phrases:
        raise InputError(f"{phrases_file}: no phrases (one a line)")
    names = []
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_FOLDER_ENTRIES:
                    raise InputError(f"{folder}: more than {MAX_FOLDER_ENTRIES} entries")
                if entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                    names.append(entry.name)
    except OSError as exc:
        raise InputError(f"{folder}: cannot list it ({exc.strerror})") from None
    if not names:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    base = Path(os.path.abspath(folder))
    return [
        {"id": f"{name}#{k}", "image": str(base / name), "phrase": phrase}
        for name in sorted(names)
        for k, phrase in enumerate(phrases, start=1)
    ]
