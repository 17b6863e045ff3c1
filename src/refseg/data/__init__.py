"""Datasets: readers for the published referring-segmentation layouts, the JSONL interchange
format, and the RefShapes synthetic benchmark.

``open_dataset("KIND:PATH[:SPLIT]")`` is the one entry point evaluation and training use; see
:func:`refseg.data.base.dataset_kinds` for the kinds and each reader module for its layout.
"""

from refseg.data.base import DatasetSpec, Sample, dataset_kinds, open_dataset, register_reader

__all__ = ["DatasetSpec", "Sample", "dataset_kinds", "open_dataset", "register_reader"]
