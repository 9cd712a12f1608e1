"""Proofs for claims in docs/SECURITY.md that no other test covered: real servers on 127.0.0.1, no mocks.

Each test name is linked from SECURITY.md; keep the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from modfetch.engine.http import headers_for, host_of, request
from tests.conftest import MiB, Modfetch, assert_clean_error
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike.civitai import GOOD_TOKEN as CIVITAI_GOOD_TOKEN
from tests.servers.lookalike.civitai import CivitaiLookalike
from tests.servers.lookalike.hub import GOOD_TOKEN as HF_GOOD_TOKEN
from tests.servers.lookalike.hub import HubLookalike
from tests.servers.scripted import Redirector

Serve = Callable[..., FaultyServer]
TOKEN = "sekrit-bearer-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def redirector() -> Iterator[Redirector]:
    r = Redirector()
    yield r
    r.stop()


def _fetch(url: str, auth_host: str) -> requests.Response:
    with requests.Session() as session:
        response, _final = request(session, "GET", url, base_headers={"Accept-Encoding": "identity"}, auth=AUTH,
                                   auth_host=auth_host, timeout=(5, 5), stream=False)
        return response


def test_auth_header_is_dropped_on_redirect_to_another_host(faulty_server: Serve, redirector: Redirector) -> None:
    """The endpoint host gets the token; the host it redirects to (another host:port) never does."""
    cdn = faulty_server(size=64 << 10)
    redirector.location = cdn.url
    response = _fetch(redirector.server.url + "/resolve/file.bin", auth_host=redirector.server.hostport)
    assert response.status_code == 200 and response.content == cdn.content()
    assert redirector.saw_auth() == [True]
    assert cdn.requests and all(r.header("Authorization") is None for r in cdn.requests)


def test_auth_header_is_kept_on_a_same_host_redirect(redirector: Redirector) -> None:
    """A relative redirect on the endpoint itself (a renamed repo) still carries the token; the second hop
    is the same server, which answers 302 again until the redirect limit, each time with the token."""
    redirector.location = "/elsewhere/on/the/same/host"
    with pytest.raises(Exception, match="too many redirects"):
        _fetch(redirector.server.url + "/start", auth_host=redirector.server.hostport)
    seen = redirector.saw_auth()
    assert len(seen) > 1 and all(seen)


def test_auth_header_never_goes_to_a_host_other_than_the_endpoint(faulty_server: Serve) -> None:
    """A plain URL on a host that is not the configured endpoint gets no token at all."""
    server = faulty_server(size=1 << 10)
    response = _fetch(server.url, auth_host="huggingface.co:443")
    assert response.status_code == 200
    assert all(r.header("Authorization") is None for r in server.requests)


def test_auth_header_is_not_sent_after_an_https_to_http_downgrade() -> None:
    """Same host, but the endpoint was https and this hop is http: no token (pure check of headers_for)."""
    url = "http://hub.example:443/x"
    assert "Authorization" not in headers_for(url, {}, AUTH, host_of(url), auth_scheme="https")
    assert headers_for("https://hub.example:443/x", {}, AUTH, "hub.example:443", auth_scheme="https")[
        "Authorization"] == AUTH["Authorization"]
    assert "Authorization" not in headers_for("https://hub.example:444/x", {}, AUTH, "hub.example:443")


def test_hf_token_reaches_the_hub_but_never_its_cdn(mf: Modfetch, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end through the CLI: a gated LFS file needs the token on the Hub, which redirects to the CDN."""
    with HubLookalike() as hub:
        mf.write_config(general={"download_root": str(mf.dest)}, sources={"huggingface": {"endpoint": hub.url}})
        monkeypatch.setenv("HF_TOKEN", HF_GOOD_TOKEN)
        result = mf.download("hf://acme/gated-model/model.safetensors")
        assert result.exit_code == 0, result.output
        hub_saw = [r for r in hub.hub.requests() if "/resolve/" in r.target]
        cdn_saw = hub.cdn.requests()
    assert hub_saw and all(r.headers.get("authorization") == f"Bearer {HF_GOOD_TOKEN}" for r in hub_saw)
    assert cdn_saw and not any("authorization" in r.headers for r in cdn_saw)
    assert not any(HF_GOOD_TOKEN in r.target for r in cdn_saw)


def test_civitai_token_reaches_the_api_but_never_its_storage(mf: Modfetch, monkeypatch: pytest.MonkeyPatch) -> None:
    with CivitaiLookalike() as civ:
        mf.write_config(general={"download_root": str(mf.dest)}, sources={"civitai": {"endpoint": civ.url}})
        monkeypatch.setenv("CIVITAI_TOKEN", CIVITAI_GOOD_TOKEN)
        result = mf.download("civitai://model/5500")
        assert result.exit_code == 0, result.output
        api_saw = [r for r in civ.api.requests() if r.target.startswith("/api/download/")]
        storage_saw = civ.storage.requests()
    assert api_saw and all("authorization" in r.headers for r in api_saw)
    assert storage_saw and not any("authorization" in r.headers for r in storage_saw)
    assert not any(CIVITAI_GOOD_TOKEN in r.target for r in storage_saw)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious bytes that must never change")
    return victim


def test_existing_different_file_is_not_overwritten_without_force(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    mf.dest.mkdir(parents=True)
    target = mf.dest / "file.bin"
    target.write_bytes(b"the user's own file")
    result = mf.download(server.url)
    assert result.exit_code == 1
    assert_clean_error(result.stderr, "already exists")
    assert target.read_bytes() == b"the user's own file"
    assert mf.download(server.url, "--force").exit_code == 0
    assert target.read_bytes() == server.content()


def test_allow_overwrite_in_config_acts_like_force(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    mf.write_config(general={"download_root": str(mf.dest), "allow_overwrite": True})
    mf.dest.mkdir(parents=True)
    (mf.dest / "file.bin").write_bytes(b"old")
    assert mf.download(server.url).exit_code == 0
    assert (mf.dest / "file.bin").read_bytes() == server.content()


def test_identical_file_at_target_is_kept_and_nothing_is_fetched(mf: Modfetch, faulty_server: Serve) -> None:
    server = faulty_server(size=MiB)
    mf.dest.mkdir(parents=True)
    (mf.dest / "file.bin").write_bytes(server.content())
    mark = server.mark()
    result = mf.download(server.url, "--sha256", server.sha256())
    assert result.exit_code == 0, result.output
    assert server.body_bytes(mark) == 0


def test_symlink_planted_at_download_target_is_never_written_through(mf: Modfetch, faulty_server: Serve,
                                                                     tmp_path: Path) -> None:
    """A link at the final name is 'a different file': refused without --force; with --force the link itself
    is replaced by the download and the file it pointed at is untouched."""
    server = faulty_server(size=MiB)
    victim = _victim(tmp_path)
    mf.dest.mkdir(parents=True)
    (mf.dest / "file.bin").symlink_to(victim)
    result = mf.download(server.url)
    assert result.exit_code == 1
    assert victim.read_bytes() == b"precious bytes that must never change"
    assert mf.download(server.url, "--force").exit_code == 0
    assert victim.read_bytes() == b"precious bytes that must never change"
    assert not (mf.dest / "file.bin").is_symlink() and (mf.dest / "file.bin").read_bytes() == server.content()


def test_stale_part_symlink_without_state_is_removed_not_followed(mf: Modfetch, faulty_server: Serve,
                                                                  tmp_path: Path) -> None:
    """A .part link with no DB state behind it is deleted (the link, not its target) before starting."""
    server = faulty_server(size=MiB)
    victim = _victim(tmp_path)
    mf.dest.mkdir(parents=True)
    (mf.dest / "file.bin.part").symlink_to(victim)
    assert mf.download(server.url).exit_code == 0
    assert victim.read_bytes() == b"precious bytes that must never change"
    assert (mf.dest / "file.bin").read_bytes() == server.content()


def test_dangling_part_symlink_is_never_followed(mf: Modfetch, faulty_server: Serve, tmp_path: Path) -> None:
    """A dangling link at the .part path must not make modfetch create (and finally hardlink) a file at the
    link's target outside --dest."""
    server = faulty_server(size=MiB)
    elsewhere = tmp_path / "elsewhere" / "planted.bin"
    elsewhere.parent.mkdir()
    mf.dest.mkdir(parents=True)
    (mf.dest / "file.bin.part").symlink_to(elsewhere)
    mf.download(server.url)
    assert not elsewhere.exists()


def test_part_swapped_for_a_symlink_between_runs_is_never_written_through(mf: Modfetch, faulty_server: Serve,
                                                                           tmp_path: Path) -> None:
    """Resume after a failed run whose .part was replaced by a link to another file: the file behind the link
    keeps its bytes."""
    server = faulty_server(size=4 * MiB, error_status=403, error_min_start=2 * MiB, error_times=None)
    assert mf.download(server.url).exit_code == 1
    part = mf.dest / "file.bin.part"
    assert part.exists()
    victim = _victim(tmp_path)
    part.unlink()
    part.symlink_to(victim)
    server.configure(error_status=None)
    mf.download(server.url)
    assert victim.read_bytes() == b"precious bytes that must never change"


def test_token_pasted_into_a_url_is_not_stored_or_echoed(mf: Modfetch, faulty_server: Serve) -> None:
    """The command line itself is visible in ps (documented caveat), but modfetch does not keep the secret:
    the DB row, the status output and the printed result show it masked."""
    server = faulty_server(size=64 << 10)
    url = server.url_for(f"/file.bin?token={TOKEN}&sig={TOKEN}x")
    proc = mf.run("download", "--url", url, "--dest", str(mf.dest))
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    status = mf.run("status", "--json")
    assert TOKEN not in status.stdout and "token=***" in status.stdout
    assert TOKEN.encode() not in mf.state_db.read_bytes()
    wal = Path(str(mf.state_db) + "-wal")
    assert not wal.exists() or TOKEN.encode() not in wal.read_bytes()


def test_sha256_sidecar_and_part_files_stay_inside_dest(mf: Modfetch, faulty_server: Serve) -> None:
    """A hostile Content-Disposition cannot place the file, its .part or its .sha256 outside --dest."""
    server = faulty_server(size=64 << 10, disposition='attachment; filename="../../../outside.bin"')
    result = mf.download(server.url)
    assert result.exit_code == 0, result.output
    inside = sorted(p.name for p in mf.dest.iterdir())
    assert inside == ["outside.bin", "outside.bin.sha256"]
    assert not any(p.name.startswith("outside.bin") for p in mf.dest.parent.iterdir())
    assert not os.path.exists(mf.dest.parent.parent / "outside.bin")
