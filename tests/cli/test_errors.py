"""CLI error contract: exit 0 ok / 1 download or verify failure / 2 usage or config error; every error one
clear line (plus a hint), no traceback unless --log-level debug.  In-process (CliRunner) and as real
processes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch, assert_clean_error
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]

BAD_URLS = ["notaurl", "ftp://x", "http://", "https://", "http:///path", "http://host:0/x",
            "http://exa mple.com/x", "http://[::1/x", "file:///etc/passwd", "", "   "]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_urls_exit_2_in_process(mf: Modfetch, url: str) -> None:
    result = mf.download(url)
    assert result.exit_code == 2, result.output
    assert_clean_error(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize("url", ["notaurl", "ftp://x", "http://"])
def test_bad_urls_exit_2_as_a_process(mf: Modfetch, url: str) -> None:
    done = mf.run("download", "--url", url)
    assert done.returncode == 2
    line = assert_clean_error(done.stderr)
    assert url in line
    assert done.stdout == ""


def test_bad_url_among_good_ones_stops_with_2(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    result = mf.cli("download", "--quiet", "--dest", str(mf.dest), "--url", "notaurl", server.url)
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "notaurl")


CONFIGS = {
    "malformed": ("general: {download_root: [unclosed\n", ["invalid YAML"]),
    "unknown-top": ("genral: {}\n", ["genral", "unknown key"]),
    "unknown-nested": ("network: {timeout: 3}\n", ["network.timeout", "unknown key"]),
    "secret": ("sources: {huggingface: {token: hf_abcdefgh}}\n", ["secret"]),
    "api-key": ("api_key: abc\n", ["secret"]),
    "wrong-type": ("concurrency: {per_file_chunks: many}\n", ["concurrency.per_file_chunks"]),
    "not-a-mapping": ("[1, 2]\n", ["mapping"]),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bad_config_in_xdg_location_exits_2(mf: Modfetch, name: str) -> None:
    text, needles = CONFIGS[name]
    mf.config_path.write_text(text)
    for args in (["download", "--url", "http://127.0.0.1:9/x"], ["status"], ["verify", "--all"]):
        result = mf.cli(*args)
        assert result.exit_code == 2, (args, result.output)
        line = assert_clean_error(result.stderr, *needles)
        assert str(mf.config_path) in line
    if name == "secret":
        assert "hf_abcdefgh" not in result.stderr
        assert "environment" in result.stderr  # the hint says where secrets go


@pytest.mark.parametrize("name", ["malformed", "unknown-top", "secret"])
def test_bad_config_as_a_process_exits_2(mf: Modfetch, tmp_path: Path, name: str) -> None:
    text, needles = CONFIGS[name]
    path = tmp_path / "bad.yml"
    path.write_text(text)
    done = mf.run("--config", str(path), "status")
    assert done.returncode == 2
    assert_clean_error(done.stderr, str(path), *needles)
    done = mf.run("status", "--config", str(path))  # global option after the subcommand
    assert done.returncode == 2
    assert_clean_error(done.stderr, str(path))


def test_modfetch_config_env_var_is_used(mf: Modfetch, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.yml"
    path.write_text("bogus: 1\n")
    monkeypatch.setenv("MODFETCH_CONFIG", str(path))
    result = mf.cli("status")
    assert result.exit_code == 2
    assert_clean_error(result.stderr, str(path), "bogus")


def test_missing_explicit_config_exits_2(mf: Modfetch, tmp_path: Path) -> None:
    result = mf.cli("--config", str(tmp_path / "nope.yml"), "status")
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "not found")


def test_no_config_file_at_all_works(mf: Modfetch, faulty_server: Serve) -> None:
    mf.config_path.unlink()
    server = faulty_server(size=MiB)
    out = mf.download_json(server.url)
    assert out["sha256"] == server.sha256()
    assert mf.state_db.exists()  # XDG_DATA_HOME/modfetch/state.db


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["download"], "nothing to download"),
        (["download", "--url", "http://h/x", "--sha256", "abc"], "64 hex"),
        (["download", "--url", "http://h/x", "--sha256", "g" * 64], "64 hex"),
        (["download", "--url", "http://h/x", "--chunk-size", "lots"], "invalid size"),
        (["download", "--url", "http://h/a", "--url", "http://h/b", "--out", "x"], "--out"),
        (["verify"], "say what to verify"),
        (["status", "999"], "no download with id 999"),
        (["status", "/no/such/file"], "no download matches"),
    ],
)
def test_usage_errors_exit_2_with_one_line(mf: Modfetch, args: list[str], needle: str) -> None:
    result = mf.cli(*args)
    assert result.exit_code == 2, result.output
    assert_clean_error(result.stderr, needle)


@pytest.mark.parametrize("args", [["download", "--concurrency", "0", "--url", "http://h/x"],
                                  ["download", "--nope"], ["no-such-command"],
                                  ["--log-level", "loud", "status"]])
def test_click_usage_errors_exit_2(mf: Modfetch, args: list[str]) -> None:
    result = mf.cli(*args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_sha256_mismatch_is_exit_1_and_leaves_nothing(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=2 * MiB)
    wrong = "0" * 64
    result = mf.download(server.url, "--sha256", wrong)
    assert result.exit_code == 1
    line = assert_clean_error(result.stderr, "SHA-256 mismatch", wrong, server.sha256())
    assert "file.bin" in line
    assert not (mf.dest / "file.bin").exists()
    assert not (mf.dest / "file.bin.part").exists()
    assert not (mf.dest / "file.bin.sha256").exists()
    row = mf.status()[0]
    assert row["status"] == "mismatch" and row["expected_sha256"] == wrong


def test_sha256_is_case_insensitive(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    out = mf.download_json(server.url, "--sha256", server.sha256().upper())
    assert out["sha256"] == server.sha256()


def test_sha256_mismatch_as_a_process(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    done = mf.run("download", "--url", server.url, "--dest", str(mf.dest), "--sha256", "f" * 64)
    assert done.returncode == 1
    assert_clean_error(done.stderr, "SHA-256 mismatch")
    assert done.stdout == ""


def test_debug_log_level_shows_the_traceback(mf: Modfetch) -> None:
    result = mf.cli("download", "--log-level", "debug", "--url", "ftp://x")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("modfetch: error:")]) == 1


def test_json_mode_errors_are_json_lines(mf: Modfetch) -> None:
    result = mf.cli("download", "--json", "--url", "notaurl")
    assert result.exit_code == 2
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    errors = [obj for obj in lines if obj.get("level") == "error" and "exit_code" in obj]
    assert len(errors) == 1
    assert errors[0]["exit_code"] == 2 and "notaurl" in errors[0]["msg"]


def test_http_error_messages_do_not_leak_secrets(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB, error_status=403, error_times=None, include_probe=True)
    result = mf.download(server.url + "?token=SuperSecret123&x=1")
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "403")
    assert "SuperSecret123" not in result.output
    assert all("SuperSecret123" not in (row["url"] or "") for row in mf.rows())
