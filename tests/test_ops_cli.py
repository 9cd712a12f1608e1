"""Issue 16 items 4-7 through the installed ``modfetch``: several URIs continue past a failure, ``-i FILE``
URI lists, ``--dry-run`` and ``--json`` on every stderr line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch, assert_clean_error, error_lines
from tests.servers.faulty import FaultyServer


def test_three_urls_with_the_middle_one_404_fetch_two_and_exit_1(mf: Modfetch,
                                                                 faulty_server: type[FaultyServer]) -> None:
    good = faulty_server(size=MiB)
    bad = faulty_server(size=MiB, error_status=404, error_times=None, include_probe=True)
    done = mf.run("download", "--quiet", "--dest", str(mf.dest), good.url_for("/a.bin"), bad.url_for("/b.bin"),
                  good.url_for("/c.bin"))
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in mf.dest.iterdir() if p.suffix == ".bin") == ["a.bin", "c.bin"]
    errors = error_lines(done.stderr)
    assert len(errors) == 2, done.stderr
    assert "404" in errors[0] and "b.bin" in errors[0]
    assert errors[1] == "modfetch: error: 2 of 3 downloads succeeded"
    assert "Traceback" not in done.stderr
    assert len(done.stdout.strip().splitlines()) == 4  # path + sha256 line for each of the two files


def test_several_urls_that_all_succeed_exit_0_with_a_summary(mf: Modfetch,
                                                             faulty_server: type[FaultyServer]) -> None:
    good = faulty_server(size=MiB)
    done = mf.run("download", "--dest", str(mf.dest), good.url_for("/a.bin"), good.url_for("/b.bin"))
    assert done.returncode == 0, done.stderr
    assert "2 of 2 downloads succeeded" in done.stderr


def test_input_file_with_comments_and_blank_lines(mf: Modfetch, faulty_server: type[FaultyServer],
                                                  tmp_path: Path) -> None:
    good = faulty_server(size=MiB)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# nightly models\n\n{good.url_for('/one.bin')}\n   # indented comment\n"
                       f"{good.url_for('/two.bin')}  \n\n")
    done = mf.run("download", "--quiet", "-i", str(listing), "--dest", str(mf.dest / "sub"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (mf.dest / "sub").glob("*.bin")) == ["one.bin", "two.bin"]


def test_input_file_from_a_pipe_combines_with_urls_on_the_command_line(mf: Modfetch,
                                                                       faulty_server: type[FaultyServer]) -> None:
    good = faulty_server(size=MiB)
    done = subprocess.run(mf.command("download", "--quiet", "--json", "--dest", str(mf.dest), "--input-file", "-",
                                     good.url_for("/argv.bin")),
                          input=f"{good.url_for('/piped.bin')}\n", capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    paths = sorted(Path(json.loads(line)["path"]).name for line in done.stdout.splitlines())
    assert paths == ["argv.bin", "piped.bin"]


@pytest.mark.parametrize(("content", "needle"), [
    (None, "cannot read --input-file"),
    (b"\x00\x01binary", "binary file"),
    (b"\xff\xfe not utf8", "not UTF-8"),
    (b"http://127.0.0.1:9/x\n  dir=/tmp\n", ":2: indented option lines"),
    (b"http://127.0.0.1:9/x http://127.0.0.1:9/y\n", ":1: one URI per line"),
    (b"# only comments\n\n", "lists no URIs"),
])
def test_a_bad_input_file_is_one_clear_line(mf: Modfetch, tmp_path: Path, content: bytes | None,
                                            needle: str) -> None:
    listing = tmp_path / "list.txt"
    if content is not None:
        listing.write_bytes(content)
    done = mf.run("download", "-i", str(listing))
    assert done.returncode == 2
    assert_clean_error(done.stderr, needle)
    assert not mf.dest.exists() or not any(mf.dest.iterdir())


def test_input_file_and_batch_do_not_mix(mf: Modfetch, tmp_path: Path) -> None:
    (tmp_path / "jobs.yml").write_text("jobs: []\n")
    (tmp_path / "list.txt").write_text("http://127.0.0.1:9/x\n")
    done = mf.run("download", "-i", str(tmp_path / "list.txt"), "--batch", str(tmp_path / "jobs.yml"))
    assert done.returncode == 2
    assert_clean_error(done.stderr, "--input-file cannot be combined with --batch")
