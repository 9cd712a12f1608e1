"""Black-box runs of the installed ``modfetch`` against Hub / CivitAI look-alikes that misbehave.

Each test starts a scriptable threaded ``http.server`` on 127.0.0.1 (a "source" and, where needed, a separate
"storage" host), points ``sources.*.endpoint`` at it and runs the real command as a subprocess.  Every run must
end with exit 0 and exactly the right bytes, or one ``modfetch: error:`` line, no traceback and no
``internal error``, quickly, with nothing already on disk lost and no token anywhere.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Modfetch, assert_clean_error
from tests.servers.scripted import Reply, Route, Scripted, ranged

TOKEN = "tok_Blackbox+/=Secret%20xyz0123456789"
COMMIT = "c" * 40
DATA = hashlib.sha256(b"blackbox").digest() * 2048  # 64 KiB
SHA = hashlib.sha256(DATA).hexdigest()
JSON = {"Content-Type": "application/json"}
RUN_TIMEOUT = 30.0

@pytest.fixture
def servers() -> Iterator[Callable[[Route | None], Scripted]]:
    started: list[Scripted] = []

    def start(route: Route | None = None) -> Scripted:
        server = Scripted(route)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def run(mf: Modfetch, *args: str) -> subprocess.CompletedProcess[str]:
    """``modfetch download ARGS --dest DEST`` as a real process; asserts no internal error and no token leak."""
    proc = mf.run("download", *args, "--dest", str(mf.dest), timeout=RUN_TIMEOUT)
    assert "internal error" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    return proc


def use(mf: Modfetch, monkeypatch: pytest.MonkeyPatch, *, hub: str = "http://127.0.0.1:9",
        civitai: str = "http://127.0.0.1:9") -> None:
    mf.write_config(sources={"huggingface": {"endpoint": hub}, "civitai": {"endpoint": civitai}})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("CIVITAI_TOKEN", TOKEN)


# -- Hugging Face ------------------------------------------------------------------------------------------
def hub_route(resolve: Route, tree: Route | None = None, files: dict[str, bytes] | None = None) -> Route:
    """A minimal Hub: repo ``owner/repo`` exists; ``resolve`` answers single-file HEADs, ``tree`` listings."""

    def route(method: str, path: str, headers: dict[str, str]) -> Reply:
        if path.startswith("/api/models/owner/repo/revision/"):
            return 200, JSON, json.dumps({"sha": COMMIT})
        if path.startswith("/api/models/owner/repo/tree/") and tree is not None:
            return tree(method, path, headers)
        if path == "/api/models/owner/repo":
            return 200, JSON, json.dumps({"id": "owner/repo"})
        if path.startswith("/api/models/"):
            return 404, {"X-Error-Code": "RepoNotFound"}, ""
        if files is not None and f"/resolve/{COMMIT}/" in path:
            data = files.get(path.split(f"/resolve/{COMMIT}/", 1)[1])
            if data is None:
                return 404, {"X-Error-Code": "EntryNotFound"}, ""
            return ranged(data, headers, {"X-Repo-Commit": COMMIT})
        return resolve(method, path, headers)

    return route


def entry(path: str, data: bytes) -> dict[str, Any]:
    """A tree entry of a regular (git-stored) file."""
    oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return {"type": "file", "path": path, "size": len(data), "oid": oid}


@pytest.mark.parametrize("location", ["http://[::1", "file:///etc/passwd"])
def test_hf_unusable_redirect_is_a_clean_error(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    def resolve(method: str, path: str, headers: dict[str, str]) -> Reply:
        return 302, {"X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{SHA}"', "Location": location}, ""

    hub = servers(hub_route(resolve))
    use(mf, monkeypatch, hub=hub.url)
    proc = run(mf, "--url", "hf://owner/repo/file.bin")
    assert proc.returncode != 0
    assert_clean_error(proc.stderr, "redirect" if location.startswith("file") else "malformed")


def test_plain_http_malformed_location_is_a_clean_error(
    mf: Modfetch, servers: Callable[..., Scripted]
) -> None:
    server = servers(lambda m, p, h: (302, {"Location": "http://[::1"}, ""))
    proc = run(mf, "--url", server.url + "/file.bin")
    assert proc.returncode != 0
    assert_clean_error(proc.stderr, "malformed")


def test_hf_tree_pagination_loop_ends(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    def tree(method: str, path: str, headers: dict[str, str]) -> Reply:
        return 200, {**JSON, "Link": f'<{path}>; rel="next"'}, json.dumps([entry("a.txt", b"a")])

    hub = servers(hub_route(lambda m, p, h: (404, {}, ""), tree))
    use(mf, monkeypatch, hub=hub.url)
    proc = run(mf, "--url", "hf://owner/repo?include=*")
    assert proc.returncode != 0
    assert_clean_error(proc.stderr, "listing", "loop")
    assert sum("/tree/" in path for _, path, _ in hub.seen) <= 3


def test_hf_tree_duplicate_and_unsafe_paths(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"a.bin": DATA, "sub/b.txt": b"b" * 100, "../../evil.txt": b"evil", "/abs.txt": b"abs"}
    listing = [entry(p, d) for p, d in files.items()] + [entry("a.bin", DATA), {"type": "directory", "path": "sub"}]
    hub = servers(hub_route(lambda m, p, h: (404, {}, ""),
                            lambda m, p, h: (200, JSON, json.dumps(listing)), files))
    use(mf, monkeypatch, hub=hub.url)
    proc = run(mf, "--url", "hf://owner/repo?include=*")
    assert proc.returncode == 0, proc.stderr
    got = sorted(str(p.relative_to(mf.dest)) for p in mf.dest.rglob("*")
                 if p.is_file() and not p.name.endswith(".sha256"))
    assert got == ["a.bin", "sub/b.txt"]  # --dest: the repo's tree directly under it
    assert (mf.dest / "a.bin").read_bytes() == DATA
    assert not any("evil" in path or "abs.txt" in path for _, path, _ in hub.seen)


def test_hf_json_nesting_bomb_is_invalid_json(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = servers(hub_route(lambda m, p, h: (404, {}, ""),
                            lambda m, p, h: (200, JSON, "[" * 100_000 + "]" * 100_000)))
    use(mf, monkeypatch, hub=hub.url)
    proc = run(mf, "--url", "hf://owner/repo?include=*")
    assert proc.returncode != 0
    assert_clean_error(proc.stderr, "invalid JSON")


def test_token_with_a_line_break_is_a_usage_error(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = servers(hub_route(lambda m, p, h: (404, {}, "")))
    use(mf, monkeypatch, hub=hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_abcdef\r\nX-Injected: 1")
    proc = run(mf, "--url", "hf://owner/repo/file.bin")
    assert proc.returncode != 0
    line = assert_clean_error(proc.stderr, "token", "control character")
    assert "abcdef" not in proc.stderr and "Injected" not in line
    assert not hub.seen  # refused before any request, not retried as a "network error"


def test_checksum_sidecar_never_replaces_a_downloaded_file(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = b"the repository's own checksum list\n"
    files = {"model.gguf": DATA, "model.gguf.sha256": upstream}

    def resolve(method: str, path: str, headers: dict[str, str]) -> Reply:
        name = path.rsplit("/", 1)[-1]
        etag = hashlib.sha1(b"blob %d\0" % len(files[name]) + files[name]).hexdigest()
        return ranged(files[name], headers, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'})

    listing = [entry(p, d) for p, d in files.items()]
    hub = servers(hub_route(resolve, lambda m, p, h: (200, JSON, json.dumps(listing)), files))
    use(mf, monkeypatch, hub=hub.url)
    # One file after the other: writing model.gguf's checksum must not clobber the earlier download.
    assert run(mf, "--url", "hf://owner/repo/model.gguf.sha256").returncode == 0
    assert run(mf, "--url", "hf://owner/repo/model.gguf").returncode == 0
    assert (mf.dest / "model.gguf.sha256").read_bytes() == upstream
    assert (mf.dest / "model.gguf").read_bytes() == DATA
    # Both at once from a listing (either may finish first), then a rerun: all right, every time.  (With
    # --dest the listing lands at the same paths: start from an empty folder so both are fetched again.)
    (mf.dest / "model.gguf").unlink()
    (mf.dest / "model.gguf.sha256").unlink()
    for _ in range(2):
        proc = run(mf, "--url", "hf://owner/repo?include=*")
        assert proc.returncode == 0, proc.stderr
        assert (mf.dest / "model.gguf.sha256").read_bytes() == upstream
        assert (mf.dest / "model.gguf").read_bytes() == DATA


# -- CivitAI -----------------------------------------------------------------------------------------------
def civitai_route(model: str, download: Route | None = None, storage: str = "") -> Route:
    """A minimal CivitAI: ``model`` is the raw JSON of ``/api/v1/models/*``; downloads go to ``storage``."""

    def route(method: str, path: str, headers: dict[str, str]) -> Reply:
        if path.startswith("/api/v1/models/"):
            return 200, JSON, model
        if path.startswith("/api/download/"):
            if download is not None:
                return download(method, path, headers)
            return 307, {"Location": f"{storage}/file?X-Amz-Signature=sig"}, ""
        return 404, {}, ""

    return route


def civitai_model(files: str) -> str:
    return '{"id": 100, "name": "M", "type": "Checkpoint", "modelVersions": [{"id": 200, "modelId": 100, ' \
           f'"files": {files}}}]}}'


@pytest.mark.parametrize("size_kb", ["Infinity", "1e308", "NaN", "-Infinity"])
def test_civitai_non_finite_size(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch, size_kb: str
) -> None:
    storage = servers(lambda m, p, h: ranged(DATA, h))
    one = civitai_model(f'[{{"name": "a.safetensors", "sizeKB": {size_kb}, "primary": true, '
                        f'"hashes": {{"SHA256": "{SHA.upper()}"}}}}]')
    api = servers(civitai_route(one, storage=storage.url))
    use(mf, monkeypatch, civitai=api.url)
    proc = run(mf, "--url", "civitai://model/100")
    assert proc.returncode == 0, proc.stderr
    assert (mf.dest / "a.safetensors").read_bytes() == DATA
    # Two candidates: the ambiguity listing shows sizes too.
    two = civitai_model(f'[{{"name": "a.safetensors", "sizeKB": {size_kb}}}, {{"name": "b.ckpt", "sizeKB": 1}}]')
    api.route = civitai_route(two, storage=storage.url)
    proc = run(mf, "--url", "civitai://model/100")
    assert proc.returncode != 0
    assert_clean_error(proc.stderr, "2 files")


@pytest.mark.parametrize("model", [
    '{"id": 100, "modelVersions": 7}',
    '{"id": 100, "modelVersions": [{"id": 200, "modelId": 100, "files": 5}]}',
])
def test_civitai_wrong_json_types(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    api = servers(civitai_route(model))
    use(mf, monkeypatch, civitai=api.url)
    proc = run(mf, "--url", "civitai://model/100")
    assert proc.returncode != 0
    assert_clean_error(proc.stderr, "civitai")


def test_civitai_web_page_instead_of_the_file(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    def download(method: str, path: str, headers: dict[str, str]) -> Reply:
        return 200, {"Content-Type": "text/html; charset=utf-8"}, "<html>Please log in</html>"

    api = servers(civitai_route(civitai_model('[{"name": "m.safetensors", "primary": true}]'), download))
    use(mf, monkeypatch, civitai=api.url)
    proc = run(mf, "--url", "civitai://model/100")
    assert proc.returncode != 0
    assert_clean_error(proc.stderr, "web page")
    assert not mf.dest.exists() or not any(mf.dest.iterdir())


def test_civitai_malformed_download_redirect(
    mf: Modfetch, servers: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = servers(civitai_route(civitai_model('[{"name": "m.safetensors", "primary": true}]'),
                                lambda m, p, h: (307, {"Location": "http://[::1/x"}, "")))
    use(mf, monkeypatch, civitai=api.url)
    proc = run(mf, "--url", "civitai://model/100")
    assert proc.returncode != 0
    assert_clean_error(proc.stderr, "malformed")
