"""Batch files as a cron user runs them, black-box: the installed ``modfetch download --batch`` as a real
subprocess against the local fault-injecting server.

What cron needs: exit 0 only when every job succeeded, nothing on stdout/stderr with ``--quiet`` when all is
well (cron mails any output), the failed jobs named with a one-line reason otherwise, valid JSON lines with
``--json``, and hostile or sloppy batch files (alias bombs, unset variables, relative paths) refused quickly
with one error line naming the file, job and key.  Waits are on process exit with deadlines.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modfetch.metrics import collect
from modfetch.state import DownloadRow, StateDB
from tests.conftest import Modfetch, assert_clean_error, wait_for
from tests.servers.faulty import FaultyServer

Serve = Callable[..., FaultyServer]


def _run(mf: Modfetch, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
         stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mf.command(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env if env is not None else os.environ.copy(), input=stdin, check=False)


def _json_lines(text: str) -> list[dict[str, object]]:
    """Every line parsed as one JSON object (fails the test on any line that is not)."""
    return [json.loads(line) for line in text.splitlines()]


# -- alias bombs ---------------------------------------------------------------------------------------------
def _laughs(levels: int = 9) -> str:
    """A flow list holding every level of a "billion laughs" bomb: tiny as YAML, 9**9 strings expanded."""
    parts = ['&l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    parts += [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def test_alias_bomb_in_a_wrongly_typed_value_is_refused_quickly(mf: Modfetch, tmp_path: Path) -> None:
    """Regression: the error message for ``dest: <list>`` printed the value's repr, which expands every
    alias: a 1 KiB file hung the process (and ate memory) instead of failing."""
    batch = tmp_path / "jobs.yml"
    batch.write_text(f"jobs:\n  - uri: http://127.0.0.1:9/x.bin\n    dest: {_laughs()}\n", encoding="utf-8")
    started = time.monotonic()
    done = _run(mf, "download", "--quiet", "--batch", batch, timeout=20)
    assert done.returncode == 2, done.stderr
    line = assert_clean_error(done.stderr, "jobs[0].dest", "must be a non-empty string")
    assert len(line) < 300 and time.monotonic() - started < 10


def test_merge_key_bomb_is_refused_quickly(mf: Modfetch, tmp_path: Path) -> None:
    """Regression (PyYAML < 6.0.3 copies merged pairs without dropping repeats): ``<<: [*a, *a, ...]`` nested
    nine deep is a 10**9-pair mapping; loading it never finished."""
    lines = ["jobs:", "  - uri: http://127.0.0.1:9/x.bin",
             "    name: &m0 {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}"]
    lines += [f"  - {{uri: http://127.0.0.1:9/{i}.bin, name: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10)
              + "]}}" for i in range(1, 9)]
    batch = tmp_path / "jobs.yml"
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = _run(mf, "download", "--quiet", "--batch", batch, timeout=20)
    assert done.returncode == 2, done.stderr
    assert_clean_error(done.stderr, "jobs[0].name")


# -- output for cron -----------------------------------------------------------------------------------------
def test_quiet_batch_says_nothing_when_every_job_succeeds(mf: Modfetch, faulty_server: Serve,
                                                           tmp_path: Path) -> None:
    """Regression: ``--quiet`` still printed the whole summary table on success, so cron mailed every run."""
    server = faulty_server(size=64 << 10)
    batch = tmp_path / "jobs.yml"
    batch.write_text("jobs:\n" + "".join(f"  - {server.url_for(f'/{i}.bin')}\n" for i in range(3)),
                     encoding="utf-8")
    done = _run(mf, "--quiet", "download", "--batch", batch)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    library = mf.dest / f"127.0.0.1_{server.port}"  # jobs without a dest: the library layout
    assert all((library / f"{i}.bin").read_bytes() == server.content() for i in range(3))


def test_quiet_batch_failure_lists_only_the_failed_jobs(mf: Modfetch, faulty_server: Serve,
                                                       tmp_path: Path) -> None:
    good = faulty_server(size=64 << 10)
    bad = faulty_server(size=1000, error_status=404, error_times=None, include_probe=True)
    batch = tmp_path / "jobs.yml"
    batch.write_text(f"jobs:\n  - {good.url_for('/a.bin')}\n  - {bad.url_for('/gone.bin')}\n"
                     f"  - {good.url_for('/b.bin')}\n", encoding="utf-8")
    done = _run(mf, "--quiet", "download", "--batch", batch)
    assert done.returncode == 1, done.stderr
    rows = done.stdout.splitlines()
    assert len(rows) == 3 and rows[0].startswith("JOB"), done.stdout  # header, the failed job, the count
    assert "FAILED" in rows[1] and "gone.bin" in rows[1] and "404" in rows[1]
    assert rows[2] == "2 of 3 jobs succeeded"
    assert_clean_error(done.stderr, "1 of 3 batch jobs failed")
    # --json: every line on both streams is a JSON object, one per job on stdout
    again = _run(mf, "--quiet", "--json", "download", "--batch", batch)
    assert again.returncode == 1
    assert [line["ok"] for line in _json_lines(again.stdout)] == [True, False, True]
    assert _json_lines(again.stderr)[-1]["exit_code"] == 1


# -- paths ---------------------------------------------------------------------------------------------------
def test_relative_dest_is_relative_to_the_batch_file(mf: Modfetch, faulty_server: Serve,
                                                     tmp_path: Path) -> None:
    """Regression: a relative ``dest`` was taken from the current directory, so the same jobs file wrote to
    ``$HOME/models`` under cron and to ``./models`` from a shell (and downloaded everything twice)."""
    server = faulty_server(size=64 << 10)
    folder = tmp_path / "etc"
    folder.mkdir()
    batch = folder / "jobs.yml"
    batch.write_text(f"jobs:\n  - {{uri: '{server.url_for('/r.bin')}', dest: models/llm}}\n", encoding="utf-8")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = _run(mf, "--quiet", "download", "--batch", batch, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (folder / "models" / "llm" / "r.bin").read_bytes() == server.content()
    assert not any(elsewhere.iterdir())


def test_unset_variable_in_dest_is_refused(mf: Modfetch, tmp_path: Path) -> None:
    """Regression: ``dest: $MODELS/llm`` with MODELS unset (cron's environment is minimal) downloaded into a
    folder literally named ``$MODELS``."""
    batch = tmp_path / "jobs.yml"
    batch.write_text("jobs:\n  - {uri: 'http://127.0.0.1:9/x.bin', dest: ~/ok}\n"
                     "  - {uri: 'http://127.0.0.1:9/y.bin', dest: '${MODFETCH_TEST_UNSET}/llm'}\n",
                     encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MODFETCH_TEST_UNSET"}
    done = _run(mf, "download", "--quiet", "--batch", batch, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert_clean_error(done.stderr, "jobs[1].dest", "MODFETCH_TEST_UNSET", "not set")
    assert not list(tmp_path.rglob("*MODFETCH_TEST_UNSET*"))


@pytest.mark.parametrize("extra", [["--dest", "/tmp/x"], ["--out", "a.bin"], ["--sha256", "0" * 64], ["--pick"]])
def test_per_file_options_with_batch_are_refused_not_dropped(mf: Modfetch, tmp_path: Path,
                                                              extra: list[str]) -> None:
    """These were silently ignored with --batch: a user who typed --dest got the files somewhere else."""
    batch = tmp_path / "jobs.yml"
    batch.write_text("jobs:\n  - http://127.0.0.1:9/x.bin\n", encoding="utf-8")
    done = _run(mf, "download", "--quiet", "--batch", batch, *extra)
    assert done.returncode == 2, done.stderr
    assert_clean_error(done.stderr, extra[0], "cannot be combined with --batch")


def test_batch_from_stdin(mf: Modfetch, faulty_server: Serve, tmp_path: Path) -> None:
    """``--batch -`` reads the jobs from stdin (a relative dest is then relative to the current directory)."""
    server = faulty_server(size=64 << 10)
    done = _run(mf, "--quiet", "download", "--batch", "-", cwd=tmp_path,
                stdin=f"jobs:\n  - {{uri: '{server.url_for('/in.bin')}', dest: here}}\n")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "here" / "in.bin").read_bytes() == server.content()


# -- scale ---------------------------------------------------------------------------------------------------
def test_a_long_history_does_not_slow_every_job(mf: Modfetch, faulty_server: Serve, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: every checkpoint's metrics textfile re-read and decoded every finished download ever, so a
    batch of N jobs cost O(N * history): 3000 jobs took 85 s of CPU.  Asserted as work done (rows decoded per
    metrics pass), not as wall time: the batch itself still runs against the long history."""
    server = faulty_server(size=16 << 10)
    assert _run(mf, "--quiet", "download", "--url", server.url_for("/seed.bin")).returncode == 0
    conn = sqlite3.connect(mf.state_db)
    with conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(downloads)") if r[1] != "id"]
        names = ", ".join(columns)
        conn.execute("CREATE TEMP TABLE n(i)")
        conn.executemany("INSERT INTO n VALUES (?)", [(i,) for i in range(20_000)])
        seed = ", ".join("dest_path || '.' || n.i" if c == "dest_path" else
                         "finished_at - n.i" if c == "finished_at" else c for c in columns)
        conn.execute(f"INSERT INTO downloads ({names}) SELECT {seed} FROM downloads, n")
        newest = conn.execute("SELECT MAX(finished_at) FROM downloads").fetchone()[0]
    conn.close()

    decoded = 0
    original = StateDB._download

    def counting(row: sqlite3.Row) -> DownloadRow:
        nonlocal decoded
        decoded += 1
        return original(row)

    with monkeypatch.context() as patch:  # only this patch is undone below, not the fixture's isolated HOME
        patch.setattr(StateDB, "_download", staticmethod(counting))
        db = StateDB(mf.state_db)
        try:
            snap = collect(db)
        finally:
            db.close()
    assert decoded <= 4, f"one metrics pass decoded {decoded} rows of a 20001-row history"
    assert snap.last_success_timestamp_seconds == newest

    batch = tmp_path / "jobs.yml"
    batch.write_text("jobs:\n" + "".join(f"  - {server.url_for(f'/{i}.bin')}\n" for i in range(5)),
                     encoding="utf-8")
    done = _run(mf, "--quiet", "download", "--batch", batch, timeout=120)
    assert done.returncode == 0, done.stderr
    text = (mf.home / ".local/share/modfetch/metrics/modfetch.prom").read_text(encoding="utf-8")
    assert "modfetch_last_success_timestamp_seconds 0\n" not in text


def test_endless_batch_file_is_refused_not_read_forever(mf: Modfetch) -> None:
    """Regression: ``--batch /dev/zero`` (any endless character device or a runaway generator behind a FIFO)
    was read into memory until the machine ran out of it."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    done = _run(mf, "download", "--quiet", "--batch", "/dev/zero", timeout=20)
    assert done.returncode == 2, done.stderr
    assert_clean_error(done.stderr, "/dev/zero", "larger than")


def test_sigterm_mid_batch_saves_state_and_the_rerun_finishes(mf: Modfetch, faulty_server: Serve,
                                                              tmp_path: Path) -> None:
    """SIGTERM (systemd stop, cron's kill) ends a batch with 130 and JSON-only stderr; the rerun fetches only
    what is missing and exits 0."""
    size = 4 << 20
    server = faulty_server(size=size, rate=1 << 20)
    batch = tmp_path / "jobs.yml"
    batch.write_text("jobs:\n" + "".join(f"  - {server.url_for(f'/t{i}.bin')}\n" for i in range(3)),
                     encoding="utf-8")
    proc = mf.popen("--quiet", "--json", "download", "--batch", str(batch))
    wait_for(lambda: any(r["bytes_done"] for r in mf.rows()), "the batch to start downloading", proc=proc, seconds=20)
    proc.terminate()
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert out == "" and _json_lines(err)[-1]["exit_code"] == 130
    server.configure(rate=None)
    mark = server.mark()
    rerun = _run(mf, "--quiet", "download", "--batch", batch)
    assert (rerun.returncode, rerun.stdout, rerun.stderr) == (0, "", "")
    library = mf.dest / f"127.0.0.1_{server.port}"  # jobs without a dest: the library layout
    assert all((library / f"t{i}.bin").read_bytes() == server.content() for i in range(3))
    assert server.body_bytes(since=mark) < 3 * size  # resumed, not restarted


def test_alias_bomb_in_the_config_is_refused_quickly(mf: Modfetch) -> None:
    """The same repr expansion in the config's type errors (the file every cron run reads first)."""
    mf.config_path.write_text(f"version: 1\nnetwork:\n  user_agent: {_laughs()}\n", encoding="utf-8")
    done = _run(mf, "status", timeout=20)
    assert done.returncode == 2, done.stderr
    line = assert_clean_error(done.stderr, "network.user_agent", "must be a string, got a list")
    assert len(line) < 300
