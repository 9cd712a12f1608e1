"""Black-box secrets and observability: the installed ``modfetch`` (subprocess) against hostile servers on 127.0.0.1.

Rules held here: a token never appears in logs (any level, human or JSON), the state DB, ``status --json`` or
error messages, in any form a log reader could use (raw or percent-encoded), and never travels to a host other
than its endpoint, even when the endpoint echoes it into a redirect; secret query parameters of URLs the user
gives (presigned S3/CDN URLs, ``?key=``, ``?password=``) are masked everywhere, urllib3's debug lines included;
JSON log lines are strict UTF-8 JSON even for non-UTF-8 arguments; the metrics textfile never replaces
something that is not modfetch's own file, and a broken metrics path never fails a download.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from tests.conftest import Modfetch, assert_clean_error
from tests.servers.lookalike import LookalikeServer, Request, Response, serve_bytes
from tests.servers.lookalike.echoing import EchoingHub

DATA = bytes(range(256)) * 400  # 100 KiB
SHA = hashlib.sha256(DATA).hexdigest()
# Characters a URL must encode, so an echoed token shows up percent-encoded, not verbatim.
ODD_TOKEN = "hf_Tok/en+with=chars&more0123"


def _file_app(req: Request) -> Response:
    return serve_bytes(req, DATA, etag='"v1"')


@pytest.fixture
def files() -> Iterator[LookalikeServer]:
    server = LookalikeServer(_file_app).start()
    yield server
    server.stop()


@pytest.fixture
def echoing_hub() -> Iterator[EchoingHub]:
    hub = EchoingHub(DATA)
    yield hub
    hub.stop()


def _forms(secret: str) -> set[str]:
    """The ways a secret can be spelled in a URL or log line."""
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), quote(secret, safe="*/:"),
            quote_plus(secret, safe="*/:")}


def _assert_absent(secrets: list[str], texts: dict[str, str], root: Path) -> None:
    """No form of any secret in the texts nor in any file under ``root`` (state DB, .prom, sidecars)."""
    for secret in secrets:
        for form in _forms(secret):
            for where, text in texts.items():
                assert form not in text, f"{form!r} in {where}: {text[-1500:]}"
            for path in root.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    assert form.encode() not in path.read_bytes(), f"{form!r} in {path}"


# -- query secrets of URLs the user gives -------------------------------------------------------------------


PRESIGNED = {  # parameter -> secret value; every one documented as masked (docs/SECURITY.md section 3)
    "X-Amz-Signature": "aMzSiGnAtUrE111", "X-Amz-Credential": "AKIAcReDeNtIaL222",
    "X-Amz-Security-Token": "sEsSiOnToKeN333", "key": "GoOgLeKeY444", "auth": "AuThVaLuE555",
    "password": "PaSsWoRd666", "client_secret": "ClIeNtSeCrEt777", "refresh_token": "ReFrEsHtOk888",
    "Signature": "ClOuDfRoNt999", "Key-Pair-Id": "KpId000",
}


def test_presigned_url_secrets_are_masked_in_debug_logs_db_and_status(mf: Modfetch, files: LookalikeServer,
                                                                      tmp_path: Path) -> None:
    """urllib3's debug request lines print the full target; every secret parameter must be masked there as in
    the DB.  Harmless parameters (``X-Amz-Date``, ``X-Amz-Expires``) stay readable."""
    query = "&".join(f"{k}={v}" for k, v in PRESIGNED.items()) + "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=600"
    url = f"{files.url}/bucket/model.bin?{query}"
    texts: dict[str, str] = {}
    for fmt in ([], ["--json"]):
        proc = mf.run("--log-level", "debug", *fmt, "download", "--url", url, "--dest", str(mf.dest), "--force")
        assert proc.returncode == 0, proc.stderr
        texts[f"stderr{fmt}"] = proc.stderr
        texts[f"stdout{fmt}"] = proc.stdout
    assert '"GET /bucket/model.bin?' in texts["stderr[]"]  # the urllib3 lines really were there
    assert "X-Amz-Date=20250101T000000Z" in texts["stderr[]"]
    status = mf.run("status", "--json")
    texts["status"] = status.stdout
    assert "X-Amz-Expires=600" in status.stdout
    _assert_absent(list(PRESIGNED.values()), texts, tmp_path)


def test_percent_encoded_token_is_masked(mf: Modfetch, files: LookalikeServer, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A token with ``/+=&`` in it is spelled percent-encoded inside URLs; that spelling is masked too."""
    monkeypatch.setenv("HF_TOKEN", ODD_TOKEN)
    enc = quote(ODD_TOKEN, safe="")
    url = f"{files.url}/d/{enc}/model.bin?note={enc}"
    proc = mf.run("--log-level", "debug", "download", "--url", url, "--dest", str(mf.dest))
    assert proc.returncode == 0, proc.stderr
    assert "/model.bin" in proc.stderr
    status = mf.run("--json", "status")
    _assert_absent([ODD_TOKEN], {"stderr": proc.stderr, "stdout": proc.stdout, "status": status.stdout}, tmp_path)


# -- tokens never travel to another host ----------------------------------------------------------------------


@pytest.mark.parametrize("token", [ODD_TOKEN, "hf_PlainLookingToken0123456789"])
def test_token_echoed_into_a_redirect_never_reaches_the_cdn(mf: Modfetch, echoing_hub: EchoingHub,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           token: str) -> None:
    """The endpoint puts the bearer token into the CDN URL it redirects to: modfetch refuses to send it there
    (one clear error), and neither the error, the debug log nor the DB shows the token in any spelling."""
    monkeypatch.setenv("HF_TOKEN", token)
    mf.write_config(sources={"huggingface": {"endpoint": echoing_hub.hub.url}})
    proc = mf.run("download", "--url", "hf://a/b/file.bin", "--dest", str(mf.dest))
    assert proc.returncode == 1, proc.stderr
    assert_clean_error(proc.stderr, "token", "127.0.0.1")
    assert any(r.headers.get("authorization") == f"Bearer {token}" for r in echoing_hub.hub.requests())
    debug = mf.run("--log-level", "debug", "download", "--url", "hf://a/b/file.bin", "--dest", str(mf.dest))
    js = mf.run("--json", "download", "--url", "hf://a/b/file.bin", "--dest", str(mf.dest))
    assert debug.returncode == 1 and js.returncode == 1
    assert echoing_hub.cdn.requests() == []
    status = mf.run("--json", "status")
    _assert_absent([token], {"stderr": proc.stderr, "debug": debug.stderr, "json": js.stderr,
                             "status": status.stdout}, tmp_path)


# -- JSON lines with non-UTF-8 arguments ----------------------------------------------------------------------


def test_json_lines_are_strict_utf8_json_for_non_utf8_arguments(mf: Modfetch, files: LookalikeServer) -> None:
    """Bytes that are not UTF-8 in an argument (a URL, a path) reach the logs as ``\\xff`` text: every stderr
    line is strict UTF-8 and parses as JSON without lone surrogates (which strict parsers reject)."""
    argv = [os.fsencode(a) for a in mf.command("--json", "--log-level", "debug", "download")]
    argv += [b"--url", files.url.encode() + b"/missing\xff\xfe", b"--dest", os.fsencode(mf.dest)]
    files.app = lambda req: Response(404, b"\xff\xfe not here", [])
    proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines
    for raw in lines:
        text = raw.decode("utf-8")  # strict: raises on invalid UTF-8
        assert "\\ud" not in text.lower(), text  # no escaped lone surrogates
        record = json.loads(text)
        assert isinstance(record, dict) and "msg" in record
    assert "missing\\\\xff\\\\xfe" in proc.stderr.decode()  # shown as \xff\xfe (JSON-escaped backslashes)


# -- metrics textfile ----------------------------------------------------------------------------------------


def _metrics_config(mf: Modfetch, path: Path) -> None:
    mf.write_config(metrics={"prometheus_textfile": {"path": str(path)}})


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " WARN " in line]


@pytest.mark.parametrize("kind", ["fifo", "foreign-file"])
def test_metrics_never_replace_something_that_is_not_modfetchs_textfile(mf: Modfetch, files: LookalikeServer,
                                                                         tmp_path: Path, kind: str) -> None:
    """A misconfigured path (a FIFO or device, another exporter's file) is left alone: one warning, and the
    download still succeeds."""
    target = tmp_path / "textfile" / "node.prom"
    target.parent.mkdir()
    foreign = "# HELP node_thing Another exporter's metric.\n# TYPE node_thing gauge\nnode_thing 1\n"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.write_text(foreign)
    _metrics_config(mf, target)
    proc = mf.run("download", "--url", f"{files.url}/m.bin", "--dest", str(mf.dest))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = _warnings(proc.stderr)
    assert len(warnings) == 1 and "WARN" in warnings[0] and str(target) in warnings[0], proc.stderr
    if kind == "fifo":
        assert stat.S_ISFIFO(target.lstat().st_mode)
    else:
        assert target.read_text() == foreign
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_unwritable_metrics_dir_warns_once_and_the_download_succeeds(mf: Modfetch, files: LookalikeServer,
                                                                      tmp_path: Path) -> None:
    """The textfile's directory cannot exist (a file is in the way): a one-line warning (a JSON line with
    --json), exit 0, the file downloaded."""
    (tmp_path / "blocker").write_text("x")
    _metrics_config(mf, tmp_path / "blocker" / "sub" / "modfetch.prom")
    proc = mf.run("download", "--url", f"{files.url}/a.bin", "--dest", str(mf.dest))
    assert proc.returncode == 0 and (mf.dest / "a.bin").read_bytes() == DATA, proc.stderr
    assert "Traceback" not in proc.stderr and len(_warnings(proc.stderr)) == 1, proc.stderr
    proc = mf.run("--json", "download", "--url", f"{files.url}/b.bin", "--dest", str(mf.dest))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [r["level"] for r in records if r["logger"] == "modfetch.metrics"] == ["warn"]


def test_concurrent_processes_leave_one_valid_textfile(mf: Modfetch, files: LookalikeServer,
                                                       tmp_path: Path) -> None:
    """Several modfetch processes sharing one textfile: the final file passes ``promtool check metrics`` (or
    prometheus_client's parser), counts every byte and success, and no temp file is left behind."""
    out = tmp_path / "textfile" / "modfetch.prom"
    _metrics_config(mf, out)
    procs = [mf.popen("-q", "download", "--url", f"{files.url}/c{i}.bin", "--dest", str(mf.dest))
             for i in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    text = out.read_text()
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("modfetch_downloaded_bytes_total", (("source", "http"),))] == 4 * len(DATA)
    assert samples[("modfetch_downloads_succeeded_total", (("source", "http"),))] == 4
    assert sorted(p.name for p in out.parent.iterdir()) == [".modfetch.prom.lock", "modfetch.prom"]
    assert "127.0.0.1" not in text and str(mf.dest) not in text  # no URLs or paths as label values


def test_engine_refuses_a_redirect_off_the_endpoint_that_carries_the_token() -> None:
    """A file served by the endpoint itself (auth sent) whose download redirects to another host with the token
    in the URL: the engine's hand-followed redirect stops before that host is contacted."""
    import requests

    from modfetch.engine.http import request
    from modfetch.errors import AuthError

    token = "sekrit-bearer-token-0123456789abcdef"
    cdn = LookalikeServer(_file_app).start()
    endpoint = LookalikeServer(lambda req: Response(302, b"", [("Location", f"{cdn.url}/f?x={quote(token)}")]))
    endpoint.start()
    try:
        with requests.Session() as session, pytest.raises(AuthError, match="refusing") as caught:
            request(session, "GET", f"{endpoint.url}/file", base_headers={}, auth={"Authorization": f"Bearer {token}"},
                    auth_host=endpoint.hostport, timeout=(5, 5))
        assert token not in caught.value.message and cdn.requests() == []
        assert endpoint.requests()[0].headers["authorization"] == f"Bearer {token}"
    finally:
        endpoint.stop()
        cdn.stop()
