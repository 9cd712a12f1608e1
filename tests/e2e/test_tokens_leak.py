"""Tokens go only to their own source's host and never appear in output, logs, files or the state DB.

The look-alike CDN and storage hosts record every request's headers; a debug-level run with HF_TOKEN and
CIVITAI_TOKEN set (in-process, as JSON logs, and as a real subprocess) leaves no trace of either token under
the test's HOME, data and download directories or on stdout/stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Modfetch
from tests.servers.lookalike.civitai import GOOD_TOKEN as CIVITAI_GOOD
from tests.servers.lookalike.civitai import CivitaiLookalike
from tests.servers.lookalike.hub import GOOD_TOKEN as HF_GOOD
from tests.servers.lookalike.hub import HubLookalike

URIS = [
    "hf://acme/gated-model/model.safetensors",  # LFS via CDN; the Hub needs the token
    "hf://acme/private-model?include=*.gguf",  # whole-repo path: the engine follows the Hub's redirect
    "hf://gpt2/README.md?rev=main",  # regular file served by the Hub itself (auth allowed)
    "civitai://model/5500",  # login-only file: token to CivitAI, not to storage
]


@pytest.fixture
def servers() -> Iterator[tuple[HubLookalike, CivitaiLookalike]]:
    with HubLookalike() as hub, CivitaiLookalike() as civ:
        yield hub, civ


@pytest.fixture
def tokens(
    mf: Modfetch, servers: tuple[HubLookalike, CivitaiLookalike], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, civ = servers
    mf.write_config(
        general={"download_root": str(mf.dest), "data_root": str(mf.state_db.parent)},
        sources={"huggingface": {"endpoint": hub.url}, "civitai": {"endpoint": civ.url}},
        logging={"level": "debug"},
    )
    monkeypatch.setenv("HF_TOKEN", HF_GOOD)
    monkeypatch.setenv("CIVITAI_TOKEN", CIVITAI_GOOD)


def assert_no_token_anywhere(root: Path, *texts: str) -> None:
    for text in texts:
        assert HF_GOOD not in text and CIVITAI_GOOD not in text
    secrets = (HF_GOOD.encode(), CIVITAI_GOOD.encode())
    checked = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            blob = path.read_bytes()
            checked += 1
            assert not any(s in blob for s in secrets), f"token found in {path}"
    assert checked >= 5  # the downloads, their .sha256 files and the state DB were really scanned


def assert_auth_only_on_source_hosts(hub: HubLookalike, civ: CivitaiLookalike) -> None:
    assert hub.cdn.requests() and civ.storage.requests()
    for record in [*hub.cdn.requests(), *civ.storage.requests()]:
        assert "authorization" not in record.headers, record
        assert HF_GOOD not in record.target and CIVITAI_GOOD not in record.target
    assert any(r.headers.get("authorization") == f"Bearer {HF_GOOD}" for r in hub.hub.requests())
    assert any(r.headers.get("authorization") == f"Bearer {CIVITAI_GOOD}" for r in civ.api.requests())
    assert not any(CIVITAI_GOOD in str(r.headers) for r in hub.hub.requests())
    assert not any(HF_GOOD in str(r.headers) for r in civ.api.requests())


@pytest.mark.usefixtures("tokens")
def test_debug_run_in_process(
    mf: Modfetch, servers: tuple[HubLookalike, CivitaiLookalike], tmp_path: Path
) -> None:
    hub, civ = servers
    outputs = []
    for uri in URIS:
        result = mf.cli("--log-level", "debug", "download", "--url", uri, "--dest", str(mf.dest))
        assert result.exit_code == 0, result.output
        outputs += [result.stdout, result.stderr]
    assert "DEBUG" in "".join(outputs)
    assert (mf.dest / "model.safetensors").exists() and (mf.dest / "model.gguf").exists()
    assert (mf.dest / "detail_tweaker.safetensors").exists()
    # An error path at debug level (a refused token and a missing file) leaks nothing either.
    result = mf.cli("--log-level", "debug", "download", "--url", "hf://acme/gated-model/missing.bin")
    assert result.exit_code == 1
    outputs += [result.stdout, result.stderr]
    assert_auth_only_on_source_hosts(hub, civ)
    assert_no_token_anywhere(tmp_path, *outputs)


@pytest.mark.usefixtures("tokens")
def test_json_logs(mf: Modfetch, tmp_path: Path) -> None:
    result = mf.cli("--log-level", "debug", "--json", "download", "--url", URIS[0], "--dest", str(mf.dest))
    assert result.exit_code == 0, result.output
    assert_no_token_anywhere(tmp_path, result.stdout, result.stderr)


@pytest.mark.usefixtures("tokens")
def test_debug_run_as_a_real_process(
    mf: Modfetch, servers: tuple[HubLookalike, CivitaiLookalike], tmp_path: Path
) -> None:
    hub, civ = servers
    proc = mf.run(
        "--log-level",
        "debug",
        "download",
        "--url",
        URIS[0],
        "--url",
        URIS[3],
        "--url",
        URIS[2],
        "--dest",
        str(mf.dest),
    )
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" in proc.stderr and str(mf.dest / "README.md") in proc.stdout
    assert_auth_only_on_source_hosts(hub, civ)
    assert_no_token_anywhere(tmp_path, proc.stdout, proc.stderr)


def test_token_in_a_pasted_url_is_not_stored(
    mf: Modfetch, servers: tuple[HubLookalike, CivitaiLookalike], tmp_path: Path
) -> None:
    _, civ = servers
    mf.write_config(
        general={"download_root": str(mf.dest), "data_root": str(mf.state_db.parent)},
        sources={"civitai": {"endpoint": civ.url}},
    )
    secret = "pastedSecretToken987654321"
    result = mf.cli(
        "--log-level",
        "debug",
        "download",
        "--url",
        f"{civ.url}/api/download/models/130072?type=Model&format=SafeTensor&token={secret}",
        "--dest",
        str(mf.dest),
    )
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    assert not any(secret.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
