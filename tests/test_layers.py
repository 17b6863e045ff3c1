"""The package's floors: no module imports a floor above its own, and siblings on one floor
(grounding and segmentation, say) never import each other.

Every ``refseg`` import counts, at module level or inside a function (a lazy import is still a
dependency, and still a cycle waiting to happen). A module's floor is that of the longest
matching prefix in :data:`FLOORS`; a new top-level module or package must be placed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Floor of each top-level module or package, from the ground up. Within a floor, modules of
#: different packages are siblings and may not import each other.
FLOORS: dict[str, int] = {
    # ground floor: errors, environment, files
    "refseg.errors": 0,
    "refseg.progress": 0,
    "refseg.limits": 1,
    "refseg.threads": 1,
    "refseg.hub": 1,
    "refseg.npm": 1,
    "refseg.fileio": 1,
    # geometry and images
    "refseg.paths": 2,
    "refseg.masks": 2,
    "refseg.image": 2,
    # the core types and what writes them
    "refseg.types": 3,
    "refseg.records": 3,
    # drawing results, the answer protocol, the VLM-feature contract, dataset readers
    "refseg.render": 4,
    "refseg.protocol": 4,
    "refseg.vlm_features": 4,
    "refseg.data": 4,
    # results in other tools' formats (supervision, COCO results); the Result -> Detections
    # half sits on the ground floor so that Result.to_supervision() can reach it
    "refseg.interop": 4,
    "refseg.interop.detections": 2,
    # the two halves of a pipeline, which never import each other
    "refseg.grounding": 5,
    "refseg.segmentation": 5,
    # their assembly
    "refseg.pipeline": 6,
    # jobs over many inputs
    "refseg.jobs": 7,
    "refseg.batch": 8,
    "refseg.eval": 8,
    "refseg.video": 8,
    # training and test helpers build on all of the above
    "refseg.train": 9,
    "refseg.testing": 9,
    # entry points
    "refseg.serve": 10,
    "refseg.cli": 11,
    "refseg.__main__": 12,
    "refseg": 12,  # the public API re-exports from every floor
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "refseg").rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The refseg modules ``name`` imports (``from refseg import masks`` names refseg.masks)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def closest(target: str) -> str:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {closest(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else closest(base))
    return {t for t in found if t.startswith("refseg") and t != name}


def _floor(name: str) -> tuple[str, int]:
    key = max((k for k in FLOORS if name == k or name.startswith(k + ".")), key=len)
    return key, FLOORS[key]


def _edges() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_every_module_has_a_floor() -> None:
    unplaced = [n for n in _modules() if not any(n == k or n.startswith(k + ".") for k in FLOORS)]
    assert not unplaced


def test_no_import_runs_up_a_floor_or_across_siblings() -> None:
    wrong = []
    for name, targets in sorted(_edges().items()):
        home, floor = _floor(name)
        for target in sorted(targets):
            there, target_floor = _floor(target)
            if target_floor > floor:
                wrong.append(f"{name} (floor {floor}) imports {target} (floor {target_floor})")
            elif target_floor == floor and there != home:
                wrong.append(f"{name} imports its sibling {target} (both floor {floor})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = _edges()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt == node.rpartition(".")[0] or node.startswith(nxt + "."):
                continue  # a module and the package that contains it
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(cycles)


def _top(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_private_names_stay_in_their_package() -> None:
    """``_name`` is a package's own business: another package that needs it needs a public
    home for it (the run helpers shared by eval and batch live in refseg.jobs, say)."""
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private and node.module.startswith("refseg") and _top(node.module) != _top(name):
                    wrong.append(f"{name} imports {', '.join(private)} from {node.module}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from refseg import masks", {"refseg.masks"}),
        ("from refseg.errors import InputError", {"refseg.errors"}),
        ("def f():\n    from refseg.eval.metrics import boundary", {"refseg.eval.metrics"}),
        ("import numpy", set()),
    ],
)
def test_imports_are_read(tmp_path: Path, source: str, expected: set[str]) -> None:
    """The checker sees module-level and lazy imports (a checker that saw none would pass)."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = {"refseg", "refseg.masks", "refseg.errors", "refseg.eval", "refseg.eval.metrics"}
    assert _imports("refseg.probe", path, known) == expected
