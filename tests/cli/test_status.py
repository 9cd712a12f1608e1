"""``modfetch status`` filters (--status, --source) and --watch (refreshes until Ctrl-C, exit status 0)."""

from __future__ import annotations

import signal
import threading

import pytest

from modfetch.state import COMPLETE, FAILED, open_state
from tests.conftest import wait_for


def _seed(mf) -> None:
    db = open_state(mf.state_db)
    db.create_download("https://h/a.bin", str(mf.dest / "a.bin"), size=1, status=COMPLETE)
    db.create_download("hf://o/r/b.bin", str(mf.dest / "b.bin"), size=1, status=FAILED, source="huggingface")
    db.create_download("https://h/c.bin", str(mf.dest / "c.bin"), size=1, status=FAILED)
    db.close()


def test_status_and_source_filters(mf) -> None:
    _seed(mf)
    names = lambda *args: sorted(r["path"].rsplit("/", 1)[-1] for r in mf.status(*args))  # noqa: E731
    assert names() == ["a.bin", "b.bin", "c.bin"]
    assert names("--status", "failed") == ["b.bin", "c.bin"]
    assert names("--status", "failed,complete", "--source", "http") == ["a.bin", "c.bin"]
    assert names("--source", "huggingface") == ["b.bin"]
    bad = mf.cli("status", "--status", "bogus")
    assert bad.exit_code == 2 and "unknown status bogus" in bad.stderr
    assert "no downloads match" in mf.cli("status", "--status", "running").stdout


def test_watch_refreshes_until_ctrl_c(mf, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(mf)
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # each redraw reaches the pipe as it is drawn
    proc = mf.popen("status", "--watch", "--status", "failed")
    assert proc.stdout is not None
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    wait_for(lambda: "".join(seen).count("c.bin") >= 2, "a second redraw", proc=proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    reader.join(timeout=20)
    out, err = "".join(seen), proc.stderr.read() if proc.stderr else ""
    assert out.count("c.bin") >= 2 and "a.bin" not in out
    assert "Traceback" not in err
