"""Logging: JSON lines, the human format's colour rules, and redaction proven on a real debug-level run."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from modfetch import logs

SECRETS = {"HF_TOKEN": "hf_SeCrEtHfToken1234", "CIVITAI_TOKEN": "civ_SeCrEtCivitai5678"}
QUERY_SECRET = "QuErYsEcReT9876"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    yield buf
    logs.configure_logging("info", "human")  # back to the default handler on sys.stderr


def _lines(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if line]


def test_json_lines_carry_ts_level_msg_logger_and_fields(stream: io.StringIO) -> None:
    logs.configure_logging("debug", "json", stream=stream)
    log = logging.getLogger("modfetch.engine")
    log.debug("probe %s", "x")
    fields = {"download_id": 3, "chunk": 2, "bytes": 1024, "elapsed_s": 0.5, "status": "ok",
              "url": "https://h/f?token=abcdefgh", "attempt": 1}
    log.info("chunk done", extra=fields)
    log.warning("retrying")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed with Authorization: Bearer abcdef123456")
    lines = _lines(stream)
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    assert [r["level"] for r in records] == ["debug", "info", "warn", "error"]
    for r in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"])
        assert r["logger"] == "modfetch.engine"
    info = records[1]
    assert info["msg"] == "chunk done"
    assert {k: info[k] for k in ("download_id", "chunk", "bytes", "elapsed_s", "status", "attempt")} == {
        "download_id": 3, "chunk": 2, "bytes": 1024, "elapsed_s": 0.5, "status": "ok", "attempt": 1}
    assert info["url"] == "https://h/f?token=***"
    assert "boom" in records[3]["exc"] and "abcdef123456" not in lines[3]


def test_levels_filter_and_quiet(stream: io.StringIO) -> None:
    logs.configure_logging("warn", "human", stream=stream)
    logging.getLogger("modfetch.x").info("hidden")
    logging.getLogger("modfetch.x").warning("shown")
    assert [line.split(" ", 1)[1] for line in _lines(stream)] == ["WARN  x       shown"]
    stream.truncate(0)
    stream.seek(0)
    logs.configure_logging("info", "human", quiet=True, stream=stream)
    logging.getLogger("modfetch").info("quiet hides info")
    logging.getLogger("modfetch").error("but not errors")
    assert len(_lines(stream)) == 1 and "but not errors" in stream.getvalue()


def test_third_party_records_are_redacted_too(stream: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    logs.configure_logging("debug", "human", stream=stream)
    logging.getLogger("urllib3.connectionpool").debug('"GET /f?X-Amz-Signature=abc123&sig=zz HTTP/1.1" 200')
    logging.getLogger("somelib").warning("header %s", {"Authorization": f"Bearer {SECRETS['HF_TOKEN']}"})
    text = stream.getvalue()
    assert "abc123" not in text and "sig=zz" not in text and SECRETS["HF_TOKEN"] not in text
    assert "urllib3" in text and "somelib" in text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_tty_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert logs.use_colour(_Tty()) is True
    assert logs.use_colour(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert logs.use_colour(_Tty()) is False
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert logs.use_colour(_Tty()) is False
    record = logging.LogRecord("modfetch.engine", logging.ERROR, __file__, 1, "bad", (), None)
    assert "\x1b[" in logs.HumanFormatter(colour=True).format(record)
    plain = logs.HumanFormatter(colour=False).format(record)
    assert "\x1b[" not in plain and re.fullmatch(r"\d\d:\d\d:\d\d ERROR engine  bad", plain)


def _files_under(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name


@pytest.mark.parametrize("fmt", ["--json", None])
def test_debug_run_with_tokens_leaks_nothing(mf, faulty_server, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, fmt: str | None) -> None:
    """A real download at debug level, tokens in the environment and in the URL: no secret in any output or in
    any file the run wrote (state DB, metrics, checksum file, logs)."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    server = faulty_server(size=2 << 20, cut_after=50_000)  # a retry too, so error paths log the URL
    query = f"token={QUERY_SECRET}&X-Amz-Signature={QUERY_SECRET}x&hf={SECRETS['HF_TOKEN']}"
    url = server.url_for(f"/model.bin?{query}")
    args = ["--log-level", "debug", *([fmt] if fmt else []), "download", "--url", url, "--dest", str(mf.dest)]
    ok = mf.run(*args)
    assert ok.returncode == 0, ok.stderr
    failed = mf.run("--log-level", "debug", *([fmt] if fmt else []), "download", "--url",
                    server.url_for(f"/missing?token={QUERY_SECRET}").replace(str(server.port), "1"))
    assert failed.returncode != 0
    outputs = ok.stdout + ok.stderr + failed.stdout + failed.stderr
    assert "downloading model.bin" in outputs  # the run really logged at debug/info level
    assert "token=***" in outputs
    needles = [*SECRETS.values(), QUERY_SECRET]
    for needle in needles:
        assert needle not in outputs
    if fmt:
        for line in ok.stderr.splitlines() + failed.stderr.splitlines():
            json.loads(line)
    files = list(_files_under(tmp_path))
    assert any(f.name == "state.db" for f in files) and any(f.suffix == ".prom" for f in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, f"{needle} found in {path}"
