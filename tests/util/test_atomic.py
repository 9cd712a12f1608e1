"""util.atomic: the one small-file writer; every site that writes a small file keeps working for names at NAME_MAX."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from modfetch.engine.files import write_checksum_file
from modfetch.metrics import write_atomic as metrics_write_atomic
from modfetch.placement.hf_cache import write_ref
from modfetch.placement.linker import SourceFile, copy_verified
from modfetch.placement.ollama import write_modelfile
from modfetch.util.atomic import NAME_MAX, temp_path, write_atomic

# A name that is exactly NAME_MAX bytes: ASCII, and multi-byte characters whose cut must not split one.
NAMES = ["a" * NAME_MAX, "é" * 127 + "b", "模" * 85, "x" * 250]


@pytest.mark.parametrize("name", NAMES, ids=["ascii255", "2byte255", "3byte255", "ascii250"])
def test_temp_name_fits_name_max_and_stays_unique(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    first, second = temp_path(target), temp_path(target)
    assert first != second and first.parent == tmp_path
    for temp in (first, second):
        assert len(os.fsencode(temp.name)) <= NAME_MAX
        assert temp.name.startswith(".") and temp.name.endswith(".tmp")
        temp.name.encode("utf-8")  # no half character (would raise on a lone surrogate)


@pytest.mark.parametrize("name", NAMES, ids=["ascii255", "2byte255", "3byte255", "ascii250"])
@pytest.mark.parametrize("replace", [True, False])
def test_write_atomic_at_name_max(tmp_path: Path, name: str, replace: bool) -> None:
    target = tmp_path / "out" / name
    assert write_atomic(target, b"data", replace=replace) is True
    assert target.read_bytes() == b"data"
    assert os.listdir(target.parent) == [name]  # no temporary file left


def test_no_clobber_keeps_the_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "kept"
    target.parent.mkdir()
    target.write_bytes(b"old")
    assert write_atomic(target, b"new", replace=False) is False
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["kept"]


def test_a_planted_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "ref"
    target.symlink_to(victim)
    write_atomic(target, b"commit")
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and target.read_bytes() == b"commit"


def test_mode_umask_and_exact(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "masked", b"x", mode=0o644)
        write_atomic(tmp_path / "exact", b"x", mode=0o644, exact_mode=True, fsync=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "masked").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "exact").stat().st_mode) == 0o644


def test_mkdir_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "f", b"x", mkdir=False)
    assert write_atomic(tmp_path / "made" / "f", b"x")
    assert (tmp_path / "made" / "f").read_bytes() == b"x"


def _source(tmp_path: Path) -> SourceFile:
    path = tmp_path / "src" / "model.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + b"\0" * 60)
    return SourceFile(path)


# Every small-file writer of modfetch, at a target name of NAME_MAX bytes (ENAMETOOLONG before: the temporary
# name was the target name plus a suffix).
SITES: dict[str, Callable[[Path, Path], object]] = {
    "hf-cache-ref": lambda tmp, target: write_ref(target, "c" * 40),
    "metrics": lambda tmp, target: metrics_write_atomic(target, "modfetch_up 1\n"),
    "ollama-modelfile": lambda tmp, target: write_modelfile(_source(tmp), target),
    "placement-copy": lambda tmp, target: copy_verified(_source(tmp), target, final=True),
}


@pytest.mark.parametrize("site", sorted(SITES))
def test_every_small_file_site_handles_a_name_max_target(tmp_path: Path, site: str) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / ("m" * NAME_MAX)
    SITES[site](tmp_path, target)
    assert target.is_file() and target.stat().st_size > 0
    assert os.listdir(folder) == [target.name]


def test_checksum_sidecar_for_the_longest_name_that_has_one(tmp_path: Path) -> None:
    final = tmp_path / "out" / ("f" * (NAME_MAX - len(".sha256")))
    final.parent.mkdir()
    final.write_bytes(b"x")
    checksum = write_checksum_file(final, "0" * 64)
    assert checksum is not None and checksum.read_text() == f"{'0' * 64}  {final.name}\n"
    assert sorted(os.listdir(final.parent)) == sorted([final.name, checksum.name])
