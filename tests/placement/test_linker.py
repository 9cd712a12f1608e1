"""The linker on real files: modes, EXDEV fallback, dedupe, no overwrite without force, planted symlinks,
dangling links, directories."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch.errors import IntegrityError, TargetExistsError
from modfetch.placement.linker import SourceFile, copy_verified, inspect_target, place

DATA = b"model weights " * 1000


@pytest.fixture
def src(tmp_path: Path) -> SourceFile:
    path = tmp_path / "dl" / "model.safetensors"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return SourceFile(path, hashlib.sha256(DATA).hexdigest())


def test_symlink_mode_absolute_link(src: SourceFile, tmp_path: Path) -> None:
    target = tmp_path / "app" / "models" / "loras" / "model.safetensors"
    result = place(src, target, "symlink")
    assert (result.action, result.mode) == ("created", "symlink")
    assert target.is_symlink() and os.readlink(target) == str(src.path)
    assert os.path.isabs(os.readlink(target))
    assert target.parent.is_dir() and not target.parent.is_symlink()  # folders stay real folders
    assert place(src, target, "symlink").action == "skipped"


def test_hardlink_mode(src: SourceFile, tmp_path: Path) -> None:
    target = tmp_path / "app" / "model.safetensors"
    result = place(src, target, "hardlink")
    assert (result.action, result.mode) == ("created", "hardlink")
    assert os.stat(target).st_ino == src.stat.st_ino
    assert place(src, target, "hardlink").action == "skipped"


def test_copy_mode_is_verified(src: SourceFile, tmp_path: Path) -> None:
    target = tmp_path / "app" / "model.safetensors"
    result = place(src, target, "copy")
    assert (result.action, result.mode) == ("created", "copy")
    assert not target.is_symlink() and os.stat(target).st_ino != src.stat.st_ino
    assert target.read_bytes() == DATA
    assert place(src, target, "copy").action == "skipped"
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_copy_with_wrong_expected_hash_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(DATA)
    lying = SourceFile(path, "0" * 64)
    (tmp_path / "out").mkdir()
    with pytest.raises(IntegrityError):
        copy_verified(lying, tmp_path / "out" / "f.bin")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A directory on another file system: a fresh tmpfs mount (root), else /dev/shm if it differs."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                             capture_output=True, check=False).returncode == 0
    if mounted:
        try:
            yield mount
        finally:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        return
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        d = shm / f"modfetch-test-{os.getpid()}-{tmp_path.name}"
        d.mkdir()
        try:
            yield d
        finally:
            subprocess.run(["rm", "-rf", str(d)], check=False)
        return
    pytest.skip("no second file system: mount -t tmpfs failed (not root?) and /dev/shm is unusable")


def test_hardlink_across_filesystems_falls_back_to_copy(src: SourceFile, other_fs: Path) -> None:
    assert os.stat(other_fs).st_dev != src.stat.st_dev
    target = other_fs / "models" / "model.safetensors"
    result = place(src, target, "hardlink")
    assert (result.action, result.mode) == ("created", "copy")
    assert "different file systems" in result.message and "copied" in result.message
    assert target.read_bytes() == DATA and not target.is_symlink()


def test_identical_file_is_deduped(src: SourceFile, tmp_path: Path) -> None:
    target = tmp_path / "app" / "model.safetensors"
    target.parent.mkdir()
    target.write_bytes(DATA)
    before = os.stat(target)
    result = place(src, target, "symlink")
    assert result.action == "skipped"
    assert not target.is_symlink() and os.stat(target).st_ino == before.st_ino


def test_link_to_identical_copy_elsewhere_is_deduped(src: SourceFile, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere.bin"
    copy.write_bytes(DATA)
    target = tmp_path / "app" / "model.safetensors"
    target.parent.mkdir()
    target.symlink_to(copy)
    assert place(src, target, "hardlink").action == "skipped"


def test_different_file_not_overwritten_without_force(src: SourceFile, tmp_path: Path) -> None:
    target = tmp_path / "app" / "model.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"the user's own file")
    with pytest.raises(TargetExistsError, match="different content"):
        place(src, target, "symlink")
    assert target.read_bytes() == b"the user's own file"
    result = place(src, target, "symlink", force=True)
    assert result.action == "replaced"
    assert os.readlink(target) == str(src.path)
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "copy"])
def test_planted_symlink_is_never_written_through(src: SourceFile, tmp_path: Path, mode: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    target = tmp_path / "app" / "model.safetensors"
    target.parent.mkdir()
    target.symlink_to(victim)
    with pytest.raises(TargetExistsError):
        place(src, target, mode)
    assert victim.read_bytes() == b"precious"
    place(src, target, mode, force=True)
    assert victim.read_bytes() == b"precious"  # the link itself was replaced, not what it pointed to
    assert target.read_bytes() == DATA
    if mode != "symlink":
        assert not target.is_symlink()


def test_dangling_link_is_repaired_without_force(src: SourceFile, tmp_path: Path) -> None:
    target = tmp_path / "app" / "model.safetensors"
    target.parent.mkdir()
    target.symlink_to(tmp_path / "gone.safetensors")
    result = place(src, target, "symlink")
    assert result.action == "repaired"
    assert os.readlink(target) == str(src.path)


def test_directory_at_target_is_never_replaced(src: SourceFile, tmp_path: Path) -> None:
    target = tmp_path / "app" / "model.safetensors"
    (target / "inner").mkdir(parents=True)
    with pytest.raises(TargetExistsError, match="directory"):
        place(src, target, "symlink", force=True)
    assert (target / "inner").is_dir()


def test_source_through_symlink_links_the_real_file(src: SourceFile, tmp_path: Path) -> None:
    alias = tmp_path / "alias.safetensors"
    alias.symlink_to(src.path)
    target = tmp_path / "app" / "x.safetensors"
    place(SourceFile(alias), target, "symlink")
    assert os.readlink(target) == str(src.path)


def test_inspect_target_states(src: SourceFile, tmp_path: Path) -> None:
    assert inspect_target(tmp_path / "nope", src) == "absent"
    assert inspect_target(src.path, src) == "same"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert inspect_target(fifo, src) == "different"  # never opened
