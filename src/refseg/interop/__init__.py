"""Results in the formats other tools read, and their inputs back as refseg prompts.

* :mod:`refseg.interop.supervision`: ``supervision.Detections`` (``Result.to_supervision()``)
  and box prompts from them (``from_supervision``), with the optional ``supervision`` extra.
* :mod:`refseg.interop.coco`: the COCO ``segm`` results list that ``pycocotools.COCOeval``
  reads (``refseg segment --batch ... --coco-results`` and ``refseg eval ... --coco-results``).

Converters live here, beside the core types rather than inside them, so that
:mod:`refseg.types` stays free of third-party formats (``supervision`` is not a dependency).
"""
