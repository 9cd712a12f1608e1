"""End to end: the real ``modfetch tui`` in tmux, watching a download another process is running."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modfetch.state import FAILED, open_state
from tests.conftest import wait_for
from tests.e2e.tmux import Tmux, tmux_bin

MiB = 1 << 20


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., Tmux]]:
    tmux_bin()
    sessions: list[Tmux] = []

    def start(argv: list[str], width: int = 120, height: int = 30) -> Tmux:
        session = Tmux(tmp_path, width, height).run(argv, env=os.environ.copy())
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.kill()


def test_tui_shows_running_and_finished_downloads_and_every_key_works(mf, faulty_server, tmux) -> None:
    done = faulty_server(size=MiB, path="/alpha.bin")
    assert mf.run("--quiet", "download", "--url", done.url, "--dest", str(mf.dest)).returncode == 0
    held = faulty_server(size=2 * MiB, seed=2, path="/beta.bin", hold=True)
    downloader = mf.popen("--quiet", "download", "--url", held.url, "--dest", str(mf.dest))
    try:
        wait_for(lambda: any(r["status"] == "running" and r["dest_path"].endswith("beta.bin") for r in mf.rows()),
                 "the download to start", proc=downloader, seconds=15)
        db = open_state(mf.state_db)
        gamma = db.create_download("https://example.com/gamma.bin?token=TOPSECRET123",
                                   str(mf.dest / "gamma.bin"),
                                   size=5 * MiB, status=FAILED, error="HTTP 404 from example.com")
        db.close()

        tui = tmux(mf.command("tui"))
        screen = tui.wait_for(lambda s: all(n in s for n in ("alpha.bin", "beta.bin", "gamma.bin")),
                              what="rows")
        assert "running" in screen and "complete" in screen and "failed" in screen
        assert "ID" in screen and "STATUS" in screen

        held.release()  # the other process finishes; the next polls show it
        tui.wait_for(lambda s: "running" not in s.split("\n", 1)[1] and "0 running" in s,
                     what="beta finished")

        tui.type("/")
        tui.wait_text("Enter applies")
        tui.type("gamma")
        tui.send("Enter")
        screen = tui.wait_for(lambda s: "beta.bin" not in s and "alpha.bin" not in s, what="filter narrows")
        assert "gamma.bin" in screen and "filter:'gamma'" in screen

        tui.send("d")
        screen = tui.wait_text(f"Download {gamma.id}: gamma.bin")
        assert "HTTP 404 from example.com" in screen and "token=***" in screen and "TOPSECRET" not in screen
        assert str(mf.dest / "gamma.bin") in screen
        tui.send("Escape")
        tui.wait_for(lambda s: f"Download {gamma.id}" not in s, what="details closed")

        tui.type("/")
        tui.send("Escape")  # clears the filter
        tui.wait_for(lambda s: "alpha.bin" in s and "beta.bin" in s, what="filter cleared")
        tui.type("?")
        tui.wait_text("filter by substring")
        tui.type("x")
        tui.wait_text("STATUS")
        tui.type("s")
        tui.wait_text("sort:name")
        tui.type("c")
        tui.wait_for(lambda s: "alpha.bin" not in s and "gamma.bin" in s, what="completed hidden")
        tui.type("c")
        tui.wait_text("alpha.bin")
        tui.type("j")
        tui.send("Down")
        tui.type("k")
        tui.send("Up")
        tui.send("Enter")
        tui.wait_text("Download ")
        tui.type("r")
        tui.type("q")
        assert tui.exit_status() == 0
    finally:
        held.release()
        downloader.kill()
        downloader.wait(timeout=10)


def test_tiny_terminal_resize_and_missing_db(mf, tmux) -> None:
    tui = tmux(mf.command("tui"), width=40, height=10)
    screen = tui.wait_text("no state database")  # nothing downloaded yet: says so, keeps polling
    assert len(screen.splitlines()[0]) <= 40
    db = open_state(mf.state_db)
    db.create_download("https://example.com/a-model-with-a-long-name.safetensors", str(mf.dest / "x.st"),
                       size=10)
    db.close()
    tui.wait_text("1 downloads")
    for key in ["j", "k", "d", "Escape", "?", "x", "s", "c", "/", "Escape"]:
        tui.send(key)
    tui.resize(20, 5)
    tui.wait_for(lambda s: bool(s.strip()), what="redraw at 20x5")
    tui.resize(100, 30)
    tui.wait_text("STATUS")
    tui.type("q")
    assert tui.exit_status() == 0


def test_ctrl_c_exits_cleanly(mf, tmux) -> None:
    tui = tmux(mf.command("tui"), width=60, height=12)
    tui.wait_text("no state database")
    tui.send("C-c")
    assert tui.exit_status() == 0
