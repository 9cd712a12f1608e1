"""Issue 16 item 1 (+ the counters of item 2): every attempt leaves a row with its error class, also one that
failed before its first byte; a later success supersedes it; an interrupt is counted apart from failures.

Black-box through the installed ``modfetch`` against real local servers (faulty server, Hub and CivitAI
look-alikes, a port nobody listens on)."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modfetch import errors
from modfetch.failures import status_label
from modfetch.state import FAILED, SCHEMA_VERSION, DownloadRow, open_state
from modfetch.state.schema import MIGRATIONS
from tests.conftest import MiB, Modfetch, wait_for
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.civitai import CivitaiLookalike
from tests.servers.lookalike.hub import GOOD_TOKEN, HubLookalike


def dead_url() -> str:
    """An http URL on 127.0.0.1 whose port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.safetensors"


def setup(mf: Modfetch, hub: HubLookalike, civitai: CivitaiLookalike) -> Path:
    prom = mf.home / "prom" / "modfetch.prom"
    mf.write_config(sources={"huggingface": {"endpoint": hub.url}, "civitai": {"endpoint": civitai.url}},
                    metrics={"prometheus_textfile": {"enabled": True, "path": str(prom)}})
    return prom


def samples(prom: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(prom.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def failed(prom: Path, source: str, reason: str) -> float:
    return samples(prom)[("modfetch_downloads_failed_total", (("reason", reason), ("source", source)))]


def interrupted(prom: Path, source: str) -> float:
    return samples(prom)[("modfetch_downloads_interrupted_total", (("source", source),))]


def test_cron_failures_before_the_first_byte_each_leave_a_classified_row_and_count(
        mf: Modfetch, faulty_server: type[FaultyServer], hub: HubLookalike, civitai: CivitaiLookalike) -> None:
    prom = setup(mf, hub, civitai)
    gone = faulty_server(size=MiB, error_status=404, error_times=None, include_probe=True)
    cases = [
        (gone.url_for("/gone.safetensors"), "not_found", "http"),
        ("hf://acme/gated-model/model.safetensors", "gated", "huggingface"),
        (dead_url(), "unreachable", "http"),
        ("civitai://model/5500", "auth", "civitai"),
    ]
    for uri, reason, source in cases:
        before = failed(prom, source, reason) if prom.exists() else 0.0
        done = mf.run("download", "--quiet", "--dest", str(mf.dest), uri)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        # The textfile was rewritten by this very run, and its failure counted with its class.
        assert failed(prom, source, reason) == before + 1, (uri, prom.read_text())
    rows = mf.status()
    assert len(rows) == len(cases)
    by_class = {row["error_class"]: row for row in rows}
    assert set(by_class) == {reason for _uri, reason, _source in cases}
    for row in rows:
        assert row["status"] == FAILED and row["error"] and row["bytes_done"] == 0
    # Resolver failures have no target yet: they are keyed by the URI.
    assert by_class["gated"]["path"] == "hf://acme/gated-model/model.safetensors"
    assert by_class["auth"]["path"] == "civitai://model/5500"
    assert by_class["not_found"]["path"] == str(mf.dest / "gone.safetensors")
    assert not (mf.dest / "gone.safetensors").exists()
    assert samples(prom)[("modfetch_last_failure_timestamp_seconds", ())] > 0
    table = mf.run("status")
    assert "failures:" in table.stdout and "gated" in table.stdout and "not_found" in table.stdout
    assert "unreachable" in table.stdout


def test_a_later_success_supersedes_the_failed_row(mf: Modfetch, faulty_server: type[FaultyServer],
                                                   hub: HubLookalike, civitai: CivitaiLookalike,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    setup(mf, hub, civitai)
    server = faulty_server(size=MiB, error_status=404, error_times=None, include_probe=True)
    assert mf.run("download", "--quiet", "--dest", str(mf.dest), server.url).returncode == 1
    assert [r["status"] for r in mf.status()] == [FAILED]
    server.configure(error_status=None)
    assert mf.run("download", "--quiet", "--dest", str(mf.dest), server.url).returncode == 0
    rows = mf.status()
    assert [(r["status"], r["error_class"], r["error"]) for r in rows] == [("complete", None, None)]

    uri = "hf://acme/gated-model/model.safetensors"
    assert mf.run("download", "--quiet", "--dest", str(mf.dest), uri).returncode == 1
    assert any(r["path"] == uri and r["status"] == FAILED for r in mf.status())
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    done = mf.run("download", "--quiet", "--dest", str(mf.dest), uri)
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in mf.status()] == ["complete", "complete"]


def test_a_finished_file_is_not_marked_failed_by_a_rerun_that_cannot_start(
        mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    server = faulty_server(size=MiB)
    assert mf.run("download", "--quiet", "--dest", str(mf.dest), server.url).returncode == 0
    server.configure(error_status=404, error_times=None, include_probe=True, head_status=404)
    assert mf.run("download", "--quiet", "--dest", str(mf.dest), server.url).returncode == 1
    rows = {r["path"]: r for r in mf.status()}
    assert rows[str(mf.dest / "file.bin")]["status"] == "complete"
    assert rows[server.url]["status"] == FAILED and rows[server.url]["error_class"] == "not_found"
    assert (mf.dest / "file.bin").stat().st_size == MiB


def test_sigterm_counts_an_interrupt_not_a_failure(mf: Modfetch, faulty_server: type[FaultyServer],
                                                   hub: HubLookalike, civitai: CivitaiLookalike) -> None:
    prom = setup(mf, hub, civitai)
    server = faulty_server(size=4 * MiB, hold=True)
    proc = mf.popen("download", "--quiet", "--dest", str(mf.dest), server.url)
    try:
        wait_for(lambda: any(r["status"] == "running" for r in mf.rows()), "a running row", proc)
        wait_for(lambda: len(server.data_requests()) > 1, "ranged requests", proc)
        proc.send_signal(signal.SIGTERM)
        server.release()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert interrupted(prom, "http") == 1
    assert sum(v for (name, _l), v in samples(prom).items() if name == "modfetch_downloads_failed_total") == 0
    assert [r["status"] for r in mf.rows()] == ["interrupted"]


ERRORS: list[tuple[BaseException, str]] = [
    (errors.NotFoundError("x", 404), "not_found"),
    (errors.HTTPStatusError("x", 410), "not_found"),
    (errors.AuthError("x", 401), "auth"),
    (errors.HTTPStatusError("x", 403), "auth"),
    (errors.GatedError("x", 403), "gated"),
    (errors.NetworkError("x"), "unreachable"),
    (errors.TLSError("x"), "tls"),
    (errors.HTTPStatusError("x", 502), "server"),
    (errors.ProtocolViolation("x"), "server"),
    (errors.RemoteChangedError("x"), "server"),
    (errors.IntegrityError("x"), "integrity"),
    (errors.DiskError("x"), "disk"),
    (OSError(28, "No space left on device"), "disk"),
    (errors.TargetExistsError("x"), "other"),
    (ValueError("bug"), "other"),
]


@pytest.mark.parametrize(("error", "expected"), ERRORS, ids=[f"{type(e).__name__}-{c}" for e, c in ERRORS])
def test_error_class_is_derived_in_one_place(error: BaseException, expected: str) -> None:
    assert errors.error_class(error) == expected
    assert expected in errors.ERROR_CLASSES


def test_status_label_names_the_class_of_failures_only() -> None:
    assert status_label(DownloadRow(1, "u", "/p", status=FAILED, error_class="gated")) == "failed:gated"
    assert status_label(DownloadRow(1, "u", "/p", status="complete", error_class=None)) == "complete"
    assert status_label(DownloadRow(1, "u", "/p", status=FAILED, error_class="unreachable"), compact=True) \
        == "unreachable"
    assert all(len(name) <= 11 for name in errors.ERROR_CLASSES)  # the TUI's STATUS cell


def test_schema_1_database_migrates_and_old_failure_counters_gain_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    MIGRATIONS[0](conn)  # a real schema-1 database, as modfetch 1 left it
    conn.execute("INSERT INTO counters (name, labels, value) VALUES ('downloads_failed', 'source=\"http\"', 3)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    db = open_state(path)
    try:
        assert int(db.conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION == 4
        assert db.counters() == {("downloads_failed", "http", "other"): 3.0}
        row = db.create_download("u", "/x", status=FAILED, error_class="disk")
        assert row.error_class == "disk"
    finally:
        db.close()


def test_status_json_carries_the_error_class(mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    server = faulty_server(size=MiB, error_status=403, error_times=None, include_probe=True)
    done = mf.cli("download", "--json", "--dest", str(mf.dest), server.url)
    assert done.exit_code == 1
    (row,) = mf.status()
    assert row["error_class"] == "auth" and "403" in row["error"]
    assert json.loads(done.stderr.strip().splitlines()[-1])["level"] == "error"


def test_the_tui_shows_the_class_in_the_table_and_the_details() -> None:
    from modfetch.tui.model import Item
    from modfetch.tui.render import details_lines, table_lines

    row = DownloadRow(3, "hf://acme/gated-model/model.safetensors", "hf://acme/gated-model/model.safetensors",
                      status=FAILED, error="acme/gated-model is a gated repository", error_class="gated",
                      source="huggingface", updated_at=1.0)
    _header, lines = table_lines([Item(row, 0)], 160, 2.0)
    assert " gated " in lines[0] and " failed" not in lines[0]
    assert any("[gated] acme/gated-model is a gated repository" in line for line in details_lines(Item(row, 0),
                                                                                                   160, 2.0))
