"""The report's timing sentence and its overlay pictures."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.data.base import Sample
from refseg.eval.report import MAX_PANEL_WIDTH, _timing_summary, render_html, timing_text


def test_timings_are_means_over_all_samples() -> None:
    """Issue 10: `embed_s 0.802, predict_s 0.089, total_s 0.129`. The encoder time sits on
    the first sample of each image only and was averaged over those records alone, so it read
    as larger than the per-sample total that includes it."""
    records = [
        {"timings": {"embed_s": 0.8, "predict_s": 0.1, "total_s": 0.9}},
        {"timings": {"predict_s": 0.1, "total_s": 0.1}},
        {"timings": {"predict_s": 0.1, "total_s": 0.1}},
        {"timings": {"predict_s": 0.1, "total_s": 0.1}},
    ]
    means = _timing_summary(records)
    assert means["embed_s"] == pytest.approx(0.2)
    assert means["predict_s"] == pytest.approx(0.1)
    assert means["total_s"] == pytest.approx(0.3)
    assert means["embed_s"] + means["predict_s"] <= means["total_s"] + 1e-9
    text = timing_text(records)
    assert "over all 4 samples" in text and "image encoder (embed_s) 0.200" in text
    assert text.index("embed_s") < text.index("predict_s") < text.index("total_s")
    assert timing_text([{"timings": {}}]) is None


def _picture(html: str) -> tuple[np.ndarray, int, int]:
    match = re.search(
        r'<img src="data:image/jpeg;base64,([^"]+)" width="(\d+)" height="(\d+)"', html
    )
    assert match, "no JPEG overlay in the report"
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(match.group(1)))))
    return image, int(match.group(2)), int(match.group(3))


@pytest.mark.parametrize("width", [320, 1200])
def test_overlays_keep_their_pixels(tmp_path: Path, width: int) -> None:
    """Issue 10: 280 px palette-dithered thumbnails stretched by CSS. Panels are now the
    image's own size (shrunk only beyond MAX_PANEL_WIDTH), full colour, and the page says
    their real size so CSS can only shrink them."""
    height = width * 3 // 4
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    dense = np.zeros((height, width), bool)
    dense[height // 4 : height // 2, width // 4 : width // 2] = True
    rle = masks.encode(dense)
    sample = Sample("s", path, "thing", [rle], width, height)
    record = {
        "id": "s", "phrase": "thing", "image": str(path), "width": width, "height": height,
        "n_gt": 1, "iou": 1.0, "biou": 1.0, "union": int(dense.sum()), "gt_empty": False,
        "pred_empty": False, "error_kind": None, "error": None, "prediction": rle,
        "instances": [{"box": None, "points": [[10, 10]], "point_labels": [0], "score": 1}],
        "timings": {},
    }  # fmt: skip
    document = {"metrics": {}, "n_samples": 1, "config": {}}
    html = render_html(document, [record], {"s": sample})
    image, shown_w, shown_h = _picture(html)
    panel = min(width, MAX_PANEL_WIDTH)
    assert image.shape[1] == shown_w and image.shape[0] == shown_h
    assert image.shape[0] == round(height * panel / width)
    assert panel * 2 <= image.shape[1] <= panel * 2 + 16  # two panels and a thin separator
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 256  # full colour, not a palette
    assert 'id="zoom"' in html and ".card img{display:block;max-width:" in html


def test_draw_instances_draws_what_overlay_draws() -> None:
    """The report's one-mask-at-a-time drawing is pixel-identical to render.overlay."""
    from refseg.render import draw_instances, overlay
    from refseg.types import Instance, Result

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(60, 80, 3), dtype=np.uint8)
    blob = np.zeros((60, 80), dtype=bool)
    blob[10:30, 5:40] = True
    ring = np.zeros((60, 80), dtype=bool)
    ring[20:50, 30:70] = True
    ring[28:42, 40:60] = False
    instances = [
        Instance(masks.encode(blob), box=[5, 10, 40, 30], points=[[20, 20]]),
        Instance(masks.empty(60, 80), box=[1, 1, 9, 9], points=[[3, 3]], point_labels=[0]),
        Instance(masks.encode(ring)),
        Instance(masks.empty(5, 5), box=[50, 2, 70, 8]),  # another size: marks only
    ]
    expected = overlay(image, Result(width=80, height=60, instances=instances))
    assert np.array_equal(draw_instances(image, instances), expected)


def test_markdown_escapes_values_from_the_data() -> None:
    from refseg.eval.report import md_text

    assert md_text("<script>x</script>") == "&lt;script&gt;x&lt;/script&gt;"
    assert md_text("a | b\n## c") == "a \\| b \\#\\# c"
