"""``modfetch download --pick``: the curses-menu picker in tmux, and the one-line error without a terminal.

No resolver in this tree is ambiguous on its own yet, so a small driver wraps ``download_uri`` to raise
``AmbiguousChoiceError`` for ``civitai://model/1`` (as the CivitAI resolver does for a model with several
files); everything else - option parsing, the menu, the re-run with the chosen URI, the real download - is
real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch.cli.picker import candidate_line, with_picker
from modfetch.errors import AmbiguousChoiceError, Candidate, UsageError
from tests.conftest import ROOT
from tests.e2e.tmux import Tmux

MiB = 1 << 20
DRIVER = """
import sys
from modfetch.cli import download as cli_download, main
from modfetch.errors import AmbiguousChoiceError, Candidate

real = cli_download.download_uri
base = sys.argv[1]

def ambiguous(config, uri, *args, **kwargs):
    if uri == "civitai://model/1":
        raise AmbiguousChoiceError("civitai://model/1 has several files", [
            Candidate("alpha.safetensors (Model, fp16)", base + "/alpha.safetensors", 2 * 1024 * 1024,
                      "SafeTensor"),
            Candidate("beta.gguf (Model, Q4)", base + "/beta.gguf", 1024 * 1024, "GGUF"),
        ], hint="pass --pick on a terminal, or one of the listed URIs")
    return real(config, uri, *args, **kwargs)

cli_download.download_uri = ambiguous
main(sys.argv[2:])
"""


@pytest.fixture
def driver(tmp_path: Path, mf, faulty_server) -> Iterator[tuple[list[str], Path]]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    server = faulty_server(size=MiB)
    argv = [sys.executable, str(script), server.base, "--quiet", "download", "--pick", "civitai://model/1",
            "--dest", str(mf.dest)]
    yield argv, mf.dest


def _env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(ROOT)
    return env


def test_menu_lists_candidates_and_downloads_the_chosen_one(driver, tmp_path: Path) -> None:
    argv, dest = driver
    session = Tmux(tmp_path, 100, 20).run(argv, env=_env())
    try:
        screen = session.wait_text("beta.gguf")
        assert "alpha.safetensors (Model, fp16)  2.0 MiB  SafeTensor" in screen
        assert "beta.gguf (Model, Q4)  1.0 MiB  GGUF" in screen and "Exit" in screen
        session.send("Down")
        session.send("Enter")
        assert session.exit_status(timeout=30) == 0
        assert (dest / "beta.gguf").stat().st_size == MiB
        assert not (dest / "alpha.safetensors").exists()
    finally:
        session.kill()


def test_menu_cancel_is_a_usage_error(driver, tmp_path: Path) -> None:
    argv, dest = driver
    session = Tmux(tmp_path, 100, 20).run(argv, env=_env())
    try:
        session.wait_text("beta.gguf")
        session.send("q")  # moves to Exit
        session.send("Enter")
        assert session.exit_status(timeout=30) == 2
        assert not dest.exists() or not any(dest.iterdir())
    finally:
        session.kill()


def test_without_a_terminal_the_ambiguity_is_one_clear_line(driver) -> None:
    argv, _dest = driver
    for args in (argv, [a for a in argv if a != "--pick"]):
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, env=_env(),
                                stdin=subprocess.DEVNULL, check=False)
        assert result.returncode == 2
        errors = [line for line in result.stderr.splitlines() if line.startswith("modfetch: error:")]
        assert len(errors) == 1, result.stderr
        assert "alpha.safetensors" in errors[0] and "beta.gguf" in errors[0], result.stderr
        assert "Traceback" not in result.stderr
    assert "--pick needs a terminal" in result.stderr or "hint:" in result.stderr


def test_with_picker_logic_without_curses(monkeypatch: pytest.MonkeyPatch) -> None:
    cands = [Candidate("a", "u://a", 10, "GGUF"), Candidate("b", "u://b")]
    calls: list[str] = []

    def run(uri: str) -> str:
        calls.append(uri)
        if uri == "u://model":
            raise AmbiguousChoiceError("ambiguous", cands)
        return uri

    monkeypatch.setattr("modfetch.cli.picker.can_pick", lambda: True)
    assert with_picker(run, "u://model", pick=True, chooser=lambda c: c[1]) == "u://b"
    assert calls == ["u://model", "u://b"]
    with pytest.raises(AmbiguousChoiceError):
        with_picker(run, "u://model", pick=False, chooser=lambda c: c[0])
    with pytest.raises(UsageError, match="nothing chosen"):
        with_picker(run, "u://model", pick=True, chooser=lambda c: None)
    monkeypatch.setattr("modfetch.cli.picker.can_pick", lambda: False)
    with pytest.raises(AmbiguousChoiceError) as info:
        with_picker(run, "u://model", pick=True, chooser=lambda c: c[0])
    assert "terminal" in (info.value.hint or "")
    assert candidate_line(cands[0]) == "a  10 B  GGUF"
    assert candidate_line(Candidate("x" * 50, "u"), width=10) == "xxxxxxx..."


def test_real_civitai_ambiguity_picked_in_tmux(mf, tmp_path: Path) -> None:
    """The real CivitAI resolver against the look-alike API: three files match, the menu picks the second."""
    from tests.servers.lookalike.civitai import CivitaiLookalike

    with CivitaiLookalike() as civ:
        mf.write_config(general={"download_root": str(mf.dest), "data_root": str(mf.state_db.parent)},
                        sources={"civitai": {"endpoint": civ.url}})
        argv = mf.command("--quiet", "download", "--pick", "civitai://model/4201?file=realistic",
                          "--dest", str(mf.dest))
        session = Tmux(tmp_path, 120, 20).run(argv, env=os.environ.copy())
        try:
            screen = session.wait_text("realisticVision_v60B1_vae.safetensors")
            assert "realisticVision_v60B1_fp32.safetensors" in screen and "SafeTensor" in screen
            session.type("2")  # curses-menu: a digit jumps to that item
            session.send("Enter")
            assert session.exit_status(timeout=30) == 0
        finally:
            session.kill()
    assert [p.name for p in mf.dest.rglob("*.safetensors")] == ["realisticVision_v60B1_fp32.safetensors"]
