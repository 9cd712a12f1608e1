"""Repairing a finished file in place: ``verify --repair`` and a plain rerun of the download command re-fetch
only the damaged chunks (counted at the server), install atomically after the whole-file hash matches, and
keep the damaged file when the remote changed or the file is not modfetch's any more."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch, assert_clean_error
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.hub import HubLookalike

Serve = Callable[..., FaultyServer]
SIZE = 8 * MiB  # 8 chunks of 1 MiB (the test config's chunk size)


def flip(path: Path, offset: int) -> None:
    """Flip one byte in place (same inode and size, as bit rot or a stray write would)."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damaged_download(mf: Modfetch, faulty_server: Serve, **faults: object) -> tuple[FaultyServer, Path]:
    server = faulty_server(size=SIZE, path="/model.safetensors", **faults)
    path = Path(mf.download_json(server.url)["path"])
    flip(path, 3 * MiB + 12345)
    return server, path


def test_verify_repair_fetches_only_the_bad_chunk(mf: Modfetch, faulty_server: Serve) -> None:
    server, path = damaged_download(mf, faulty_server)
    plain = mf.cli("verify", "--all")
    assert plain.exit_code == 1 and "MISMATCH" in plain.stdout and "verify --repair" in plain.output
    mark = server.mark()
    result = mf.cli("verify", "--repair", "--all")
    assert result.exit_code == 0, result.output
    assert "repaired (fetched 1.0 MiB)" in result.stdout
    assert sha(path) == server.sha256()
    fetched = server.body_bytes(mark)
    assert 0 < fetched <= MiB + 1, fetched  # one chunk (plus the 1-byte probe), not the 8 MiB file
    assert Path(str(path) + ".sha256").read_text() == f"{server.sha256()}  {path.name}\n"
    assert not Path(str(path) + ".part").exists()
    (row,) = mf.rows()
    assert row["status"] == "complete" and row["sha256"] == server.sha256()
    assert not json.loads(row["meta"]).get("repairing")
    assert mf.cli("verify", "--all").exit_code == 0


def test_rerunning_the_download_command_repairs_without_force(mf: Modfetch, faulty_server: Serve) -> None:
    server, path = damaged_download(mf, faulty_server)
    mark = server.mark()
    result = mf.run("download", "--url", server.url, "--dest", str(mf.dest))
    assert result.returncode == 0, result.stderr
    assert "repairing it in place" in result.stderr and "1 completed chunk(s) no longer match" in result.stderr
    assert sha(path) == server.sha256()
    assert 0 < server.body_bytes(mark) <= MiB + 1


def test_repair_keeps_the_file_when_the_remote_changed(mf: Modfetch, faulty_server: Serve) -> None:
    server, path = damaged_download(mf, faulty_server)
    damaged = path.read_bytes()
    server.configure(change_after=0)  # every GET from now on serves version 2 (another ETag)
    result = mf.run("verify", "--repair", "--all")
    assert result.returncode == 1 and "remote file changed" in result.stdout
    assert path.read_bytes() == damaged and not Path(str(path) + ".part").exists()
    rerun = mf.run("download", "--url", server.url, "--dest", str(mf.dest))
    assert_clean_error(rerun.stderr, "is damaged, and the remote file changed")
    assert path.read_bytes() == damaged


def _replace_by_size(path: Path) -> None:
    path.write_bytes(b"mine")


def _replace_by_rename(path: Path) -> None:
    """Same size, other bytes, a new inode: someone put their own file there."""
    other = path.with_name("mine.tmp")
    other.write_bytes(bytes(path.stat().st_size))
    other.replace(path)


def _replace_by_link(path: Path) -> None:
    """A link to a same-sized foreign file: never read through, never repaired."""
    other = path.with_name("foreign.bin")
    other.write_bytes(bytes(path.stat().st_size))
    path.unlink()
    path.symlink_to(other)


@pytest.mark.parametrize("replace", [_replace_by_size, _replace_by_rename, _replace_by_link])
def test_a_file_someone_else_put_there_is_not_repaired_over(mf: Modfetch, faulty_server: Serve,
                                                            replace: Callable[[Path], None]) -> None:
    """Not bit rot: another size, another inode or a link.  The rerun still refuses to overwrite it."""
    server = faulty_server(size=2 * MiB)
    path = Path(mf.download_json(server.url)["path"])
    replace(path)
    before = (path.is_symlink(), path.read_bytes())
    rerun = mf.run("download", "--url", server.url, "--dest", str(mf.dest))
    assert_clean_error(rerun.stderr, "already exists with different or unknown content")
    assert (path.is_symlink(), path.read_bytes()) == before


def test_single_stream_download_is_repaired_whole(mf: Modfetch, faulty_server: Serve) -> None:
    """No chunk hashes on record (the server had no Range support): the whole file is fetched again, and
    still installed only once it hashes to the recorded value."""
    server, path = damaged_download(mf, faulty_server, ranges=False)
    mark = server.mark()
    result = mf.cli("verify", "--repair", "1")
    assert result.exit_code == 0, result.output
    assert sha(path) == server.sha256() and server.body_bytes(mark) >= SIZE


def test_deleted_file_rerun_says_what_happened(mf: Modfetch, faulty_server: Serve) -> None:
    """A file flagged by verify and then deleted: the rerun fetches it again without claiming a shorter
    .part or chunks that 'no longer match' (there was no .part at all)."""
    server, path = damaged_download(mf, faulty_server)
    assert mf.cli("verify", "--all").exit_code == 1  # status mismatch, chunk rows kept
    path.unlink()
    result = mf.run("download", "--url", server.url, "--dest", str(mf.dest))
    assert result.returncode == 0, result.stderr
    assert "shorter than recorded" not in result.stderr and "no longer match" not in result.stderr
    assert sha(path) == server.sha256()


def test_hf_file_is_repaired_from_its_original_uri(mf: Modfetch) -> None:
    with HubLookalike() as hub:
        mf.write_config(sources={"huggingface": {"endpoint": hub.url}})
        got = mf.cli("download", "--json", "--url", "hf://acme/tiny-model/weights/model.safetensors")
        assert got.exit_code == 0, got.output
        path = Path(json.loads(got.stdout.strip().splitlines()[-1])["path"])
        good = path.read_bytes()
        flip(path, 1000)
        result = mf.cli("verify", "--repair", str(path))
        assert result.exit_code == 0, result.output
        assert path.read_bytes() == good


def test_failed_repair_keeps_the_damaged_file(mf: Modfetch, faulty_server: Serve) -> None:
    """The server now sends wrong bytes every time: the whole-file hash never matches the recorded one, so
    nothing is installed; the damaged file stays exactly as it was and no .part is left behind."""
    server, path = damaged_download(mf, faulty_server)
    damaged = path.read_bytes()
    server.configure(corrupt_times=None)  # every data response has its first byte flipped
    result = mf.run("verify", "--repair", "--all")
    assert result.returncode == 1 and "not repaired" in result.stdout
    assert path.read_bytes() == damaged and not Path(str(path) + ".part").exists()


def test_old_layout_file_flagged_by_verify_is_repaired_where_it_is(mf: Modfetch, faulty_server: Serve) -> None:
    """A damaged file from the flat layout, already marked mismatch by verify: a rerun without --dest mends it
    at its old path (found by URL) instead of fetching a second copy into the new layout."""
    server, path = damaged_download(mf, faulty_server)  # --dest download_root: the old default place
    assert mf.cli("verify", "--all").exit_code == 1
    mark = server.mark()
    result = mf.cli("download", "--json", "--url", server.url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["path"] == str(path)
    assert sha(path) == server.sha256() and 0 < server.body_bytes(mark) <= MiB + 1
    assert not (mf.dest / f"127.0.0.1_{server.port}").exists()
