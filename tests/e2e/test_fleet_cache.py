"""The fleet cache of docs/FLEET.md (contrib/nginx/modfetch-cache.conf.template, rendered as-is) in front of the
Hub, CivitAI and CDN look-alikes: concurrent nodes share one origin fetch, and the cache never hands gated bytes
to a request without the right token or signature.

nginx comes from Debian's nginx-light (scripts/test installs it); without it, or without the slice module, the
tests skip and say so.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import modfetch_command, sha256_of
from tests.servers.lookalike import LookalikeServer, Response, pseudo_random_bytes
from tests.servers.lookalike.civitai import CivFile, CivitaiData, CivitaiLookalike, CivModel, CivVersion
from tests.servers.lookalike.hub import GOOD_TOKEN, NOACCESS_TOKEN, HubData, HubLookalike
from tests.servers.nginx_cache import ROOT, TEMPLATE, NginxCache, find_nginx, nginx_has_slice

MiB = 1 << 20
BIG = 32 * MiB  # 2 slices of 16 MiB: the lock and a slice boundary both matter
NODES = 3
CIV_SIZE = 8 * MiB


@dataclass
class Fleet:
    hub: HubLookalike
    civitai: CivitaiLookalike
    cache: NginxCache
    big: bytes
    gated_lfs: bytes
    civ_file: bytes

    def origin_bytes(self) -> int:
        """Body bytes every origin host wrote (Hub, CDN, CivitAI API, storage)."""
        return sum(s.bytes_sent for s in (self.hub.hub, self.hub.cdn, self.civitai.api, self.civitai.storage))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    binary = find_nginx()
    if binary is None:
        pytest.skip("nginx not installed (apt-get install nginx-light; scripts/test does this as root)")
    if not nginx_has_slice(binary):
        pytest.skip(f"{binary} lacks the slice module (install Debian's nginx-light, -core or -full)")
    data = HubData()
    big = pseudo_random_bytes("fleet-big", BIG)
    gated_lfs = pseudo_random_bytes("fleet-gated", 3 * MiB)
    data.add_repo("acme/big", {"model.safetensors": big, "config.json": b'{"hidden": 4096}\n'})
    data.add_repo("acme/gated", {"model.safetensors": gated_lfs, "README.md": b"# gated\n"}, gated=True)
    civ_file = pseudo_random_bytes("fleet-civ", CIV_SIZE)
    civ = CivitaiData()
    civ.add(CivModel(777, "Fleet LoRA", "LORA", "acme", versions=[
        CivVersion(7701, "v1", "SDXL 1.0", [CivFile(77011, "fleetLora.safetensors", civ_file, primary=True)])]))
    hub = HubLookalike(data).start()
    civitai = CivitaiLookalike(civ).start()
    cache = NginxCache(binary, tmp_path_factory.mktemp("nginx"), hub.url, civitai.url,
                       [hub.cdn.url, civitai.storage.url])
    try:
        cache.start()
    except RuntimeError as exc:
        hub.stop()
        civitai.stop()
        pytest.fail(str(exc))
    yield Fleet(hub, civitai, cache, big, gated_lfs, civ_file)
    cache.stop()
    hub.stop()
    civitai.stop()


def node_env(home: Path, cache: NginxCache, token: str | None = None) -> dict[str, str]:
    """One fleet node: its own HOME/XDG dirs (own state DB), HF_ENDPOINT and the CivitAI endpoint on the cache."""
    for sub in ("config/modfetch", "data", "cache"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    config = {"version": 1, "sources": {"civitai": {"endpoint": cache.civitai_url}}}
    (home / "config/modfetch/config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "CIVITAI_TOKEN")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               XDG_CACHE_HOME=str(home / "cache"), HF_ENDPOINT=cache.hub_url, NO_PROXY="*", no_proxy="*")
    if token:
        env["HF_TOKEN"] = token
    return env


def start_node(tmp_path: Path, name: str, cache: NginxCache, uri: str,
               token: str | None = None) -> tuple[subprocess.Popen[str], Path]:
    """``modfetch download URI`` with default flags as a real process on its own node; returns it and its dest."""
    dest = tmp_path / name / "dl"
    proc = subprocess.Popen([*modfetch_command(), "download", "--quiet", "--dest", str(dest), uri],
                            env=node_env(tmp_path / name / "home", cache, token), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, dest


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET without following redirects: (status, headers, body)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_three_nodes_pull_one_lfs_file_through_the_cache_with_one_origin_fetch(fleet: Fleet, tmp_path: Path) -> None:
    before = fleet.origin_bytes()
    nodes = [start_node(tmp_path, f"node{i}", fleet.cache, "hf://acme/big/model.safetensors") for i in range(NODES)]
    want = sha256_of_bytes(fleet.big)
    for i, (proc, dest) in enumerate(nodes):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"node{i}: {err}\n{fleet.cache.error_log()}"
        assert sha256_of(dest / "model.safetensors") == want, f"node{i}"
    served = fleet.origin_bytes() - before
    # One origin fetch of the file for three nodes; the signature checks add one byte per client request.
    assert served <= 1.1 * BIG, f"origin served {served} bytes for {NODES} nodes of a {BIG}-byte file"
    cdn_gets = [r for r in fleet.hub.cdn.requests() if r.headers.get("range") != "bytes=0-0"]
    assert cdn_gets, "the bytes must come from the CDN through the cache"
    assert all("authorization" not in r.headers for r in fleet.hub.cdn.requests())


def test_civitai_nodes_share_the_cached_storage_bytes(fleet: Fleet, tmp_path: Path) -> None:
    before = fleet.civitai.storage.bytes_sent
    for i in range(2):  # one after the other: the second node is served from the cache alone
        proc, dest = start_node(tmp_path, f"civ{i}", fleet.cache, "civitai://model/777")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"civ{i}: {err}\n{fleet.cache.error_log()}"
        assert sha256_of(dest / "fleetLora.safetensors") == sha256_of_bytes(fleet.civ_file)
    served = fleet.civitai.storage.bytes_sent - before
    assert served <= 1.1 * CIV_SIZE, f"storage served {served} bytes for 2 nodes of a {CIV_SIZE}-byte file"


def test_gated_lfs_bytes_cached_for_a_token_are_never_served_without_one(fleet: Fleet, tmp_path: Path) -> None:
    # A node with the token fills the cache with the gated file.
    proc, dest = start_node(tmp_path, "with-token", fleet.cache, "hf://acme/gated/model.safetensors", GOOD_TOKEN)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert sha256_of(dest / "model.safetensors") == sha256_of_bytes(fleet.gated_lfs)

    # A node without a token gets the Hub's gated error, not the cached bytes.
    proc, dest = start_node(tmp_path, "no-token", fleet.cache, "hf://acme/gated/model.safetensors")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "gated" in err.lower(), err
    assert not (dest / "model.safetensors").exists()
    # Nor does a token without access (403 from the Hub).
    proc, dest = start_node(tmp_path, "no-access", fleet.cache, "hf://acme/gated/model.safetensors", NOACCESS_TOKEN)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "no access" in err.lower(), err

    # The cached object's path is no key to it: without a valid signature the CDN block answers 403.
    status, headers, _ = fetch(f"{fleet.cache.hub_url}/acme/gated/resolve/main/model.safetensors",
                               {"Authorization": f"Bearer {GOOD_TOKEN}"})
    assert status == 302
    signed = headers["Location"]
    assert signed.startswith(fleet.cache.cdn_url + "/"), signed
    status, headers, body = fetch(signed)
    assert (status, headers.get("X-Cache-Status")) == (200, "HIT")  # control: it is cached
    assert body == fleet.gated_lfs
    unsigned = signed.split("?", 1)[0]
    forged = signed.replace("Signature=", "Signature=0")
    expired = signed.split("&Expires=")[0] + "&Expires=1&Signature=" + signed.split("&Signature=")[1]
    for url in (unsigned, forged, expired, unsigned + "?Expires=99999999999"):
        status, _, body = fetch(url, {"Range": "bytes=0-1023"})
        assert status == 403, url
        assert fleet.gated_lfs[:1024] not in body


@pytest.mark.parametrize(("token", "status"), [(None, 401), (NOACCESS_TOKEN, 403)])
def test_gated_regular_file_fetched_with_a_token_is_not_cached_for_others(
        fleet: Fleet, token: str | None, status: int) -> None:
    commit = fleet.hub.data.repos[("model", "acme/gated")].refs["main"]
    url = f"{fleet.cache.hub_url}/acme/gated/resolve/{commit}/README.md"
    for _ in range(2):  # twice: a cache that stored the first answer would serve the second
        got, headers, body = fetch(url, {"Authorization": f"Bearer {GOOD_TOKEN}"})
        assert (got, body) == (200, b"# gated\n")
        assert headers.get("X-Cache-Status") == "BYPASS"
    got, headers, body = fetch(url, {"Authorization": f"Bearer {token}"} if token else {})
    assert got == status
    assert headers.get("X-Error-Code") == "GatedRepo"
    assert b"# gated" not in body


def test_anonymous_commit_pinned_regular_file_is_cached(fleet: Fleet) -> None:
    commit = fleet.hub.data.repos[("model", "acme/big")].refs["main"]
    url = f"{fleet.cache.hub_url}/acme/big/resolve/{commit}/config.json"
    statuses = [fetch(url)[1].get("X-Cache-Status") for _ in range(3)]
    assert statuses == ["MISS", "HIT", "HIT"]
    origin = [r for r in fleet.hub.hub.requests() if r.target.endswith(f"/{commit}/config.json")]
    assert len(origin) == 1
    # A branch name moves: never cached.
    branch = f"{fleet.cache.hub_url}/acme/big/resolve/main/config.json"
    assert {fetch(branch)[1].get("X-Cache-Status") for _ in range(2)} == {"BYPASS"}


def test_huggingface_hub_client_behind_the_cache(fleet: Fleet, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The real huggingface_hub honours HF_ENDPOINT=cache: Hub metadata (X-Linked-Etag, ...) survives the cache,
    the rewritten redirect is followed, a second client is served from the cache, gated stays gated."""
    import huggingface_hub as hf  # a declared test dependency (setup.cfg [test])

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")

    def download(cache: str, repo_id: str, token: str | bool = False) -> Path:
        return Path(hf.hf_hub_download(repo_id, "model.safetensors", cache_dir=tmp_path / cache,
                                       endpoint=fleet.cache.hub_url, token=token))

    assert download("first", "acme/big").read_bytes() == fleet.big
    before = fleet.origin_bytes()
    assert download("second", "acme/big").read_bytes() == fleet.big
    assert fleet.origin_bytes() - before < 64 * 1024  # metadata, redirects and 1-byte signature checks only
    assert download("gated", "acme/gated", GOOD_TOKEN).read_bytes() == fleet.gated_lfs
    with pytest.raises(hf.errors.GatedRepoError):
        download("anon", "acme/gated")


def test_fleet_doc_renders_every_placeholder_of_the_template() -> None:
    """docs/FLEET.md's sed command fills every @NAME@ of the template the tests run (doc and config can't drift)."""
    doc = (ROOT / "docs" / "FLEET.md").read_text(encoding="utf-8")
    in_doc = set(re.findall(r"-e 's(?P<d>[|~])@([A-Z_]+)@(?P=d)", doc))
    assert {name for _, name in in_doc} == set(re.findall(r"@([A-Z_]+)@", TEMPLATE.read_text(encoding="utf-8")))


def test_absolute_redirects_come_back_through_the_cache(tmp_path: Path) -> None:
    """An origin redirecting to itself (absolute Location) or to an allow-listed CDN host: the client is sent back
    to the cache's Hub/CivitAI port or to its CDN port, never straight to the origin; other hosts pass unchanged."""
    binary = find_nginx()
    if binary is None or not nginx_has_slice(binary):
        pytest.skip("nginx with the slice module not installed (apt-get install nginx-light)")
    targets: dict[str, str] = {}
    origin = LookalikeServer(lambda req: Response(307, b"", [("Location", targets.get(req.path, "/"))])).start()
    cdn = LookalikeServer(lambda req: Response(404)).start()
    cache = NginxCache(binary, tmp_path / "nginx", origin.url, origin.url, [cdn.url])
    try:
        cache.start()
        targets.update({"/self": f"{origin.url}/moved?x=1", "/api/self": f"{origin.url}/moved?x=1",
                        "/cdn": f"{cdn.url}/repos/ab/cd/ef?Signature=s", "/other": "http://127.0.0.2:9/elsewhere"})
        for port_url in (cache.hub_url, cache.civitai_url):
            for path, want in (("/self", f"{port_url}/moved?x=1"), ("/api/self", f"{port_url}/moved?x=1"),
                               ("/cdn", f"{cache.cdn_url}/{cdn.hostport}/repos/ab/cd/ef?Signature=s"),
                               ("/other", "http://127.0.0.2:9/elsewhere")):
                status, headers, _ = fetch(port_url + path)
                assert (status, headers.get("Location")) == (307, want), (port_url, path)
    finally:
        cache.stop()
        origin.stop()
        cdn.stop()
