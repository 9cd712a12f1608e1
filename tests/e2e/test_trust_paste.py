"""Finding 6: every command modfetch prints for the user to paste is safe to paste.

A server-chosen name (Content-Disposition, CivitAI file name, HF path, URL segment) loses the shell
metacharacters no model file needs, and every printed command line is built with ``shlex.join``.  The end-to-end
test downloads a GGUF whose Content-Disposition is hostile, places it with the Ollama preset, then really runs
the printed ``ollama create`` line through ``bash -c`` with a fake ``ollama`` that records its argv.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from modfetch.app.place import _checked_sha256
from modfetch.errors import IntegrityError, UsageError
from modfetch.state import DownloadRow, locked_error
from modfetch.util.filenames import check_plain_filename, filename_from_url, sanitize_filename, sanitize_relpath
from tests.conftest import Modfetch
from tests.helpers import write_gguf
from tests.resolvers.test_civitai import use
from tests.servers.lookalike import LookalikeServer, Request, Response, serve_bytes
from tests.servers.lookalike.civitai import CivitaiData, CivitaiLookalike

SHELL_META = set("$`;|&<>'\"\\")

HOSTILE_NAMES = [
    "tiny$(id>pwned.txt).gguf",
    "tiny`id>pwned.txt`.gguf",
    "a;touch pwned.txt;.safetensors",
    "a|tee pwned.txt.ckpt",
    "a&&touch pwned.txt&.bin",
    "a<b>c.pt",
    "it's \"quoted\".gguf",
    "..\\..\\$(reboot).gguf",
    "${IFS}x$HOME.gguf",
    "'; rm -rf ~ #.gguf",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_sanitiser_drops_every_shell_metacharacter(name: str) -> None:
    """Names from servers keep no character that means something to a shell, in any spelling they arrive."""
    for spelled in (name, f"dir/{name}", filename_from_url("http://h/x/" + name.replace("%", "%25")) or ""):
        cleaned = sanitize_filename(spelled)
        assert not SHELL_META & set(cleaned), (spelled, cleaned)
        assert cleaned and "/" not in cleaned
    rel = sanitize_relpath(f"sub$(x)/{name}")  # an HF path in a repo
    assert not SHELL_META & set(rel), rel
    # What model files are really called survives unchanged.
    for ordinary in ("model (1).safetensors", "Qwen2-0.5B-Instruct-Q4_K_M.gguf", "v1-5 pruned+ema #2.ckpt",
                     "模型.safetensors", "a@b,c=d~e.bin"):
        assert sanitize_filename(ordinary) == ordinary


@pytest.mark.parametrize("name", ["a$(id).gguf", "x;y.gguf", "it's.gguf"])
def test_typed_name_with_metacharacters_is_refused_with_a_pasteable_suggestion(name: str) -> None:
    """``--out`` with a shell metacharacter: one clear error naming them, suggesting a name safe to paste."""
    with pytest.raises(UsageError) as err:
        check_plain_filename(name, "--out")
    assert "shell metacharacters" in err.value.message
    assert err.value.hint is not None
    suggestion = err.value.hint.split("e.g. ", 1)[1].split(";", 1)[0]
    (word,) = shlex.split(suggestion)
    assert word == sanitize_filename(name) and not SHELL_META & set(word)


def _fake_ollama(bin_dir: Path) -> Path:
    """An ``ollama`` that writes its argv (NUL-separated) beside itself and does nothing else."""
    bin_dir.mkdir()
    script = bin_dir / "ollama"
    script.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {shlex.quote(str(bin_dir / "argv"))}\n')
    script.chmod(0o755)
    return bin_dir / "argv"


def _gguf_server(tmp_path: Path, disposition: str) -> LookalikeServer:
    data = write_gguf(tmp_path / "src.gguf", {"general.architecture": "llama"}).read_bytes()

    def app(request: Request) -> Response:
        return serve_bytes(request, data, etag='"gguf-1"', headers=[("Content-Disposition", disposition)])

    return LookalikeServer(app).start()


def _printed_command(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if "import with: " in line]
    return line.split("import with: ", 1)[1].rsplit(")", 1)[0]


@pytest.mark.parametrize(("disposition", "dest_name"), [
    ('attachment; filename="tiny$(id>pwned.txt).gguf"', "dl"),
    ("attachment; filename=\"tiny`touch pwned.txt`.gguf\"", "dl"),
    ("attachment; filename*=UTF-8''tiny%3Btouch%20pwned.txt%3B.gguf", "dl"),
    ('attachment; filename="tiny.gguf"', "my models 'q' \"x\" $(touch pwned.txt)"),  # the user's own --dest
])
def test_printed_ollama_command_runs_exactly_ollama_when_pasted(mf: Modfetch, tmp_path: Path, disposition: str,
                                                                dest_name: str) -> None:
    """Download + ``--place`` with the Ollama preset; the printed line pasted into bash runs only ``ollama``
    with the exact Modelfile path, and nothing else (no ``pwned.txt`` anywhere)."""
    dest = tmp_path / dest_name
    mf.write_config(placement={"apps": {"ollama": {"preset": "ollama"}}})
    server = _gguf_server(tmp_path, disposition)
    try:
        result = mf.run("download", "--url", server.url + "/model", "--dest", str(dest), "--place")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    command = _printed_command(result.stdout)
    argv_file = _fake_ollama(tmp_path / "bin")
    work = tmp_path / "paste"
    work.mkdir()
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    pasted = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    assert pasted.returncode == 0, pasted.stderr
    assert not list(tmp_path.rglob("pwned.txt")), "pasting the printed command ran server-chosen code"
    argv = argv_file.read_bytes().split(b"\0")[:-1]
    (gguf,) = [p for p in dest.iterdir() if p.suffix == ".gguf"]
    modelfile = gguf.with_suffix(".Modelfile")
    assert modelfile.is_file()
    assert [a.decode() for a in argv] == ["create", argv[1].decode(), "-f", str(modelfile)]
    assert not SHELL_META & set(gguf.name)


def test_changed_file_hint_is_a_pasteable_command(tmp_path: Path) -> None:
    """The "changed since downloaded" hint names a command that parses to exactly ``modfetch verify ID``."""
    path = tmp_path / "my 'odd' $(dir)" / "f.bin"
    path.parent.mkdir()
    path.write_bytes(b"new bytes")
    row = DownloadRow(id=7, url="http://h/f.bin", dest_path=str(path), status="complete", sha256="0" * 64)
    with pytest.raises(IntegrityError) as err:
        _checked_sha256(path, row)
    assert err.value.hint is not None
    command = err.value.hint.split("run: ", 1)[1].split(";", 1)[0]
    assert shlex.split(command) == ["modfetch", "verify", "7"]


def test_locked_state_hint_quotes_the_path() -> None:
    """The DB-locked hint's ``fuser`` command survives a data root with spaces and quotes."""
    path = Path("/srv/my models/it's $(x)/state.db")
    hint = locked_error(path).hint
    assert hint is not None
    command = hint.split("find it with: ", 1)[1].rsplit("; rerun", 1)[0]
    assert shlex.split(command) == ["fuser", "-v", str(path)]


def test_civitai_wrong_model_hint_is_one_pasteable_word(mf: Modfetch) -> None:
    """The suggested ``civitai://model/N?version=M`` is quoted: an unquoted ``?`` is a glob (zsh: no matches)."""
    with CivitaiLookalike(CivitaiData.demo()) as civ:
        use(mf, civ)
        result = mf.download("civitai://model/5500?version=130072")
    assert result.exit_code == 2, result.output
    hint = next(line for line in result.stderr.splitlines() if "hint:" in line).split("hint: use ", 1)[1]
    assert hint == "'civitai://model/4201?version=130072'"
    assert shlex.split(hint) == ["civitai://model/4201?version=130072"]
