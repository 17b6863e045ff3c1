"""Guess the ``KIND:PATH[:SPLIT]`` spec a user meant when they gave a bare path.

``refseg eval --dataset coco-400.jsonl`` (no kind) used to answer only "expected
KIND:PATH[:SPLIT]", leaving the user to find which kind reads a ``.jsonl`` file. The path itself
usually says: its extension, for a file its first bytes, for a folder the files the readers look
for. The guesses only go into error messages (``did you mean jsonl:coco-400.jsonl?``); a spec is
never rewritten silently, because a wrong guess would evaluate on the wrong dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from refseg.data.layouts import REFCOCO_M_COLUMNS, layout_of

#: A file's extension -> the kind that reads such a file when nothing better is known.
KIND_OF_SUFFIX = {".jsonl": "jsonl", ".json": "coco", ".parquet": "refcoco-m"}

#: Bytes read from a file to tell what it holds: the first JSONL record, or the top of a COCO
#: ``instances.json`` (a compact one is a single line far longer than this).
_HEAD_BYTES = 64 * 1024


def suggest_specs(path_text: str) -> list[str]:
    """Dataset specs ``path_text`` (a path given without ``KIND:``) most likely means, best
    first; empty when neither the name nor the contents say (a missing file without a known
    extension, an unreadable file, a folder that holds no known layout)."""
    if not path_text:
        return []
    path = Path(path_text).expanduser()
    try:
        if path.is_dir():
            return _folder_specs(path, path_text)
        if path.is_file():
            kinds = _sniff_file(path)
            if kinds is not None:  # the contents decide (a Parquet file of no known layout: none)
                return [f"{kind}:{path_text}" for kind in kinds]
    except OSError:  # unreadable: fall back on the name
        pass
    kind = KIND_OF_SUFFIX.get(path.suffix.lower())
    return [f"{kind}:{path_text}"] if kind else []


def _sniff_file(path: Path) -> list[str] | None:
    """``jsonl``, ``coco``, ``refcoco-m`` or the RefCOCO Parquet kinds from a file's first bytes
    (a Parquet file's columns); None when unsure (the name's guess then stands)."""
    with open(path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    if head.startswith(b"PAR1"):
        return _parquet_kinds(path)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text.startswith("{"):
        return None
    try:
        first = json.loads(text.split("\n", 1)[0])
    except ValueError:
        first = None
    if isinstance(first, dict):  # a whole object on the first line: a record, or compact COCO
        if "images" in first or "annotations" in first:
            return ["coco"]
        return ["jsonl"] if "image" in first else None
    # Not a whole object on one line: an indented COCO file, or a compact one over the head.
    return ["coco"] if '"images"' in text or '"annotations"' in text else None


_PARQUET_KINDS = ["refcoco-parquet", "refcoco+-parquet", "refcocog-parquet", "grefcoco-parquet"]


def _parquet_kinds(path: Path) -> list[str]:
    """The kinds whose reader takes this Parquet file, from its schema (the footer only)."""
    try:
        import pyarrow.parquet as pq

        columns = set(pq.read_schema(path).names)
    except Exception:  # no pyarrow, or not readable as Parquet: the name's guess stands
        return ["refcoco-m"]
    if columns >= REFCOCO_M_COLUMNS:
        return ["refcoco-m"]
    return _PARQUET_KINDS if layout_of(columns) else []


def _folder_specs(folder: Path, shown: str) -> list[str]:
    """Specs for a folder, from the files each layout's reader looks for."""
    if (folder / "refshapes.json").is_file():
        return [f"refshapes:{shown}:{_pick_split(folder.glob('*.jsonl'))}"]
    if any(folder.glob("grefs(*).*")):
        return [f"grefcoco:{shown}:val"]
    refs = sorted(p.name for p in folder.glob("refs(*).p"))
    if refs:
        specs = []
        if "refs(umd).p" in refs:
            specs.append(f"refcocog:{shown}:val")
        if "refs(unc).p" in refs:
            specs += [f"refcoco:{shown}:val", f"refcoco+:{shown}:val"]
        if "refs(google).p" in refs and not specs:
            specs += [f"refcoco-google:{shown}:val", f"refcocog-google:{shown}:val"]
        return specs
    shards = sorted(folder.glob("*.parquet")) or sorted(folder.glob("data/*.parquet"))
    if shards:
        return [f"{kind}:{shown}" for kind in _parquet_kinds(shards[0])]
    if (folder / "instances.json").is_file():
        return [f"coco:{shown}"]
    if any(folder.glob("*.jsonl")):
        return [f"jsonl:{shown}:{_pick_split(folder.glob('*.jsonl'))}"]
    if any((folder / name).is_dir() for name in ("train", "val", "test")):
        return [f"reasonseg:{shown}:val"]
    return []


def _pick_split(files: Iterable[Path]) -> str:
    """The split to show in a suggestion: ``val`` when there is one, else the first found."""
    names = sorted(p.stem for p in files)
    if "val" in names:
        return "val"
    return names[0] if names else "SPLIT"


def did_you_mean(path_text: str) -> str:
    """``"; did you mean jsonl:x.jsonl?"`` for an error message, or ``""`` with no guess."""
    specs = suggest_specs(path_text)
    if not specs:
        return ""
    return f"; did you mean {' or '.join(specs)}?"
