"""refseg.fileio: atomic outputs, and one-line errors for outputs that cannot be written."""

import errno
import os
import stat
import subprocess

import pytest

from refseg.errors import RefsegError
from refseg.fileio import (
    WriteError,
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    ensure_dir,
    refuse_overwriting_inputs,
)


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_files_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


# --- unwritable and careless output paths (issue 11) ---


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize(
    "name, message",
    [
        ("folder", "it is a folder"),  # a directory as the target
        ("afile/x.json", "not a folder"),  # the parent is a file
        ("afile/deeper/x.json", "not a folder"),
    ],
)
def test_impossible_targets_are_one_line_write_errors(tmp_path, name, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(WriteError, match=message) as caught:
        atomic_write_text(tmp_path / name, "{}")
    assert isinstance(caught.value, RefsegError) and "\n" not in str(caught.value)
    assert (tmp_path / "afile").read_text() == "keep" and not list((tmp_path / "folder").iterdir())


def test_proc_paths_and_the_current_folder(tmp_path, monkeypatch):
    with pytest.raises(WriteError, match=r"/proc/self/x\.json"):
        atomic_write_text("/proc/self/x.json", "{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WriteError, match="folder"):
        atomic_write_text(".", "{}")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_at_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    """ENOSPC raised by the real fsync call of the write path (as a full disk does)."""
    import refseg.fileio as fileio

    target = tmp_path / "out.json"
    atomic_write_text(target, "old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(WriteError, match="no space left"):
        atomic_write_text(target, "new" * 1000)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 64 KiB file system (root only; skipped where mount is not allowed)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_really_full_disk(tiny_tmpfs):
    target = tiny_tmpfs / "big.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(WriteError, match="no space left"):
        atomic_write_bytes(target, os.urandom(256 * 1024))
    assert target.read_bytes() == b"old" and _leftovers(tiny_tmpfs) == []


def test_devices_are_written_in_place_not_replaced(tmp_path):
    atomic_write_text("/dev/null", "{}")  # as root a rename would replace the device node
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(WriteError, match="no space left"):
        atomic_write_text("/dev/full", "x" * 10000)


def test_dash_is_standard_output(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    atomic_write_text("-", '{"a": 1}\n')
    atomic_write_bytes("-", b"PNG")
    assert capfd.readouterr().out == '{"a": 1}\nPNG'
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_symlinks_are_written_through(tmp_path):
    real = tmp_path / "shared" / "r.json"
    real.parent.mkdir()
    real.write_text("old")
    os.chmod(real, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert real.stat().st_mode & 0o777 == 0o640  # the replaced file keeps its permissions
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "shared" / "later.json")
    atomic_write_text(dangling, "x")
    assert dangling.is_symlink() and (tmp_path / "shared" / "later.json").read_text() == "x"


def test_outputs_that_are_inputs_are_refused(tmp_path, monkeypatch):
    photo = tmp_path / "v.jpg"
    photo.write_bytes(b"jpeg")
    (tmp_path / "alias.jpg").symlink_to(photo)
    os.link(photo, tmp_path / "hard.jpg")
    monkeypatch.chdir(tmp_path)
    for same in ("v.jpg", "./v.jpg", str(photo), "alias.jpg", "hard.jpg"):
        with pytest.raises(WriteError, match="input file"):
            refuse_overwriting_inputs({"--overlay": same}, [photo])
    with pytest.raises(WriteError, match="both write"):
        refuse_overwriting_inputs({"--json": "o.png", "--overlay": "o.png"}, [photo])
    with pytest.raises(WriteError, match="standard output"):
        refuse_overwriting_inputs({"--json": "-", "--overlay": "-"}, [photo])
    refuse_overwriting_inputs({"--json": "-", "--overlay": "o.png", "--mask-png": None}, [photo])
    assert photo.read_bytes() == b"jpeg"


def test_ensure_dir(tmp_path):
    (tmp_path / "f").write_text("")
    assert ensure_dir(tmp_path / "a" / "b").is_dir()
    with pytest.raises(WriteError, match="not a folder"):
        ensure_dir(tmp_path / "f")
    with pytest.raises(WriteError):
        ensure_dir("/proc/self/nope")


def test_check_writable_fails_early_and_creates_nothing(tmp_path):
    from refseg.fileio import check_writable

    (tmp_path / "afile").write_text("")
    (tmp_path / "folder").mkdir()
    for bad, message in [
        (tmp_path / "folder", "is a folder"),
        (tmp_path / "afile" / "a" / "b.json", "is a file, not a folder"),
        ("/proc/self/x.json", r"/proc/self/x\.json"),
    ]:
        with pytest.raises(WriteError, match=message):
            check_writable(bad)
    for good in (tmp_path / "new" / "deep" / "r.json", tmp_path / "r.json", "-", "/dev/null", None):
        check_writable(good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]
