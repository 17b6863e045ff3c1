"""A dataset given without its kind gets a suggestion (issue 19, item 8).

``refseg eval --dataset coco-400.jsonl`` answered only "expected KIND:PATH[:SPLIT]". The error
now says which spec the path most likely means, read from its extension, a file's first bytes or
the files a folder holds (``did you mean jsonl:coco-400.jsonl?``); it never rewrites the spec.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from refseg.cli import main
from refseg.data.base import DatasetSpec, open_dataset
from refseg.data.suggest import suggest_specs
from refseg.errors import InputError

RECORD = {"id": "a", "image": "a.png", "phrase": "the cat", "masks": [], "width": 4, "height": 4}
COCO = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [], "categories": []}


def touch(name: str, data: bytes = b"") -> Callable[[Path], None]:
    def make(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return make


def folder(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).mkdir(parents=True)


def both(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        for maker in makers:
            maker(root)

    return make


def nothing(root: Path) -> None:
    pass


def parquet(name: str, columns: list[str]) -> Callable[[Path], None]:
    """A real Parquet file with these (string) columns and one row."""

    def make(root: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({c: ["x"] for c in columns}), path)

    return make


PARQUET_KINDS = ["refcoco-parquet", "refcoco+-parquet", "refcocog-parquet", "grefcoco-parquet"]
LMMS_COLUMNS = ["question_id", "image", "question", "answer", "segmentation", "bbox"]
JXU_COLUMNS = ["ref_id", "ann_id", "sentences", "raw_anns", "raw_image_info"]


JSONL_LINE = (json.dumps(RECORD) + "\n").encode()
#: A compact COCO file: one line far longer than the bytes read to sniff it.
BIG_COCO = json.dumps(
    {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in range(5000)], "annotations": []},
    separators=(",", ":"),
).encode()

#: A record that mentions "images" in its meta is still a record, not COCO.
META_RECORD = json.dumps({**RECORD, "meta": {"images": 3}}).encode()

#: (what exists in the folder, the path given without a kind, the suggestions expected).
CASES = [
    # By the name alone (the file does not exist).
    (nothing, "coco-400.jsonl", ["jsonl:coco-400.jsonl"]),
    (nothing, "data/Val.JSONL", ["jsonl:data/Val.JSONL"]),
    (nothing, "instances.json", ["coco:instances.json"]),
    (nothing, "validation-00000-of-00001.parquet", ["refcoco-m:validation-00000-of-00001.parquet"]),
    (nothing, "nothing", []),
    (nothing, "photo.jpg", []),
    (nothing, "", []),
    # By what a file holds, whatever its name says.
    (touch("pairs.txt", JSONL_LINE), "pairs.txt", ["jsonl:pairs.txt"]),
    (touch("pairs.json", JSONL_LINE * 2), "pairs.json", ["jsonl:pairs.json"]),
    (touch("ann.json", json.dumps(COCO, indent=1).encode()), "ann.json", ["coco:ann.json"]),
    (touch("ann", BIG_COCO), "ann", ["coco:ann"]),
    (touch("one.json", json.dumps(COCO).encode()), "one.json", ["coco:one.json"]),
    (
        touch("m.txt", json.dumps({**RECORD, "meta": {"images": 3}}).encode()),
        "m.txt",
        ["jsonl:m.txt"],
    ),
    (touch("shard", b"PAR1\x00\x00"), "shard", ["refcoco-m:shard"]),
    (touch("notes.txt", b"hello"), "notes.txt", []),
    (touch("broken.jsonl", b"{not json"), "broken.jsonl", ["jsonl:broken.jsonl"]),
    # By the files a folder holds (each reader's layout).
    (touch("c/instances.json", b"{}"), "c", ["coco:c"]),
    (both(touch("s/train.jsonl"), touch("s/val.jsonl")), "s", ["jsonl:s:val"]),
    (touch("s/test.jsonl"), "s", ["jsonl:s:test"]),
    (both(touch("r/refshapes.json"), touch("r/ood.jsonl")), "r", ["refshapes:r:ood"]),
    (touch("g/refs(umd).p"), "g", ["refcocog:g:val"]),
    (touch("u/refs(unc).p"), "u", ["refcoco:u:val", "refcoco+:u:val"]),
    (touch("gr/grefs(unc).json"), "gr", ["grefcoco:gr:val"]),
    (touch("m/data/validation-00000-of-00001.parquet"), "m", ["refcoco-m:m"]),
    # Parquet files by their columns: RefCOCO-M's shards, or a RefCOCO Parquet layout.
    (parquet("m.parquet", ["image", "image_id", "samples"]), "m.parquet", ["refcoco-m:m.parquet"]),
    (parquet("lm.parquet", LMMS_COLUMNS), "lm.parquet", [f"{k}:lm.parquet" for k in PARQUET_KINDS]),
    (parquet("j/data/val-0.parquet", JXU_COLUMNS), "j", [f"{k}:j" for k in PARQUET_KINDS]),
    (parquet("other.parquet", ["a", "b"]), "other.parquet", []),
    (both(folder("l/train"), folder("l/val")), "l", ["reasonseg:l:val"]),
    (folder("empty"), "empty", []),
]


@pytest.mark.parametrize(("make", "given", "expected"), CASES)
def test_suggestions(
    make: Callable[[Path], None],
    given: str,
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    assert suggest_specs(given) == expected


def test_the_parse_error_carries_the_suggestion(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        DatasetSpec.parse("coco-400.jsonl")
    assert str(caught.value) == (
        "dataset spec 'coco-400.jsonl': expected KIND:PATH[:SPLIT]; "
        "did you mean jsonl:coco-400.jsonl?"
    )


def test_without_a_guess_the_kinds_are_listed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"expected KIND:PATH\[:SPLIT\] \(kinds: coco, .*jsonl"):
        DatasetSpec.parse("nothing")


def test_a_path_read_as_a_kind_gets_the_suggestion(tmp_path: Path, monkeypatch) -> None:
    """``data/x.jsonl:val`` parses as kind ``data/x.jsonl``: say what was meant."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        open_dataset("data/x.jsonl:val")
    assert str(caught.value) == (
        "dataset kind 'data/x.jsonl' is unknown; did you mean jsonl:data/x.jsonl?"
    )


def test_the_suggested_spec_opens(tmp_path: Path, monkeypatch) -> None:
    """Following the suggestion works: it names the reader that reads the file."""
    monkeypatch.chdir(tmp_path)
    Path("pairs.json").write_bytes(JSONL_LINE)
    (suggestion,) = suggest_specs("pairs.json")
    assert [s.id for s in open_dataset(suggestion)] == ["a"]


@pytest.fixture
def no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a model was loaded: {args}")

    monkeypatch.setattr("refseg.segmentation.load_segmenter", refuse)
    monkeypatch.setattr("refseg.grounding.load_grounder", refuse)


@pytest.mark.parametrize(
    ("dataset", "extra", "expected"),
    [
        (
            "coco-400.jsonl",
            [],
            "dataset spec 'coco-400.jsonl': expected KIND:PATH[:SPLIT]; "
            "did you mean jsonl:coco-400.jsonl?",
        ),
        ("coco-400.jsonl", ["--oracle-boxes"], "did you mean jsonl:coco-400.jsonl?"),
        ("folder", [], "did you mean coco:folder?"),
        # A spec typo is found before the dataset is read (it does not exist here).
        ("jsonl:absent.jsonl", ["--grounder", "nope:xyz"], "unknown grounder 'nope:xyz'"),
        ("jsonl:absent.jsonl", ["--oracle-boxes", "--segmenter", "x"], "unknown segmenter 'x'"),
    ],
)
def test_eval_command(
    dataset: str,
    extra: list[str],
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_models: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "instances.json").write_text(json.dumps(COCO))
    code = main(["eval", "--dataset", dataset, "--out", "run", *extra])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("refseg: error: "), err
    assert expected in lines[0]
    assert not (tmp_path / "run").exists()  # nothing written
