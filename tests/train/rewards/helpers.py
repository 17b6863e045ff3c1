"""Answers and dataset columns for the reward tests, on a W x H image and the 0-1000 grid."""

from __future__ import annotations

import json

import numpy as np

from refseg import masks

W, H = 200, 100

GT_A = (20, 20, 60, 60)  # pixels
GT_B = (120, 30, 180, 90)


def answer(items, think: str | None = None) -> str:
    body = f"<answer>{json.dumps(items)}</answer>"
    return body if think is None else f"<think>{think}</think>{body}"


def rect_mask(x1, y1, x2, y2, w=W, h=H) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())


def columns(gt_boxes_per_row, n=None):
    """The columns TRL passes: sizes, GT boxes and GT masks (RLE counts of each box filled)."""
    n = n or len(gt_boxes_per_row)
    return {
        "width": [W] * n,
        "height": [H] * n,
        "gt_boxes": [[list(map(float, b)) for b in row] for row in gt_boxes_per_row],
        "gt_masks": [
            [masks.encode(rect_mask(*b))["counts"] for b in row] for row in gt_boxes_per_row
        ],
    }


# --- box answers ---------------------------------------------------------------------------


def norm(box):
    """Pixel box -> 0-1000 grid of the W x H image."""
    x1, y1, x2, y2 = box
    return [round(x1 * 1000 / W), round(y1 * 1000 / H), round(x2 * 1000 / W), round(y2 * 1000 / H)]


def norm_pt(x, y):
    return [round(x * 1000 / W), round(y * 1000 / H)]


def inst(box, point=None):
    """A box answer's instance: the box and a point (its centre unless given), in pixels."""
    item = {"bbox_2d": norm(box)}
    cx, cy = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) if point is None else point
    item["point_2d"] = norm_pt(cx, cy)
    return item


# --- path answers --------------------------------------------------------------------------


def n(x, y):
    """Pixel -> 0-1000 grid of the W x H image."""
    return round(x * 1000 / W), round(y * 1000 / H)


def path_of(x1, y1, x2, y2) -> str:
    pts = [n(x1, y1), n(x2, y1), n(x2, y2), n(x1, y2)]
    return "M " + " L ".join(f"{a} {b}" for a, b in pts) + " Z"


def path_inst(x1, y1, x2, y2) -> dict:
    """A path answer's instance: the rectangle's box and its outline, in pixels."""
    return {"bbox_2d": [*n(x1, y1), *n(x2, y2)], "path": path_of(x1, y1, x2, y2)}
