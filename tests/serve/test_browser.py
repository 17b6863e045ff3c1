"""The web page, driven in headless Chromium against real uvicorn on 127.0.0.1.

Needs Debian's ``chromium`` and the ``playwright`` package (its own browser download is not
used). Outside CI a missing browser skips with the reason; in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from refseg import masks
from refseg.types import Result

from .conftest import ScriptedGrounder

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _chromium() -> str:
    """The system Chromium, or skip (locally) / fail (in CI) saying what to install."""
    path = os.environ.get("REFSEG_CHROMIUM") or shutil.which("chromium") or ""
    if not path and Path("/usr/bin/chromium").is_file():
        path = "/usr/bin/chromium"
    problem = None
    if not path:
        problem = "no chromium binary (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing (pip install playwright)"
    if problem:
        if _in_ci():
            pytest.fail(f"browser test cannot run in CI: {problem}")
        pytest.skip(f"browser test skipped: {problem}")
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 820},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    page.close()
    assert not errors, f"the page logged errors: {errors}"


def _row_major_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a flat 0/1 sequence, starting with zeros (a cheap exact signature)."""
    flat = np.asarray(mask, dtype=np.uint8).ravel()
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    return runs if flat[0] == 0 else [0, *runs]


JS_RUNS = """([rle]) => {
  const m = window.refseg.decodeRle(rle);
  const runs = [];
  let value = 0, length = 0;
  for (let k = 0; k < m.length; k += 1) {
    if (m[k] !== value) { runs.push(length); value = m[k]; length = 0; }
    length += 1;
  }
  runs.push(length);
  return runs;
}"""

# Pixels the drawn canvas changed relative to the bare image, in and out of a rectangle.
JS_CHANGED = """([x1, y1, x2, y2]) => {
  const s = window.refseg.state;
  const bare = document.createElement("canvas");
  bare.width = s.width; bare.height = s.height;
  const b = bare.getContext("2d");
  b.drawImage(s.img, 0, 0);
  const before = b.getImageData(0, 0, s.width, s.height).data;
  const after = document.getElementById("canvas").getContext("2d")
    .getImageData(0, 0, s.width, s.height).data;
  let inside = 0, outside = 0, masked = 0, maskedChanged = 0;
  const union = new Uint8Array(s.width * s.height);
  for (const m of s.masks) for (let k = 0; k < union.length; k += 1) if (m[k]) union[k] = 1;
  for (let y = 0; y < s.height; y += 1) {
    for (let x = 0; x < s.width; x += 1) {
      const k = y * s.width + x, o = 4 * k;
      const d = Math.abs(after[o] - before[o]) + Math.abs(after[o + 1] - before[o + 1])
        + Math.abs(after[o + 2] - before[o + 2]);
      const changed = d > 40;
      if (union[k]) { masked += 1; if (changed) maskedChanged += 1; }
      if (!changed) continue;
      if (x >= x1 && x <= x2 && y >= y1 && y <= y2) inside += 1; else outside += 1;
    }
  }
  return { inside, outside, masked, maskedChanged };
}"""


def test_upload_drag_a_box_and_type_a_phrase(page, memo_sam, astronaut_path, tmp_path):
    from refseg.serve import create_app
    from refseg.serve.server import BackgroundServer

    app = create_app(grounder=ScriptedGrounder(), segmenter=memo_sam, api_key="")
    with BackgroundServer(app) as server:
        assert server.url.startswith("http://127.0.0.1:")
        page.goto(server.url + "/")
        page.wait_for_selector("#server[data-state=ready]", timeout=15_000)
        assert "scripted" in page.inner_text("#server")

        # Upload the bundled image through the file input.
        page.set_input_files("#file", str(astronaut_path))
        page.wait_for_selector("body[data-state=ready]", timeout=10_000)
        assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [512, 512]
        assert "512 × 512" in page.inner_text("#image-info")

        # Drag a box over the face (image pixels 150,40 -> 370,260).
        rect = page.locator("#canvas").bounding_box()
        scale = rect["width"] / 512

        def at(x: float, y: float) -> tuple[float, float]:
            return rect["x"] + x * scale, rect["y"] + y * scale

        page.mouse.move(*at(150, 40))
        page.mouse.down()
        page.mouse.move(*at(260, 150), steps=5)
        page.mouse.move(*at(370, 260), steps=5)
        page.mouse.up()
        page.wait_for_selector("body[data-state=done] #instances[data-count='1']", timeout=60_000)
        assert "box [150, 40, 370, 260]" in page.inner_text("#prompt-info").replace(".0", "")

        state = page.evaluate("() => window.refseg.state.result")
        [instance] = state["instances"]
        assert instance["box"] == pytest.approx([150, 40, 370, 260], abs=1.5)
        dense = masks.decode(instance["mask"])
        assert dense.sum() > 5000
        # The page's own RLE decoder agrees with pycocotools pixel for pixel.
        assert page.evaluate(JS_RUNS, [instance["mask"]]) == _row_major_runs(dense)
        # The overlay is drawn: the masked pixels changed colour, and little else did.
        changed = page.evaluate(JS_CHANGED, [146, 36, 374, 264])
        assert changed["masked"] == int(dense.sum())
        assert changed["maskedChanged"] > 0.95 * changed["masked"]
        assert changed["outside"] < 0.01 * 512 * 512

        # Download the COCO RLE JSON and the mask PNG the page builds.
        with page.expect_download() as download:
            page.click("#dl-json")
        saved = tmp_path / "result.json"
        download.value.save_as(saved)
        downloaded = Result.from_dict(json.loads(saved.read_text()))
        assert downloaded.instances[0].rle == masks.normalize(instance["mask"])
        with page.expect_download() as download:
            page.click("#dl-mask")
        mask_file = tmp_path / "mask.png"
        download.value.save_as(mask_file)
        assert np.array_equal(masks.from_png(mask_file.read_bytes()), dense)

        # A phrase with reasoning: two instances, each in its own colour, and the reasoning.
        page.fill("#phrase", "two helmets")
        page.check("#think")
        page.press("#phrase", "Enter")
        page.wait_for_selector("body[data-state=done] #instances[data-count='2']", timeout=60_000)
        assert page.is_visible("#reasoning-box")
        assert "Looking for 'two helmets'" in page.inner_text("#reasoning")
        swatches = page.eval_on_selector_all(
            "#instances .swatch", "els => els.map(e => e.style.backgroundColor)"
        )
        assert len(set(swatches)) == 2
        # The score slider hides instances below it: rows struck through, masks not drawn.
        scores = page.evaluate("() => window.refseg.state.result.instances.map(i => i.score)")
        set_slider = "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }"
        page.eval_on_selector("#min-score", set_slider, "100")
        below = page.eval_on_selector_all("#instances li.below", "els => els.length")
        assert below == sum(score < 1.0 for score in scores)
        if below == 2:
            drawn = page.evaluate(JS_CHANGED, [0, 0, 0, 0])
            assert drawn["maskedChanged"] < 0.05 * drawn["masked"]
        assert page.inner_text("#min-score-value") == "1.00"
        page.eval_on_selector("#min-score", set_slider, "0")
        assert page.eval_on_selector_all("#instances li.below", "els => els.length") == 0
        assert "mask IoU" in page.get_attribute("#instances li .meta", "title")
        screenshot = tmp_path / "refseg-serve.png"  # stays in the test's own folder
        page.screenshot(path=str(screenshot))
        assert screenshot.stat().st_size > 10_000

        # The explicit no-target answer and an unreadable answer are shown as such.
        page.fill("#phrase", "nothing at all")
        page.press("#phrase", "Enter")
        page.wait_for_selector("body[data-state=empty-result] .message.info", timeout=30_000)
        assert "No target" in page.inner_text("#messages")
        page.fill("#phrase", "garbled")
        page.press("#phrase", "Enter")
        page.wait_for_selector("body[data-state=empty-result] .message.warn", timeout=30_000)
        assert "no JSON found" in page.inner_text("#messages")
        assert page.is_visible("#raw-box")


def test_without_a_grounder_the_page_offers_boxes_and_points(page, memo_sam, astronaut_path):
    from refseg.serve import create_app
    from refseg.serve.server import BackgroundServer

    with BackgroundServer(create_app(segmenter=memo_sam, api_key="")) as server:
        page.goto(server.url + "/")
        page.wait_for_selector("#server[data-state=ready]", timeout=15_000)
        assert "boxes & points only" in page.inner_text("#server")
        page.click("#sample")
        page.wait_for_selector("body[data-state=ready]", timeout=10_000)
        assert page.is_disabled("#phrase") and page.is_visible("#phrase-note")
        # A click is a foreground point: one prompt, one mask containing the point.
        rect = page.locator("#canvas").bounding_box()
        scale = rect["width"] / 512
        page.mouse.click(rect["x"] + 256 * scale, rect["y"] + 140 * scale)
        page.wait_for_selector("body[data-state=done] #instances[data-count='1']", timeout=60_000)
        [instance] = page.evaluate("() => window.refseg.state.result.instances")
        assert masks.decode(instance["mask"])[140, 256]
        # Shift-click: a background point. The answer keeps its label, and once the user's own
        # prompts are cleared the answer's points are still drawn as background (red), not green.
        page.keyboard.down("Shift")
        page.mouse.click(rect["x"] + 330 * scale, rect["y"] + 190 * scale)
        page.keyboard.up("Shift")
        page.wait_for_function(
            "() => window.refseg.state.result && "
            "window.refseg.state.result.instances[0].points.length === 2",
            timeout=60_000,
        )
        [instance] = page.evaluate("() => window.refseg.state.result.instances")
        assert instance["point_labels"] == [1, 0]
        page.click("#clear")
        window = np.array(
            page.evaluate(
                "() => Array.from(document.getElementById('canvas').getContext('2d')"
                ".getImageData(322, 182, 17, 17).data)"
            ),
            dtype=np.uint8,
        ).reshape(17, 17, 4)[..., :3]
        colours = {tuple(int(v) for v in px) for px in window.reshape(-1, 3)}
        assert (255, 77, 77) in colours  # the page's background red
        assert (60, 220, 60) not in colours  # not the foreground green


class OutlineGrounder:
    """Answers a triangle outline when asked for paths (``answer == "path"``), a box otherwise:
    what a path-answering VLM gives the pipeline, minus the model."""

    name = "outline"

    def __init__(self) -> None:
        self.answer = "box"
        self.asked: list[str] = []

    def ground(self, images, phrases, *, think=False, answer=None):
        from refseg.grounding.base import GroundedInstance, Grounding

        answer = answer or self.answer  # a request's answer is an argument of the call
        self.asked.append(answer)
        out = []
        for _ in phrases:
            triangle = np.array([[150.0, 50.0], [370.0, 60.0], [260.0, 260.0]])
            polygons = [triangle] if answer == "path" else []
            instance = GroundedInstance(box=(150.0, 50.0, 370.0, 260.0), polygons=polygons)
            out.append(Grounding(instances=[instance], raw_answer="[...]"))
        return out


def test_path_answers_are_drawn_as_outlines(page, memo_sam, astronaut_path):
    from refseg.serve import create_app
    from refseg.serve.server import BackgroundServer

    grounder = OutlineGrounder()
    app = create_app(grounder=grounder, segmenter=memo_sam, api_key="")
    with BackgroundServer(app) as server:
        page.goto(server.url + "/")
        page.wait_for_selector("#server[data-state=ready]", timeout=15_000)
        page.set_input_files("#file", str(astronaut_path))
        page.wait_for_selector("body[data-state=ready]", timeout=10_000)
        page.fill("#phrase", "the face")
        page.press("#phrase", "Enter")  # box answers: nothing to outline
        page.wait_for_selector("body[data-state=done] #instances[data-count='1']", timeout=60_000)
        assert page.evaluate("() => window.refseg.state.outlinesDrawn") == 0
        page.check("#answer-path")
        page.fill("#phrase", "the face outline")
        page.press("#phrase", "Enter")
        page.wait_for_selector("body[data-state=done] #instances[data-count='1']", timeout=60_000)
        page.wait_for_function("() => window.refseg.state.result.phrase === 'the face outline'")
        assert grounder.asked == ["box", "path"]  # the checkbox sent answer=path
        [instance] = page.evaluate("() => window.refseg.state.result")["instances"]
        assert instance["path"].startswith("M ")
        assert page.evaluate("() => window.refseg.state.outlinesDrawn") > 0
        # the outline is on the canvas: the pixel on the triangle's right edge is the instance's
        # colour stroke, not the masked image (compare with the page without outlines)
        edge = page.evaluate(
            """() => {
              const c = document.getElementById("canvas").getContext("2d");
              const [r, g, b] = c.getImageData(315, 160, 1, 1).data;
              window.refseg.state.result.instances.forEach((i) => { delete i.path; });
              return [r, g, b];
            }"""
        )
        bare = page.evaluate(
            """() => {
              window.refseg.render();  // the same drawing, now without paths
              const c = document.getElementById("canvas").getContext("2d");
              return Array.from(c.getImageData(315, 160, 1, 1).data.slice(0, 3));
            }"""
        )
        assert sum(abs(a - b) for a, b in zip(edge, bare)) > 60, (edge, bare)
