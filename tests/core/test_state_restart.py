"""The state package's pure pieces: ``restart_download`` (the one place a download starts over), the one
``.part`` path derivation, and the progress fraction ``status`` and the TUI share."""

from __future__ import annotations

from pathlib import Path

import pytest

from modfetch.app.status import progress_of
from modfetch.state import (
    CHUNK_COMPLETE,
    COMPLETE,
    FAILED,
    MISMATCH,
    PART_SUFFIX,
    RUNNING,
    ChunkRow,
    DownloadRow,
    open_state,
    part_path_for,
    progress_fraction,
)
from modfetch.tui.model import Item


def test_restart_download_clears_chunks_part_and_bytes_in_one_call(tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    with open_state(tmp_path / "state.db") as db:
        row = db.create_download("https://x/model.bin", str(dest), size=8, etag='"a"', status=RUNNING)
        other = db.create_download("https://x/other.bin", str(tmp_path / "other.bin"), size=8)
        chunk = ChunkRow(0, 0, 8, 8, "ab" * 32, CHUNK_COMPLETE)
        db.save_chunks(row.id, [chunk], bytes_done=8)
        db.save_chunks(other.id, [chunk], bytes_done=8)
        row.part_path.write_bytes(b"12345678")
        (tmp_path / "other.bin.part").write_bytes(b"12345678")

        db.restart_download(row.id, etag='"b"', size=9)

        fresh = db.get_download(row.id)
        assert fresh is not None
        assert (fresh.bytes_done, fresh.etag, fresh.size, fresh.status) == (0, '"b"', 9, RUNNING)
        assert db.get_chunks(row.id) == []
        assert not row.part_path.exists()
        # another download is untouched
        assert db.get_chunks(other.id) == [chunk]
        assert (tmp_path / "other.bin.part").read_bytes() == b"12345678"
        # a caller that knows the file is still there in full keeps its byte count
        db.restart_download(other.id, status=MISMATCH, bytes_done=8)
        kept = db.get_download(other.id)
        assert kept is not None and (kept.status, kept.bytes_done) == (MISMATCH, 8)
        assert not (tmp_path / "other.bin.part").exists()
        db.restart_download(12345)  # a row forgotten meanwhile: nothing to do, no error


def test_restart_download_without_a_part_file(tmp_path: Path) -> None:
    with open_state(tmp_path / "state.db") as db:
        row = db.create_download("u", str(tmp_path / "f.bin"), bytes_done=5)
        db.restart_download(row.id)
        fresh = db.get_download(row.id)
        assert fresh is not None and fresh.bytes_done == 0


@pytest.mark.parametrize("dest", ["/a/model.safetensors", "/a/b c/ü.bin", "/a/x.part", "rel/name"])
def test_part_path_is_derived_in_one_place(dest: str) -> None:
    assert part_path_for(dest) == Path(dest + PART_SUFFIX)
    assert part_path_for(Path(dest)) == part_path_for(dest)
    assert DownloadRow(1, "u", dest).part_path == part_path_for(dest)


@pytest.mark.parametrize(("status", "size", "done", "expected"), [
    (COMPLETE, None, 0, 1.0),
    (COMPLETE, 10, 3, 1.0),
    (RUNNING, None, 5, None),
    (RUNNING, 0, 5, None),
    (RUNNING, -10, 5, None),
    (RUNNING, 10, 5, 0.5),
    (FAILED, 10, 20, 1.0),
    (RUNNING, 10, -3, 0.0),
])
def test_status_and_tui_share_one_progress(status: str, size: int | None, done: int,
                                           expected: float | None) -> None:
    row = DownloadRow(1, "u", "/d", status=status, size=size, bytes_done=done)
    assert progress_fraction(status, size, done) == expected
    assert progress_of(row) == expected
    assert Item(row, done).fraction == expected
