"""Hugging Face fidelity: the token is found where ``huggingface_hub`` finds it (variables, then the token file
``hf auth login`` writes), bound to the Hub host and never shown or stored; the HF cache placements carry what
huggingface_hub 2.x writes in its own cache (``CACHEDIR.TAG``, ``trees/<commit>.json``), so the real client,
offline, reads them and tells a partial snapshot from a complete one as it does on its own cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modfetch.placement.hf_cache import CACHEDIR_TAG
from modfetch.placement.presets import hf_cache_dir
from modfetch.resolvers import hf_token
from modfetch.util import hf_tree
from modfetch.util.redact import redact
from tests.conftest import Modfetch, assert_clean_error, error_lines
from tests.servers.lookalike.hub import GOOD_TOKEN, HubLookalike

FILE_TOKEN = "hf_StoredInTheTokenFile0123456789abcdefXYZ"
ENV_TOKEN = "hf_FromTheEnvironment0123456789abcdef"
LEGACY_TOKEN = "hf_FromTheLegacyVariable0123456789abcdef"
HF_QUIET = {"HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@pytest.fixture(scope="module")
def hub() -> Iterator[HubLookalike]:
    with HubLookalike() as server:
        server.data.full_tokens.add(FILE_TOKEN)
        yield server


# -- where the token and the cache are -----------------------------------------------------------------------

# (name, variables, token files to create relative to the case folder, expected token, expected cache folder)
# Paths in values start with '@' = the case folder.
CASES: list[tuple[str, dict[str, str], dict[str, str], str | None, str]] = [
    ("HF_TOKEN first", {"HF_TOKEN": ENV_TOKEN, "HUGGING_FACE_HUB_TOKEN": LEGACY_TOKEN, "HF_HOME": "@/home"},
     {"home/token": FILE_TOKEN}, ENV_TOKEN, "@/home/hub"),
    ("legacy variable next", {"HUGGING_FACE_HUB_TOKEN": LEGACY_TOKEN, "HF_HOME": "@/home"},
     {"home/token": FILE_TOKEN}, LEGACY_TOKEN, "@/home/hub"),
    ("empty HF_TOKEN is unset", {"HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": LEGACY_TOKEN}, {}, LEGACY_TOKEN,
     "@/xdg/huggingface/hub"),
    ("blank HF_TOKEN hides the legacy variable, then the file", {
        "HF_TOKEN": "  \n", "HUGGING_FACE_HUB_TOKEN": LEGACY_TOKEN, "HF_HOME": "@/home"},
     {"home/token": FILE_TOKEN}, FILE_TOKEN, "@/home/hub"),
    ("variable value stripped", {"HF_TOKEN": f"  {ENV_TOKEN}\r\n"}, {}, ENV_TOKEN, "@/xdg/huggingface/hub"),
    ("HF_HOME/token, line end stripped", {"HF_HOME": "@/home"}, {"home/token": f"{FILE_TOKEN}\r\n"}, FILE_TOKEN,
     "@/home/hub"),
    ("HF_TOKEN_PATH beats HF_HOME/token", {"HF_HOME": "@/home", "HF_TOKEN_PATH": "@/elsewhere/tok"},
     {"home/token": ENV_TOKEN, "elsewhere/tok": f" {FILE_TOKEN} "}, FILE_TOKEN, "@/home/hub"),
    ("XDG_CACHE_HOME when HF_HOME is unset", {}, {"xdg/huggingface/token": FILE_TOKEN}, FILE_TOKEN,
     "@/xdg/huggingface/hub"),
    ("~/.cache without XDG_CACHE_HOME", {"XDG_CACHE_HOME": None}, {"user/.cache/huggingface/token": FILE_TOKEN},
     FILE_TOKEN, "@/user/.cache/huggingface/hub"),  # type: ignore[dict-item]
    ("empty file: no token", {"HF_HOME": "@/home"}, {"home/token": " \n"}, None, "@/home/hub"),
    ("no file: no token", {"HF_HOME": "@/home"}, {}, None, "@/home/hub"),
    ("HF_HUB_CACHE first", {"HF_HUB_CACHE": "@/c1", "HUGGINGFACE_HUB_CACHE": "@/c2", "HF_HOME": "@/home"}, {},
     None, "@/c1"),
    ("legacy HUGGINGFACE_HUB_CACHE next", {"HUGGINGFACE_HUB_CACHE": "@/c2", "HF_HOME": "@/home"}, {}, None,
     "@/c2"),
]

_PROBE = """
import importlib, json, os, sys
cases = json.load(sys.stdin)
from huggingface_hub import constants
from huggingface_hub.utils import _auth
out = []
base = dict(os.environ)
for env in cases:
    os.environ.clear()
    os.environ.update({k: v for k, v in {**base, **env}.items() if v is not None})
    importlib.reload(constants)
    out.append([_auth.get_token(), constants.HF_HUB_CACHE])
print(json.dumps(out))
"""


def _case_env(folder: Path, variables: dict[str, str | None]) -> dict[str, str | None]:
    base: dict[str, str | None] = {"HOME": str(folder / "user"), "XDG_CACHE_HOME": str(folder / "xdg"),
                                   "HF_TOKEN": None, "HUGGING_FACE_HUB_TOKEN": None, "HF_TOKEN_PATH": None,
                                   "HF_HOME": None, "HF_HUB_CACHE": None, "HUGGINGFACE_HUB_CACHE": None}
    for key, value in variables.items():
        base[key] = value.replace("@", str(folder), 1) if isinstance(value, str) and value.startswith("@") else value
    return base


def test_token_and_cache_lookup_match_huggingface_hub(tmp_path: Path) -> None:
    envs = []
    for index, (_, variables, files, _, _) in enumerate(CASES):
        folder = tmp_path / f"case{index}"
        for rel, text in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text, encoding="utf-8")
        envs.append(_case_env(folder, variables))
    proc = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(envs), capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)
    for index, ((name, _, _, token, cache), env, (their_token, their_cache)) in enumerate(
            zip(CASES, envs, theirs, strict=True)):
        folder = tmp_path / f"case{index}"
        plain = {k: v for k, v in env.items() if v is not None}
        ours = hf_token.lookup("HF_TOKEN", env=plain)
        expected_cache = Path(cache.replace("@", str(folder), 1))
        assert (ours.value, hf_cache_dir(plain)) == (token, expected_cache), name
        assert (their_token, Path(their_cache)) == (token, expected_cache), f"huggingface_hub disagrees: {name}"


def test_a_token_from_the_file_is_masked_like_a_variable(tmp_path: Path) -> None:
    secret = "hf_OnlyEverInAFile_0123456789abcdef/+="
    (tmp_path / "token").write_text(secret + "\n", encoding="utf-8")
    found = hf_token.lookup(None, env={"HF_TOKEN_PATH": str(tmp_path / "token")})
    assert found.value == secret and found.origin == f"the token file {tmp_path / 'token'}"
    assert secret not in redact(f"GET https://cdn/x?y={secret} and {secret.replace('/', '%2F')}")


def _configure(mf: Modfetch, hub: HubLookalike, **placement: Any) -> None:
    mf.write_config(general={"download_root": str(mf.dest)}, sources={"huggingface": {"endpoint": hub.url}},
                    **({"placement": placement} if placement else {}))


def _files_under(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_stored_token_opens_a_gated_repo_and_is_never_shown_or_stored(
        mf: Modfetch, hub: HubLookalike, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    (hf_home / "token").write_text(FILE_TOKEN + "\n", encoding="utf-8")  # as `hf auth login` stores it
    monkeypatch.setenv("HF_HOME", str(hf_home))
    _configure(mf, hub)
    before_hub, before_cdn = len(hub.hub.requests()), len(hub.cdn.requests())
    ok = mf.run("--log-level", "debug", "download", "--url", "hf://acme/gated-model", "--dest", str(mf.dest))
    assert ok.returncode == 0, ok.stderr
    assert (mf.dest / "model.safetensors").stat().st_size == 120_000
    hub_seen = hub.hub.requests()[before_hub:]
    assert hub_seen and all(r.headers.get("authorization") == f"Bearer {FILE_TOKEN}" for r in hub_seen)
    cdn_seen = hub.cdn.requests()[before_cdn:]
    assert cdn_seen and not any("authorization" in r.headers or FILE_TOKEN in r.target for r in cdn_seen)
    # A token the Hub refuses: the error names the file, never the token.
    bad = "hf_RefusedTokenInTheFile0123456789"
    (hf_home / "token").write_text(bad, encoding="utf-8")
    refused = mf.run("--log-level", "debug", "download", "--url", "hf://acme/gated-model/README.md")
    assert refused.returncode != 0
    (line,) = error_lines(refused.stderr)  # (debug level also logs the traceback: it is redacted too)
    assert f"the Hub rejected the token in the token file {hf_home / 'token'}" in line
    outputs = ok.stdout + ok.stderr + refused.stdout + refused.stderr
    assert "GET" in outputs or "HEAD" in outputs  # debug lines were really written
    for needle in (FILE_TOKEN, bad):
        assert needle not in outputs
        for path in _files_under(tmp_path):
            if path != hf_home / "token":
                assert needle.encode() not in path.read_bytes(), f"{needle} in {path}"
    assert any(p.name == "state.db" for p in _files_under(tmp_path))


@pytest.mark.parametrize("kind", ["directory", "fifo", "not utf-8", "huge"])
def test_unreadable_token_file_is_one_clear_line(mf: Modfetch, hub: HubLookalike, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    path = tmp_path / "token"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # would block a plain open() for ever
    else:
        path.write_bytes(b"\xff\xfe\x00hf" if kind == "not utf-8" else b"x" * (hf_token.MAX_TOKEN_FILE + 1))
    monkeypatch.setenv("HF_TOKEN_PATH", str(path))
    _configure(mf, hub)
    result = mf.run("download", "--url", "hf://acme/tiny-model/config.json", "--dest", str(mf.dest))
    assert result.returncode == 2
    assert_clean_error(result.stderr, "token file", str(path))
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)  # a variable wins: the file is not even read
    assert mf.download("hf://acme/tiny-model/config.json").exit_code == 0


def test_dev_null_as_token_file_means_no_token(tmp_path: Path) -> None:
    assert hf_token.lookup(None, env={"HF_TOKEN_PATH": os.devnull}) == hf_token.HfToken(None, None)


# -- the HF cache, as huggingface_hub writes it ------------------------------------------------------------

_OFFLINE = """
import json, sys
import huggingface_hub as h
out = []
for op, arg in json.loads(sys.argv[1]):
    try:
        if op == "snapshot":
            out.append(["ok", h.snapshot_download("acme/tiny-model", allow_patterns=arg, local_files_only=True)])
        else:
            out.append(["ok", h.hf_hub_download("acme/tiny-model", arg, local_files_only=True)])
    except Exception as exc:
        out.append(["error", type(exc).__name__])
print(json.dumps(out))
"""


def _offline(cache: Path, ops: list[tuple[str, Any]]) -> list[list[str]]:
    env = {**os.environ, **HF_QUIET, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-c", _OFFLINE, json.dumps(ops)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def _their_cache(hub: HubLookalike, cache: Path, allow: str | None) -> Path:
    env = {**os.environ, **HF_QUIET, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache)}
    code = f"import huggingface_hub as h; print(h.snapshot_download('acme/tiny-model', allow_patterns={allow!r}))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return cache / "models--acme--tiny-model"


def test_whole_repo_placement_is_read_offline_and_matches_the_clients_own_cache(
        mf: Modfetch, hub: HubLookalike, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "legacy-cache"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(cache))  # the legacy variable picks the preset's base
    _configure(mf, hub, apps={"hf": {"preset": "hf-cache"}})
    result = mf.download("hf://acme/tiny-model", "--place")
    assert result.exit_code == 0, result.output
    repo = cache / "models--acme--tiny-model"
    commit = (repo / "refs" / "main").read_text(encoding="utf-8")
    tag = (cache / "CACHEDIR.TAG").read_text(encoding="utf-8")
    assert tag.splitlines()[0] == "Signature: 8a477f597d28d172789f06886806bc55" and tag == CACHEDIR_TAG
    ours = json.loads((repo / "trees" / f"{commit}.json").read_text(encoding="utf-8"))
    theirs_repo = _their_cache(hub, tmp_path / "their-cache", None)
    theirs = json.loads((theirs_repo / "trees" / f"{commit}.json").read_text(encoding="utf-8"))
    assert ours == theirs and ours["format_version"] == 1 and len(ours["files"]) == 5
    assert (tmp_path / "their-cache" / "CACHEDIR.TAG").read_text(encoding="utf-8") == tag
    assert not list(cache.rglob("*.tmp"))
    (snap, single) = _offline(cache, [("snapshot", None), ("file", "weights/model.safetensors")])
    assert snap[0] == "ok" and Path(snap[1]) == repo / "snapshots" / commit
    assert single == ["ok", str(repo / "snapshots" / commit / "weights" / "model.safetensors")]
    assert Path(single[1]).read_bytes() == (mf.dest / "weights" / "model.safetensors").read_bytes()


def test_partial_snapshot_is_partial_offline_as_in_the_clients_own_cache(
        mf: Modfetch, hub: HubLookalike, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _configure(mf, hub, apps={"hf": {"preset": "hf-cache", "base": str(cache)}})
    assert mf.download("hf://acme/tiny-model?include=weights/*", "--place").exit_code == 0
    theirs = _their_cache(hub, tmp_path / "their-cache", "weights/*").parent
    ops: list[tuple[str, Any]] = [("snapshot", None), ("snapshot", "weights/*"), ("snapshot", "*.json"),
                                  ("file", "weights/model.bin"), ("file", "config.json")]
    ours_result = _offline(cache, ops)
    theirs_result = _offline(theirs, ops)
    assert [r[0] if r[0] == "ok" else r[1] for r in ours_result] == \
           [r[0] if r[0] == "ok" else r[1] for r in theirs_result] == \
           ["IncompleteSnapshotError", "ok", "IncompleteSnapshotError", "ok", "LocalEntryNotFoundError"]


def test_cache_files_never_replace_or_follow_what_is_there(mf: Modfetch, hub: HubLookalike, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    outside = tmp_path / "outside"
    (cache / "CACHEDIR.TAG").symlink_to(outside)  # planted: must not be written through
    _configure(mf, hub, apps={"hf": {"preset": "hf-cache", "base": str(cache)}})
    assert mf.download("hf://acme/tiny-model/config.json", "--place").exit_code == 0
    assert not outside.exists() and (cache / "CACHEDIR.TAG").is_symlink()
    repo = cache / "models--acme--tiny-model"
    assert (repo / "snapshots").is_dir() and not (repo / "trees").exists()  # one file: no repo listing


def test_listing_document_keeps_what_the_client_reads() -> None:
    sha, oid, xet = "a" * 64, "b" * 40, "c" * 64
    doc = hf_tree.listing([
        {"type": "file", "path": "z.safetensors", "size": 9, "oid": oid, "lfs": {"oid": sha, "size": 9},
         "xetHash": xet},
        {"type": "file", "path": "a.json", "size": 2, "oid": oid, "xetHash": "not-hex"},
        {"type": "file", "path": "bad-size.txt", "size": "2", "oid": oid},
    ])
    assert list(doc["files"]) == ["a.json", "z.safetensors"]  # sorted, unusable entries left out
    assert doc["files"]["z.safetensors"] == {"size": 9, "blob_id": oid, "lfs_sha256": sha, "lfs_size": 9,
                                             "xet_hash": xet}
    assert doc["files"]["a.json"] == {"size": 2, "blob_id": oid}  # an invalid xet hash would void the listing
