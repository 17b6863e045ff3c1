"""`refseg eval-compare`: runs made by the real `refseg eval` (stored predictions and
``--oracle-boxes`` with the real default segmenter) on a tiny synthetic dataset, compared, with
the numbers checked against IoUs computed here from dense masks."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from refseg import masks

H, W = 48, 64
#: (id, image index, ground-truth rectangles (x1, y1, x2, y2), difficulty); [] = no target
SAMPLES = [
    ("s0", 0, [(4, 4, 24, 20)], "easy"),
    ("s1", 0, [(30, 10, 60, 40)], "easy"),
    ("s2", 1, [(8, 8, 40, 40)], "hard"),
    ("s3", 1, [(44, 2, 62, 22), (44, 26, 62, 46)], "hard"),
    ("s4", 2, [(10, 12, 50, 36)], "easy"),
    ("s5", 2, [], "hard"),
    ("s6", 0, [(2, 26, 22, 46)], "hard"),
    ("s7", 1, [(20, 2, 36, 6)], "easy"),
]
#: Predictions of two "heads": per sample, a rectangle shift (dx, dy) or None for "no target".
SHIFT_A = {"s0": (2, 0), "s1": (0, 0), "s2": (6, 6), "s3": (1, 1), "s4": (0, 3),
           "s5": None, "s6": (12, 0), "s7": (0, 2)}  # fmt: skip
SHIFT_B = {"s0": (0, 0), "s1": (8, 4), "s2": (1, 0), "s3": (10, 0), "s4": (0, 0),
           "s5": (0, 0), "s6": (2, 2), "s7": (0, 0)}  # fmt: skip


def dense(rects, dx: int = 0, dy: int = 0) -> np.ndarray:
    out = np.zeros((H, W), dtype=bool)
    for x1, y1, x2, y2 in rects:
        out[max(0, y1 + dy) : max(0, y2 + dy), max(0, x1 + dx) : max(0, x2 + dx)] = True
    return out


def predicted(sample_id: str, shifts: dict) -> np.ndarray | None:
    shift = shifts[sample_id]
    if shift is None:
        return None
    rects = next(s[2] for s in SAMPLES if s[0] == sample_id) or [(20, 20, 30, 30)]
    return dense(rects, *shift)


def run_eval(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "refseg.cli", "eval", *args, "--no-report"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def compare_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "refseg.cli", "eval-compare", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_predictions(path: Path, shifts: dict, skip: tuple[str, ...] = ()) -> None:
    with open(path, "w") as handle:
        for sample_id, *_ in SAMPLES:
            if sample_id in skip:
                continue
            mask = predicted(sample_id, shifts)
            instances = (
                [] if mask is None else [{"box": None, "points": [], "score": 1.0,
                                          "mask": masks.encode(mask)}]
            )  # fmt: skip
            result = {"id": sample_id, "image": {"width": W, "height": H},
                      "no_target": mask is None, "instances": instances}  # fmt: skip
            handle.write(json.dumps(result) + "\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(0)
    for index in range(3):
        image = np.full((H, W, 3), 40 + 30 * index, dtype=np.uint8)
        image += rng.integers(0, 10, size=image.shape, dtype=np.uint8)
        for sample_id, image_index, rects, _ in SAMPLES:
            if image_index == index:
                colour = (200, 60 + 20 * int(sample_id[1:]), 40)
                image[dense(rects)] = colour
        Image.fromarray(image).save(root / f"img{index}.png")
    with open(root / "data.jsonl", "w") as handle:
        for sample_id, image_index, rects, difficulty in SAMPLES:
            record = {"id": sample_id, "image": f"img{image_index}.png",
                      "phrase": f"thing {sample_id}", "width": W, "height": H,
                      "masks": [masks.encode(dense([r])) for r in rects],
                      "meta": {"difficulty": difficulty}}  # fmt: skip
            handle.write(json.dumps(record) + "\n")
    write_predictions(root / "a.jsonl", SHIFT_A)
    write_predictions(root / "b.jsonl", SHIFT_B, skip=("s7",))
    dataset = f"jsonl:{root / 'data.jsonl'}"
    run_eval("--dataset", dataset, "--predictions", "a.jsonl", "--out", "run_a", cwd=root)
    run_eval("--dataset", dataset, "--predictions", "b.jsonl", "--out", "run_b", cwd=root)
    # the same predictions as run_a: a comparison of a run with itself
    run_eval("--dataset", dataset, "--predictions", "a.jsonl", "--out", "run_a2", cwd=root)
    return root


class _RowParser(HTMLParser):
    """The sample sections of compare.html: per sample its id, and per row (``full``: the
    whole-photo panels, ``crop``: the crops) the cells in order, each with its caption, its
    picture (data URI, width, height; ``None`` for a cell without one) and the row's style."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[dict] = []
        self.row: str | None = None
        self.cell: dict | None = None
        self.text: list[str] | None = None
        self.in_code = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attr = dict(attrs)
        classes = (attr.get("class") or "").split()
        if tag == "section" and "sample" in classes:
            self.samples.append({"id": None, "full": [], "crop": [], "style": {}})
        elif not self.samples:
            return
        elif tag == "code" and self.samples[-1]["id"] is None and self.row is None:
            self.in_code = True
        elif tag == "div" and "cmp-row" in classes:
            self.row = "crop" if "crop" in classes else "full"
            self.samples[-1]["style"][self.row] = attr.get("style")
        elif tag == "figure" and self.row:
            self.cell = {"img": None, "caption": ""}
            self.samples[-1][self.row].append(self.cell)
        elif tag == "img" and self.cell is not None:
            self.cell["img"] = (attr["src"], int(attr["width"]), int(attr["height"]))
        elif tag == "figcaption" and self.cell is not None:
            self.text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self.in_code = False
        elif tag == "figcaption" and self.cell is not None and self.text is not None:
            self.cell["caption"] = "".join(self.text)
            self.text = None
        elif tag == "figure":
            self.cell = None
        elif tag == "section":
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.in_code:
            self.samples[-1]["id"] = data
        if self.text is not None:
            self.text.append(data)


def sample_rows(page: str) -> list[dict]:
    parser = _RowParser()
    parser.feed(page)
    return parser.samples


def decode_uri(uri: str) -> np.ndarray:
    from PIL import Image

    head, data = uri.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def expected(shifts: dict, ids: list[str]) -> dict[str, float]:
    """gIoU, cIoU, Pr@0.5 and N-acc from dense masks, without refseg's metric code."""
    ious, inter_sum, union_sum, hits, no_target, above, targets = [], 0, 0, 0, 0, 0, 0
    for sample_id, _, rects, _ in SAMPLES:
        if sample_id not in ids:
            continue
        gt = dense(rects)
        pred = predicted(sample_id, shifts)
        pred = np.zeros_like(gt) if pred is None else pred
        inter, union = int((gt & pred).sum()), int((gt | pred).sum())
        iou = inter / union if union else 1.0
        ious.append(iou)
        inter_sum, union_sum = inter_sum + inter, union_sum + union
        if rects:
            targets += 1
            above += iou >= 0.5
        else:
            no_target += 1
            hits += not pred.any()
    return {
        "gIoU": float(np.mean(ious)),
        "cIoU": inter_sum / union_sum,
        "Pr@0.5": above / targets,
        "N-acc": hits / no_target if no_target else None,
        "ious": ious,
    }


def test_compare_numbers_match_independent_metrics(work: Path) -> None:
    done = compare_cli("run_a", "run_b", "--out", "cmp", cwd=work)
    assert done.returncode == 0, done.stderr
    doc = json.loads((work / "cmp" / "compare.json").read_text())
    # run_b scored s7 as a failure (missing prediction), so both runs hold all 8 samples
    assert doc["n_common"] == len(SAMPLES)
    ids = [s[0] for s in SAMPLES]
    want_a = expected(SHIFT_A, ids)
    shift_b = {**SHIFT_B, "s7": None}  # a missing prediction scores as "no mask"
    want_b = expected(shift_b, ids)
    for entry, want in zip(doc["all"]["runs"], (want_a, want_b)):
        for name in ("gIoU", "cIoU", "Pr@0.5", "N-acc"):
            assert entry["metrics"][name] == pytest.approx(want[name], abs=1e-6), name
            lo, hi = entry["ci"][name]
            assert lo - 1e-9 <= want[name] <= hi + 1e-9, name
    delta = doc["all"]["runs"][1]["vs_first"]["gIoU"]
    paired = np.array(want_b["ious"]) - np.array(want_a["ious"])
    assert delta["delta"] == pytest.approx(paired.mean(), abs=1e-4)
    assert delta["ci"][0] <= delta["delta"] <= delta["ci"][1]
    # the paired interval is at most as wide as +-3 standard errors of the paired differences
    se = paired.std(ddof=1) / np.sqrt(len(paired))
    assert delta["ci"][1] - delta["ci"][0] <= 6 * se
    pr = doc["all"]["runs"][1]["vs_first"]["Pr@0.5"]
    assert pr["delta"] == pytest.approx(want_b["Pr@0.5"] - want_a["Pr@0.5"], abs=1e-4)
    # per-difficulty breakdown: the same samples in both runs, numbers from dense masks
    for group in ("easy", "hard"):
        members = [s[0] for s in SAMPLES if s[3] == group]
        scored = doc["breakdowns"]["difficulty"][group]
        assert scored["n"] == len(members)
        got = [e["metrics"]["gIoU"] for e in scored["runs"]]
        assert got[0] == pytest.approx(expected(SHIFT_A, members)["gIoU"], abs=1e-6)
        assert got[1] == pytest.approx(expected(shift_b, members)["gIoU"], abs=1e-6)
    # the stdout table carries the same numbers
    assert f"{100 * want_a['gIoU']:.2f}" in done.stdout
    assert f"{100 * (want_b['gIoU'] - want_a['gIoU']):+.2f}" in done.stdout
    assert "difficulty = hard" in done.stdout
    # overlays: the samples whose IoU differs most, ground truth + one panel per run
    spread = {i: abs(b - a) for i, a, b in zip(ids, want_a["ious"], want_b["ious"])}
    chosen = [s["id"] for s in doc["overlay_samples"]]
    assert len(chosen) == 8
    assert chosen[0] == max(spread, key=spread.get)
    assert [spread[i] for i in chosen] == sorted(spread.values(), reverse=True)
    page = (work / "cmp" / "compare.html").read_text()
    rows = sample_rows(page)
    assert [r["id"] for r in rows] == chosen
    assert all(len(r["full"]) == 3 for r in rows)  # ground truth + one panel per run
    crops = sum(len(r["crop"]) for r in rows)
    assert page.count("data:image/jpeg;base64,") == 3 * len(chosen) + crops


def test_a_run_against_itself_differs_by_zero(work: Path) -> None:
    from refseg.eval.compare import compare_runs

    doc = compare_runs([work / "run_a", work / "run_a2"]).document
    for name in ("gIoU", "cIoU", "mBIoU", "Pr@0.5"):
        diff = doc["all"]["runs"][1]["vs_first"][name]
        assert diff["delta"] == pytest.approx(0.0, abs=1e-12)
        assert diff["ci"] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_only_common_samples_are_compared(work: Path) -> None:
    """A partial run (records for 5 samples, no metrics.json) is compared on those 5 only."""
    from refseg.eval.compare import compare_runs, load_run

    partial = work / "run_partial"
    shutil.copytree(work / "run_a", partial)
    (partial / "metrics.json").unlink()
    lines = (partial / "records.jsonl").read_text().splitlines(keepends=True)
    (partial / "records.jsonl").write_text("".join(lines[:5]))
    assert not load_run(partial).finished and load_run(work / "run_b").finished
    kept = [json.loads(line)["id"] for line in lines[:5]]
    done = compare_cli("run_b", "run_partial", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "3 of #1" in done.stdout and "partial" in done.stdout
    doc = compare_runs([work / "run_b", partial]).document
    assert doc["n_common"] == 5 and [r["dropped"] for r in doc["runs"]] == [3, 0]
    want = expected({**SHIFT_B, "s7": None}, kept)
    assert doc["all"]["runs"][0]["metrics"]["gIoU"] == pytest.approx(want["gIoU"], abs=1e-6)


def test_oracle_boxes_run_compared_with_predictions(work: Path) -> None:
    """A real --oracle-boxes run (default segmenter) next to stored predictions: its gIoU in
    the comparison is the mean of IoUs computed here from its stored masks."""
    from refseg.eval.runner import RECORDS_FILE, read_records

    dataset = f"jsonl:{work / 'data.jsonl'}"
    run_eval("--dataset", dataset, "--oracle-boxes", "--out", "run_oracle", cwd=work)
    done = compare_cli("run_a", "run_oracle", "--out", "cmp_oracle", "--samples", "2", cwd=work)
    assert done.returncode == 0, done.stderr
    doc = json.loads((work / "cmp_oracle" / "compare.json").read_text())
    truth = {s[0]: dense(s[2]) for s in SAMPLES}
    ious = []
    for record in read_records(work / "run_oracle" / RECORDS_FILE):
        gt = truth[record["id"]]
        pred = masks.decode(record["prediction"]).astype(bool) if record["prediction"] else None
        pred = np.zeros_like(gt) if pred is None else pred
        union = (gt | pred).sum()
        ious.append((gt & pred).sum() / union if union else 1.0)
    got = doc["all"]["runs"][1]["metrics"]["gIoU"]
    assert got == pytest.approx(float(np.mean(ious)), abs=1e-6)
    assert len(doc["overlay_samples"]) == 2
    html = (work / "cmp_oracle" / "compare.html").read_text()
    rows = sample_rows(html)
    assert len(rows) == 2 and all(len(r["full"]) == 3 for r in rows)
    crops = sum(len(r["crop"]) for r in rows)
    assert html.count("data:image/jpeg;base64,") == 6 + crops and "ground-truth boxes" in html


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refseg: error:"), done.stderr
    return lines[0]


def test_bad_inputs_are_one_line_errors(work: Path) -> None:
    bare = work / "bare"
    bare.mkdir(exist_ok=True)
    assert "not a refseg eval run folder" in one_line_error(compare_cli("run_a", bare, cwd=work))
    assert "not a folder" in one_line_error(compare_cli("run_a", "nowhere", cwd=work))
    assert "at least two" in one_line_error(compare_cli("run_a", cwd=work))
    empty = work / "empty_run"
    empty.mkdir(exist_ok=True)
    shutil.copy(work / "run_a" / "config.json", empty / "config.json")
    assert "no finished sample" in one_line_error(compare_cli("run_a", empty, cwd=work))
    broken = work / "broken_run"
    shutil.copytree(work / "run_a", broken, dirs_exist_ok=True)
    (broken / "config.json").write_text("{not json")
    assert "not a refseg eval config" in one_line_error(compare_cli("run_a", broken, cwd=work))
    odd = work / "odd_run"
    shutil.copytree(work / "run_a", odd, dirs_exist_ok=True)
    (odd / "records.jsonl").write_text(json.dumps({"id": "s0", "iou": "high"}) + "\n")
    assert "not a refseg eval record" in one_line_error(compare_cli("run_a", odd, cwd=work))
    too_many = compare_cli("run_a", "run_b", "--out", "x", "--samples", "100000", cwd=work)
    assert too_many.returncode == 2


def test_different_datasets_refused_unless_allowed(work: Path) -> None:
    other = work / "other"
    other.mkdir(exist_ok=True)
    for name in ("img0.png", "img1.png", "img2.png", "a.jsonl"):
        shutil.copy(work / name, other / name)
    records = [json.loads(line) for line in (work / "data.jsonl").read_text().splitlines()]
    with open(other / "data.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    run_eval("--dataset", f"jsonl:{other / 'data.jsonl'}", "--predictions", "a.jsonl",
             "--out", "run_other", cwd=other)  # fmt: skip
    line = one_line_error(compare_cli("run_a", other / "run_other", cwd=work))
    assert "--allow-different-datasets" in line
    allowed = compare_cli("run_a", other / "run_other", "--allow-different-datasets", cwd=work)
    assert allowed.returncode == 0, allowed.stderr
    # renamed ids: nothing in common even when allowed
    with open(other / "data.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps({**record, "id": "x" + record["id"]}) + "\n")
    with open(other / "a.jsonl") as handle:
        preds = [json.loads(line) for line in handle]
    with open(other / "a.jsonl", "w") as handle:
        for pred in preds:
            handle.write(json.dumps({**pred, "id": "x" + pred["id"]}) + "\n")
    run_eval("--dataset", f"jsonl:{other / 'data.jsonl'}", "--predictions", "a.jsonl",
             "--out", "run_renamed", cwd=other)  # fmt: skip
    none = compare_cli("run_a", other / "run_renamed", "--allow-different-datasets", cwd=work)
    assert "no sample was scored by every run" in one_line_error(none)


# --------------------------------------------------------------------------------------------
# compare.html: one row per sample, and crops around the target


@pytest.mark.parametrize(
    ("boxes", "size", "window"),
    [
        # a 10-pixel object in a 4000 x 3000 photo: the 16-pixel floor, not 15% (1.5 px)
        ([[1000, 800, 1010, 810]], (4000, 3000), (984, 784, 1026, 826)),
        # a large object: 15% of its longer side (200 -> 30 px) on every side
        ([[100, 100, 300, 200]], (1000, 1000), (70, 70, 330, 230)),
        # at the top-left and bottom-right borders: clamped to the image
        ([[0, 0, 50, 40]], (640, 480), (0, 0, 66, 56)),
        ([[600, 440, 640, 480]], (640, 480), (584, 424, 640, 480)),
        # fractional edges round outwards
        ([[10.5, 20.25, 30.5, 40.75]], (640, 480), (0, 4, 47, 57)),
        # ground truth and prediction far apart: the window holds both (union 510 x 320)
        ([[10, 10, 20, 20], [500, 300, 520, 330]], (640, 480), (0, 0, 597, 407)),
        # nothing to crop around: no box, only missing ones, or wholly outside the image
        ([], (640, 480), None),
        ([None, None], (640, 480), None),
        ([[900, 900, 950, 950]], (640, 480), None),
        # a broken box (non-finite, wrong length) is skipped; swapped corners are ordered
        ([[float("nan"), 0, 5, 5], [1, 2, 3], [60, 50, 40, 30]], (640, 480), (24, 14, 76, 66)),
    ],
)
def test_crop_window(boxes: list, size: tuple[int, int], window: tuple | None) -> None:
    from refseg.eval.crop import crop_window

    assert crop_window(boxes, *size) == window


def test_crop_panel_enlarges_by_a_whole_factor() -> None:
    """A 40 x 30 window is enlarged x16 (640 px on its longer side) with square pixel blocks
    and the mask tinted where it lies; a 1280-pixel window is shrunk to 640."""
    from refseg.eval.crop import crop_panel, crop_scale
    from refseg.types import Instance

    image = np.full((300, 400, 3), 100, dtype=np.uint8)
    mask = np.zeros((300, 400), dtype=bool)
    mask[110:120, 210:220] = True
    panel = crop_panel(image, [Instance.from_mask(mask)], (200, 100, 240, 130))
    assert crop_scale((200, 100, 240, 130)) == 16 and panel.shape == (480, 640, 3)
    inside = panel[(10 + 5) * 16, (10 + 5) * 16]  # the centre of the object
    assert not np.array_equal(inside, [100, 100, 100])  # tinted by the mask
    assert np.array_equal(panel[5, 5], [100, 100, 100])  # the margin is the photo
    big = np.zeros((1000, 1280, 3), dtype=np.uint8)
    assert crop_panel(big, [], (0, 0, 1280, 1000)).shape == (500, 640, 3)


def boxes_of(mask: np.ndarray | None) -> list[list[int]]:
    if mask is None or not mask.any():
        return []
    ys, xs = np.nonzero(mask)
    return [[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]]


def test_html_rows_hold_truth_and_runs_side_by_side_with_crops(work: Path) -> None:
    """Each sample is one grid row of ground truth + one panel per run, in that order, and a
    second row of crops cut with one window around ground truth and every prediction (boxes
    taken here from dense masks); the crops are the window's pixels, enlarged."""
    from refseg.eval.compare import compare_runs, render_compare_html
    from refseg.eval.crop import crop_scale, crop_window

    comparison = compare_runs([work / "run_a", work / "run_b"])
    chosen = [s[0] for s in SAMPLES]
    page = render_compare_html(comparison, chosen)
    assert "grid-template-columns:repeat(var(--cols)" in page
    rows = sample_rows(page)
    assert [r["id"] for r in rows] == chosen
    with_crops = 0
    for row, (sample_id, _, rects, _) in zip(rows, SAMPLES):
        full = row["full"]
        assert row["style"]["full"] == "--cols:3"
        assert [c["caption"].split(":")[0] for c in full] == ["ground truth", "#1", "#2"]
        assert all(c["img"] is not None and c["img"][1:] == (W, H) for c in full)
        # run_b has no prediction for s7 (a failure): only ground truth and run_a count
        shift_b = {**SHIFT_B, "s7": None}
        boxes = boxes_of(dense(rects))
        boxes += boxes_of(predicted(sample_id, SHIFT_A)) + boxes_of(predicted(sample_id, shift_b))
        window = crop_window(boxes, W, H)
        if window is None or window == (0, 0, W, H):
            assert row["crop"] == [], sample_id
            continue
        with_crops += 1
        crop = row["crop"]
        assert row["style"]["crop"] == "--cols:3"
        runs = [predicted(sample_id, SHIFT_A), predicted(sample_id, shift_b)]
        assert [c["caption"] for c in crop[1:]] == [
            label if mask is not None else f"{label}: no mask"
            for label, mask in zip(("#1", "#2"), runs)
        ]
        x1, y1, x2, y2 = window
        assert f"crop x {x1}–{x2}, y {y1}–{y2}" in crop[0]["caption"]
        k = int(crop_scale(window))
        for cell in crop:
            assert cell["img"][1:] == ((x2 - x1) * k, (y2 - y1) * k)
        # the ground-truth crop is the window of the ground-truth panel, enlarged
        truth = decode_uri(crop[0]["img"][0]).astype(int)
        panel = decode_uri(full[0]["img"][0]).astype(int)
        shrunk = truth[k // 2 :: k, k // 2 :: k]
        assert np.abs(shrunk - panel[y1:y2, x1:x2]).mean() < 12, sample_id
    assert with_crops >= 4  # the fixture's objects are small enough for most samples
    s7 = next(r for r in rows if r["id"] == "s7")
    assert "crop x 4–52, y 0–24" in s7["crop"][0]["caption"]
    assert s7["crop"][2]["caption"] == "#2: no mask"  # run_b had no prediction for s7


def test_no_crop_row_without_target_or_prediction(work: Path) -> None:
    """s5 has no target and both runs (the same predictions) answered "no target": nothing to
    crop around, so its section has the panel row only."""
    from refseg.eval.compare import compare_runs, render_compare_html

    comparison = compare_runs([work / "run_a", work / "run_a2"])
    rows = sample_rows(render_compare_html(comparison, ["s5", "s7"]))
    assert [len(r["full"]) for r in rows] == [3, 3]
    assert rows[0]["crop"] == [] and len(rows[1]["crop"]) == 3


def test_hostile_strings_stay_escaped(work: Path) -> None:
    """Ids, phrases and error kinds reach a sample's section only escaped, in the panel row
    and the crop row alike."""
    from refseg.eval.compare import Comparison, Run, _sample_row

    evil = '<img src=x onerror="alert(1)">&'
    record = {"id": evil, "phrase": evil, "image": str(work / "img0.png"),
              "iou": 0.5, "biou": 0.5, "error_kind": evil, "instances": [],
              "prediction": masks.encode(dense([(20, 20, 30, 30)]))}  # fmt: skip
    runs = [Run(work / f"r{i}", {"mode": "predictions"}, {evil: record}, None, True) for i in "ab"]
    row = _sample_row(Comparison(runs, [evil]), evil, None, ["#1", "#2"])
    assert "<img src=x" not in row and 'onerror="' not in row
    assert html.escape(evil) in row
    parsed = sample_rows(row)
    assert parsed[0]["id"] == evil and len(parsed[0]["full"]) == 3 and len(parsed[0]["crop"]) == 3
    assert evil in parsed[0]["full"][1]["caption"]  # "failed (<kind>)", unescaped by the parser
