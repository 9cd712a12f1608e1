"""Black-box regressions of the CLI surface: bad config values, bad arguments, broken state and sidecar files,
signals.  Each case ran the installed command and ended in an internal error, a traceback, a hang or a
silently changed meaning; now it ends with exit 0 or one ``modfetch: error:`` line (exit 2 for usage/config,
1 for failures)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch, assert_clean_error, wait_for
from tests.helpers import write_lora
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]


def _clean(done: object, code: int, *needles: str) -> str:
    """Exit ``code`` with exactly one error line (no traceback, no 'internal error') holding ``needles``."""
    stderr = getattr(done, "stderr", "")
    returncode = getattr(done, "returncode", getattr(done, "exit_code", None))
    assert returncode == code, stderr
    line = assert_clean_error(stderr, *needles)
    assert "internal error" not in line
    return line


# -- config values that crashed, hung or were accepted with a changed meaning --------------------------------
BAD_CONFIG_VALUES = {
    "inf-timeout": ("network: {timeout_seconds: .inf}\n", "network.timeout_seconds"),
    "nan-timeout": ("network: {timeout_seconds: .nan}\n", "network.timeout_seconds"),
    "huge-timeout": ("network: {timeout_seconds: 1.0e+10}\n", "network.timeout_seconds"),
    "huge-chunks": ("concurrency: {per_file_chunks: 1000000000}\n", "concurrency.per_file_chunks"),
    "zero-chunks": ("concurrency: {per_file_chunks: 0}\n", "concurrency.per_file_chunks"),
    "huge-backoff": ("concurrency: {backoff_max_ms: 100000000000000000000}\n", "concurrency.backoff_max_ms"),
    "ua-crlf": ('network: {user_agent: "a\\r\\nX-Evil: 1"}\n', "network.user_agent"),
    "ua-non-latin": ("network: {user_agent: 'модфетч'}\n", "network.user_agent"),
    "nul-data-root": ('general: {data_root: "a\\0b"}\n', "general.data_root"),
    "nul-token-env": ('sources: {huggingface: {token_env: "A\\0B"}}\n', "sources.huggingface.token_env"),
    "duplicate-key": ("general: {download_root: /a}\ngeneral: {download_root: /b}\n", "duplicate key"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIG_VALUES))
def test_bad_config_values_are_config_errors(mf: Modfetch, name: str) -> None:
    text, needle = BAD_CONFIG_VALUES[name]
    mf.config_path.write_text(text, encoding="utf-8")
    # A download (not just status) is what crashed: validation must happen before any network use.
    _clean(mf.cli("download", "--quiet", "--url", "http://127.0.0.1:9/x.bin"), 2, needle, str(mf.config_path))


def test_config_bounds_keep_ordinary_values(mf: Modfetch) -> None:
    mf.config_path.write_text("network: {timeout_seconds: 0.5, user_agent: 'café/1.0 (x)'}\n"
                              "concurrency: {per_file_chunks: 64, backoff_max_ms: 600000}\n", encoding="utf-8")
    assert mf.cli("status").exit_code == 0


# -- command-line arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["download", "--concurrency", "0", "http://127.0.0.1:9/x"],
    ["download", "--type", "nope", "http://127.0.0.1:9/x"],
    ["--log-level", "bogus", "status"],
    ["status", "--source", "x"],
    ["bogus"],
    ["place", "/nonexistent/file.bin"],
    ["tui", "--interval", "0"],
])
def test_click_usage_errors_use_the_one_error_format(mf: Modfetch, args: list[str]) -> None:
    done = mf.run(*args)
    line = _clean(done, 2)
    assert "Usage:" not in done.stderr, done.stderr
    assert line.count("modfetch: error:") == 1


def test_click_usage_error_with_json_is_one_json_line(mf: Modfetch) -> None:
    done = mf.run("status", "--json", "--source", "x")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    payload = json.loads(lines[0])
    assert payload["level"] == "error" and payload["exit_code"] == 2 and "--source" in payload["msg"]


@pytest.mark.parametrize("size", ["1" + "0" * 400, "1" + "0" * 400 + "G"])
def test_absurd_chunk_size_is_a_usage_error(mf: Modfetch, size: str) -> None:
    _clean(mf.cli("download", "--chunk-size", size, "http://127.0.0.1:9/x"), 2, "size")


@pytest.mark.parametrize("command", ["status", "verify"])
def test_huge_numeric_id_is_a_usage_error(mf: Modfetch, command: str) -> None:
    _clean(mf.cli(command, str(10**30)), 2, "no download")


def test_dest_in_a_symlink_loop_is_a_clean_error(mf: Modfetch, faulty_server: Serve, tmp_path: Path) -> None:
    server = faulty_server(size=64 << 10)
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    done = mf.cli("download", "--quiet", "--dest", str(tmp_path / "loop1"), server.url)
    assert done.exit_code in (1, 2)
    _clean(done, done.exit_code, "loop1")


# -- batch files ---------------------------------------------------------------------------------------------
def test_batch_duplicate_key_in_a_job_is_rejected(mf: Modfetch, tmp_path: Path) -> None:
    batch = tmp_path / "jobs.yml"
    batch.write_text("jobs:\n  - {uri: 'http://127.0.0.1:9/a', uri: 'http://127.0.0.1:9/b'}\n")
    _clean(mf.cli("download", "--batch", str(batch)), 2, "duplicate key", "uri")


def test_batch_jobs_writing_the_same_file_are_rejected_up_front(mf: Modfetch, faulty_server: Serve,
                                                                tmp_path: Path) -> None:
    server = faulty_server(size=64 << 10)
    batch = tmp_path / "jobs.yml"
    batch.write_text(f"jobs:\n  - {{uri: '{server.url}', dest: {tmp_path}/d}}\n"
                     f"  - {{uri: '{server.url}', dest: {tmp_path}/d}}\n")
    _clean(mf.cli("download", "--batch", str(batch)), 2, "jobs[1]", "jobs[0]")
    assert not server.requests  # validated before anything was fetched


def test_sigint_stops_a_batch(mf: Modfetch, faulty_server: Serve, tmp_path: Path) -> None:
    """Regression: Ctrl-C during a batch was swallowed and the jobs ran to the end (minutes)."""
    server = faulty_server(size=32 * MiB, rate=128 << 10)
    batch = tmp_path / "jobs.yml"
    batch.write_text("".join(f"  - {{uri: '{server.url}', dest: {tmp_path}/d{i}}}\n" for i in range(3)).join(
        ["jobs:\n", ""]))
    proc = mf.popen("download", "--quiet", "--batch", str(batch))
    wait_for(lambda: any(r["status"] == "running" and r["bytes_done"] for r in mf.rows()),
             "the batch to start downloading", proc=proc, seconds=20)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr


def test_sigint_while_the_engine_module_is_half_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a signal during start-up met ``modfetch.engine.download`` without POLLING yet
    (AttributeError, reported as an internal error) instead of interrupting."""
    import modfetch.cli as cli_module

    monkeypatch.setitem(sys.modules, "modfetch.engine.download", types.ModuleType("modfetch.engine.download"))
    cli_module._STOPPING.clear()
    try:
        with pytest.raises(KeyboardInterrupt):
            cli_module._terminate(signal.SIGINT, None)
    finally:
        cli_module._STOPPING.clear()


def test_stdout_on_a_full_device_is_one_error_line(mf: Modfetch) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    for args in (["--version"], ["status"]):
        with open("/dev/full", "w") as full:
            done = __import__("subprocess").run(mf.command(*args), stdout=full, stderr=-1, text=True,
                                                timeout=30, env=os.environ.copy(), check=False)
        _clean(done, 1, "No space left")


# -- state database ------------------------------------------------------------------------------------------
def _download_one(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=64 << 10)
    assert mf.download(server.url).exit_code == 0


@pytest.mark.parametrize("damage", ["no-tables", "malformed-pages"])
def test_damaged_state_db_is_a_state_error(mf: Modfetch, faulty_server: Serve, damage: str) -> None:
    _download_one(mf, faulty_server)
    conn = sqlite3.connect(mf.state_db)
    if damage == "no-tables":
        for table in ("placements", "chunks", "counters", "downloads"):
            conn.execute(f"DROP TABLE {table}")
        conn.commit()
    else:
        for i in range(200):  # enough rows for several pages, so damage past page 1 hits data pages
            conn.execute("INSERT INTO counters (name, source, value) VALUES (?, ?, 1)", (f"n{i}", "x" * 200))
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    if damage == "malformed-pages":
        size = mf.state_db.stat().st_size
        with open(mf.state_db, "r+b") as handle:
            handle.seek(4096)
            handle.write(b"\xa5" * (size - 4096))
    for args in (["status"], ["verify", "--all"], ["status", "1"]):
        _clean(mf.run(*args), 1, "state database")


def test_unparsable_meta_in_a_row_does_not_crash_status(mf: Modfetch, faulty_server: Serve) -> None:
    _download_one(mf, faulty_server)
    conn = sqlite3.connect(mf.state_db)
    conn.execute("UPDATE downloads SET meta = '{not json'")
    conn.commit()
    conn.close()
    assert mf.cli("status").exit_code == 0
    assert mf.cli("verify", "--all").exit_code == 0


def test_non_utf8_text_in_a_row_is_shown_not_called_damage(mf: Modfetch, faulty_server: Serve) -> None:
    """One hand-edited TEXT value that is not UTF-8 used to make every command say the whole DB 'is damaged'
    (with 'move state.db aside' as the hint, which throws away all resumable state) and echoed its bytes, an
    escape sequence included, into the terminal."""
    _download_one(mf, faulty_server)
    conn = sqlite3.connect(mf.state_db)
    conn.execute("UPDATE downloads SET error = CAST(X'1b5b324a6261641b5d303b7469746c6507ff' AS TEXT), "
                 "status = 'failed'")
    conn.commit()
    conn.close()
    table = mf.run("status")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout + table.stderr and "\x07" not in table.stdout + table.stderr
    shown = mf.run("status", "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert row["error"].endswith("bad\x1b]0;title\x07\ufffd"), row["error"]  # data kept, bad byte marked
    assert mf.run("verify", "--all").returncode == 0


# -- verify of files with a sidecar --------------------------------------------------------------------------
@pytest.mark.parametrize("sidecar", [b"", b"\xff\xfe\x00", b"zz  x.bin\n", b"   \n"])
def test_malformed_sidecar_is_a_clean_error(mf: Modfetch, tmp_path: Path, sidecar: bytes) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"abc")
    (tmp_path / "x.bin.sha256").write_bytes(sidecar)
    _clean(mf.cli("verify", str(target)), 2, "x.bin.sha256")


def test_verify_of_a_fifo_does_not_hang(mf: Modfetch, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.bin"
    os.mkfifo(fifo)
    (tmp_path / "pipe.bin.sha256").write_text("a" * 64 + "  pipe.bin\n")
    _clean(mf.run("verify", str(fifo), timeout=20), 2, "regular file")


# -- placement -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dry_run", [False, True])
def test_one_broken_app_folder_fails_only_its_target(mf: Modfetch, tmp_path: Path, dry_run: bool) -> None:
    """Regression: a file where an app's folder should be (ENOTDIR) aborted the whole place command, so the
    other apps were not placed either (and --dry-run crashed)."""
    comfy, a1111 = tmp_path / "ComfyUI", tmp_path / "a1111"
    comfy.mkdir()
    (a1111 / "models").mkdir(parents=True)
    (a1111 / "models" / "Lora").write_text("not a folder")
    mf.write_config(placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)},
                                        "a1111": {"preset": "a1111", "base": str(a1111)}}})
    source = write_lora(tmp_path / "lora.safetensors")
    done = mf.cli("place", *(["--dry-run"] if dry_run else []), str(source))
    _clean(done, 1, "a1111", "is not a folder")
    if dry_run:
        assert "would-place" in done.stdout and not (comfy / "models").exists()
    else:
        assert (comfy / "models" / "loras" / "lora.safetensors").resolve() == source.resolve()
    assert (a1111 / "models" / "Lora").read_text() == "not a folder"


def test_sigint_with_json_logs_keeps_stderr_json(mf: Modfetch, faulty_server: Serve) -> None:
    """Regression: the 'interrupted' line was plain text even with --json."""
    server = faulty_server(size=32 * MiB, rate=128 << 10)
    proc = mf.popen("--json", "download", "--quiet", "--dest", str(mf.dest), server.url)
    wait_for(lambda: any(r["status"] == "running" and r["bytes_done"] for r in mf.rows()),
             "the download to start", proc=proc, seconds=20)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    records = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert records[-1]["exit_code"] == 130 and "interrupted" in records[-1]["msg"]
