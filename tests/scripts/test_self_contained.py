"""A clone carries what its tests and README use: nothing reads a folder beside the checkout."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "coco-sample"
#: Where code, tests and the README's commands live.
SCANNED = ["src", "tests", "scripts", "benchmarks", "examples", ".ci", "README.md"]
#: A path that leaves the checkout for the developers' ``shared`` folder, or its old variable.
OUTSIDE = re.compile(r"\.\./shared|(?<!tmp_path / )[\"']shared[/\"']|REFSEG_SHARED")


def _text_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in candidates:
            if ".egg-info" in file.parts[-2]:
                continue  # build output, not source
            if file.is_file() and file.suffix in {"", ".py", ".sh", ".md", ".yaml", ".toml", ".js"}:
                files.append(file)
    return files


def test_nothing_reads_outside_the_checkout() -> None:
    me = Path(__file__).resolve()
    found = [
        f"{file.relative_to(ROOT)}:{number}: {line.strip()}"
        for file in _text_files()
        if file.resolve() != me
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "paths outside the checkout:\n" + "\n".join(found)


def test_bundled_coco_sample_is_complete_and_attributed() -> None:
    data = json.loads((SAMPLE / "instances.json").read_text())
    licences = {entry["id"]: entry["name"] for entry in data["licenses"]}
    attribution = (SAMPLE / "ATTRIBUTION.md").read_text()
    assert len(data["annotations"]) == 43
    rows = {line.split("`")[1]: line for line in attribution.splitlines() if "| `images/" in line}
    for image in data["images"]:
        assert (SAMPLE / "images" / image["file_name"]).is_file()
        # The photo's row names its own licence, as instances.json records it.
        name = licences[image["license"]].removesuffix(" License")
        assert f"Creative Commons {name} 2.0" in rows[f"images/{image['file_name']}"]


def test_coco_sample_stays_out_of_the_wheel() -> None:
    """The photos are non-commercial test data: the package (``src/``) holds no copy."""
    assert not list((ROOT / "src").rglob("000000142238.jpg"))
