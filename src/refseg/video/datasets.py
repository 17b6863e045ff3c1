"""Readers for the referring video datasets, from their published layouts.

Each yields :class:`VideoExpression` items: one expression of one video, its frame files, and
its ground-truth mask per frame (read when asked, so a reader holds no pixels). None of these
datasets can be downloaded here; the readers follow the layouts their authors publish and are
tested on files generated in that layout.

- **Ref-YouTube-VOS** (Seo et al. 2020; the layout ReferFormer and its successors read):
  ``ROOT/meta_expressions/SPLIT/meta_expressions.json`` maps each video to its ``frames``
  (names without suffix) and ``expressions`` (``{"exp": TEXT, "obj_id": "1"}``);
  ``ROOT/SPLIT/JPEGImages/VIDEO/FRAME.jpg`` the frames and ``ROOT/SPLIT/Annotations/VIDEO/
  FRAME.png`` palette PNGs whose pixel value is the object ID (train only; valid/test have none).
  Ref-DAVIS17 as converted by ReferFormer has this layout too.
- **Ref-DAVIS17** (Khoreva et al. 2018) as published: ``davis_text_annotations/
  Davis17_annot1.txt`` lines ``VIDEO OBJ_ID "expression"`` over the DAVIS 2017 folders
  ``DAVIS/JPEGImages/480p/VIDEO/00000.jpg`` and ``DAVIS/Annotations/480p/VIDEO/00000.png``.
- **MeViS** (Ding et al. 2023): ``ROOT/SPLIT/meta_expressions.json`` with ``obj_id`` and
  ``anno_id`` lists per expression (one expression may refer to several objects), frames in
  ``ROOT/SPLIT/JPEGImages/VIDEO/FRAME.jpg`` and masks in ``ROOT/SPLIT/mask_dict.json``:
  ``{anno_id: [COCO RLE or null, one per frame]}``; an expression's mask is the union of its
  annotations' masks.

Bounds: a metadata file over :data:`MAX_JSON_BYTES` is refused before it is read, video and frame
names must be plain names (no ``/``, no ``..``), and a video with more frames than
``REFSEG_MAX_FRAMES`` is refused; each is a one-line :class:`InputError`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refseg.errors import InputError
from refseg.video.frames import max_frames

#: Largest metadata file read (MeViS's train ``mask_dict.json`` is the big one).
MAX_JSON_BYTES = 4 << 30

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class VideoExpression:
    """One referring expression over one video.

    ``gt(t)`` is the target's mask in frame ``t`` (the union of ``obj_ids``), or None where the
    dataset has no annotation for that frame (Ref-YouTube-VOS annotates every fifth frame).
    """

    dataset: str
    video: str
    expression_id: str
    expression: str
    obj_ids: list[int]
    frames: list[Path]
    gt: Callable[[int], np.ndarray | None]


def _name(value: Any, what: str, path: Path) -> str:
    text = str(value)
    if not _NAME.match(text) or text in (".", ".."):
        raise InputError(f"{path}: {what} {text[:80]!r} is not a plain file name")
    return text


def _json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: no such file (is this the dataset's root folder?)")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InputError(f"{path}: {size} bytes is over the {MAX_JSON_BYTES}-byte limit")
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None


def _videos(meta: Any, path: Path) -> dict[str, Any]:
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise InputError(f'{path}: expected {{"videos": {{VIDEO: {{...}}}}}}')
    return meta["videos"]


def _frame_names(entry: Any, video: str, path: Path) -> list[str]:
    frames = entry.get("frames") if isinstance(entry, dict) else None
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{path}: video {video!r} has no frames list")
    if len(frames) > max_frames():
        raise InputError(
            f"{path}: video {video!r} has {len(frames)} frames, over the limit of {max_frames()}"
        )
    return [_name(f, "frame", path) for f in frames]


def _expressions(entry: Any, video: str, path: Path) -> dict[str, Any]:
    expressions = entry.get("expressions") if isinstance(entry, dict) else None
    if not isinstance(expressions, dict):
        raise InputError(f"{path}: video {video!r} has no expressions")
    return expressions


def read_index_png(path: Path) -> np.ndarray:
    """A palette (or greyscale) annotation PNG as its index values: the object IDs."""
    from PIL import Image

    from refseg.image import max_pixels

    try:
        with Image.open(path, formats=["PNG"]) as image:
            if image.width * image.height > max_pixels():
                raise InputError(f"{path}: over the pixel limit")
            if image.mode not in ("P", "L", "I", "I;16"):
                image = image.convert("L")
            return np.asarray(image)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable annotation PNG ({type(exc).__name__})") from None


def read_ref_youtube_vos(
    root: str | Path, split: str = "train", *, dataset: str = "ref-youtube-vos"
) -> Iterator[VideoExpression]:
    """Ref-YouTube-VOS (and ReferFormer's Ref-DAVIS17) expressions of ``split``."""
    root = Path(root)
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    videos = _videos(_json(meta_path), meta_path)
    for video, entry in videos.items():
        video = _name(video, "video", meta_path)
        names = _frame_names(entry, video, meta_path)
        frames = [root / split / "JPEGImages" / video / f"{n}.jpg" for n in names]
        annotations = [root / split / "Annotations" / video / f"{n}.png" for n in names]
        for exp_id, expression in _expressions(entry, video, meta_path).items():
            if not isinstance(expression, dict) or not isinstance(expression.get("exp"), str):
                raise InputError(f"{meta_path}: {video}/{exp_id}: an expression needs 'exp'")
            obj_ids = [int(expression["obj_id"])] if "obj_id" in expression else []

            def gt(t: int, annotations=annotations, obj_ids=obj_ids) -> np.ndarray | None:
                if not annotations[t].is_file():
                    return None
                return np.isin(read_index_png(annotations[t]), obj_ids)

            yield VideoExpression(
                dataset, video, str(exp_id), expression["exp"], obj_ids, frames, gt
            )


def read_ref_davis(
    davis_root: str | Path, annotations: str | Path, *, resolution: str = "480p"
) -> Iterator[VideoExpression]:
    """Ref-DAVIS17 in its published form: a ``Davis17_annot*.txt`` file of ``VIDEO OBJ_ID
    "expression"`` lines over the DAVIS 2017 folders at ``davis_root``."""
    davis_root, annotations = Path(davis_root), Path(annotations)
    if not annotations.is_file():
        raise InputError(f"{annotations}: no such annotation file")
    counts: dict[str, int] = {}
    with open(annotations, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                parts = shlex.split(line)
                video, obj_id, text = parts[0], int(parts[1]), " ".join(parts[2:])
            except (ValueError, IndexError):
                raise InputError(
                    f'{annotations}: line {number}: expected VIDEO OBJ_ID "expression"'
                ) from None
            video = _name(video, "video", annotations)
            image_dir = davis_root / "JPEGImages" / resolution / video
            mask_dir = davis_root / "Annotations" / resolution / video
            if not image_dir.is_dir():
                raise InputError(f"{image_dir}: no such DAVIS video folder")
            frames = sorted(image_dir.glob("*.jpg"))
            if len(frames) > max_frames():
                raise InputError(f"{image_dir}: {len(frames)} frames, over the limit")
            masks_ = [mask_dir / f"{f.stem}.png" for f in frames]

            def gt(t: int, masks_=masks_, obj_id=obj_id) -> np.ndarray | None:
                if not masks_[t].is_file():
                    return None
                return read_index_png(masks_[t]) == obj_id

            index = counts.get(video, 0)
            counts[video] = index + 1
            yield VideoExpression("ref-davis17", video, str(index), text, [obj_id], frames, gt)


def read_mevis(root: str | Path, split: str = "valid_u") -> Iterator[VideoExpression]:
    """MeViS expressions of ``split`` (``train``, ``valid_u``; ``valid`` has no masks)."""
    from refseg import masks

    root = Path(root)
    meta_path = root / split / "meta_expressions.json"
    videos = _videos(_json(meta_path), meta_path)
    mask_path = root / split / "mask_dict.json"
    mask_dict: dict[str, Any] | None = None
    if mask_path.is_file():
        mask_dict = _json(mask_path)
        if not isinstance(mask_dict, dict):
            raise InputError(f"{mask_path}: expected {{ANNO_ID: [RLE or null per frame]}}")
    for video, entry in videos.items():
        video = _name(video, "video", meta_path)
        names = _frame_names(entry, video, meta_path)
        frames = [root / split / "JPEGImages" / video / f"{n}.jpg" for n in names]
        for exp_id, expression in _expressions(entry, video, meta_path).items():
            if not isinstance(expression, dict) or not isinstance(expression.get("exp"), str):
                raise InputError(f"{meta_path}: {video}/{exp_id}: an expression needs 'exp'")
            obj_ids = [int(v) for v in expression.get("obj_id", [])]
            anno_ids = [str(v) for v in expression.get("anno_id", [])]
            if mask_dict is not None:
                for anno in anno_ids:
                    runs = mask_dict.get(anno)
                    if not isinstance(runs, list) or len(runs) != len(names):
                        raise InputError(
                            f"{mask_path}: annotation {anno} needs one entry per frame of "
                            f"{video} ({len(names)})"
                        )

            def gt(t: int, anno_ids=anno_ids) -> np.ndarray | None:
                if mask_dict is None:
                    return None
                union = None
                for anno in anno_ids:
                    rle = mask_dict[anno][t]
                    if rle is None:
                        continue
                    mask = masks.decode(masks.normalize(rle))
                    union = mask if union is None else union | mask
                return union

            yield VideoExpression(
                "mevis", video, str(exp_id), expression["exp"], obj_ids, frames, gt
            )
