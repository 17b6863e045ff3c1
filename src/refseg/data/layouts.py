"""The column sets that tell Parquet datasets apart: one place for the readers that check them
(:mod:`refseg.data.parquet`) and for the spec suggestions that read them from a file's footer
(:mod:`refseg.data.suggest`), which must not import the readers (they import the suggestions)."""

from __future__ import annotations

LMMS = "lmms-lab"
JXU = "jxu124"
#: The columns each RefCOCO Parquet layout needs (from the datasets' cards).
LAYOUT_COLUMNS = {
    LMMS: frozenset({"question_id", "image", "answer", "segmentation"}),
    JXU: frozenset({"ref_id", "sentences", "raw_anns", "raw_image_info"}),
}
#: RefCOCO-M's shards (:mod:`refseg.data.refcocom`).
REFCOCO_M_COLUMNS = frozenset({"image", "image_id", "samples"})


def layout_of(columns: set[str]) -> str | None:
    """The RefCOCO Parquet layout a shard's columns follow (:data:`LMMS`, :data:`JXU`), or None."""
    return next((name for name, needed in LAYOUT_COLUMNS.items() if needed <= columns), None)
