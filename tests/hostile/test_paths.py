"""Hostile path answers: huge, non-finite, far outside, too complex — bounded, never a hang."""

from __future__ import annotations

from tests.hostile.harness import run_python

CASES = r"""
import time
import numpy as np
from refseg.protocol import parse_answer
from refseg.grounding.coords import to_grounding
from refseg.paths import PathError, rasterize

def timed(text):
    start = time.perf_counter()
    parsed = parse_answer(text)
    grounding = to_grounding(parsed, "norm1000", 640, 480)
    return parsed, grounding, time.perf_counter() - start

ring = " ".join(f"L {i % 997} {(i * 7) % 991}" for i in range(100_500))
parsed, _, took = timed('<answer>[{"path": "M 0 0 ' + ring + ' Z"}]</answer>')
assert parsed.error and "vertices" in parsed.error and took < 20, (parsed.error, took)

for bad in ("M 0 0 L nan 1 L 2 2 Z", "M 0 0 L 1e308 1 L 2 2 Z", "M 0 0 L inf 1 L 2 2 Z"):
    parsed, _, _ = timed('<answer>[{"path": "%s"}]</answer>' % bad)
    assert parsed.error is not None, bad

parsed, grounding, took = timed(
    '<answer>[{"path": "M -900000 -900000 L 900000 -900000 L 900000 900000 Z"}]</answer>'
)
assert parsed.error is None and grounding.instances and took < 5
(inst,) = grounding.instances
assert inst.box == (0.0, 0.0, 640.0, 480.0)
mask = rasterize(inst.polygons, 640, 480)
assert 0 < mask.sum() < 640 * 480

# a self-intersecting 100k-vertex zig-zag over the whole image: refused by the rasterizer
zig = np.array([[i * 0.0064, (i % 2) * 480.0] for i in range(100_000)])
zig = np.concatenate([zig, [[640.0, 480.0], [0.0, 480.0]]])
start = time.perf_counter()
try:
    rasterize([zig], 640, 480)
except PathError:
    pass
assert time.perf_counter() - start < 20
print("ok")
"""


def test_hostile_paths_are_bounded() -> None:
    outcome = run_python(CASES)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert outcome.stdout.strip().endswith("ok")
