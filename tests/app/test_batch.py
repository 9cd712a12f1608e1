"""Batch runs against a real local server: up-front validation naming job index and key, bounded parallel
jobs where one failure does not stop the others, a non-zero exit, idempotent reruns, and --place."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modfetch.app.batch import BatchError, parse_batch
from tests.conftest import Modfetch, assert_clean_error
from tests.servers.faulty import FaultyServer


def _config(mf: Modfetch, tmp_path: Path, apps: dict[str, Any] | None = None, **extra: Any) -> None:
    sections: dict[str, Any] = {
        "general": {"download_root": str(mf.dest), "data_root": str(mf.home / ".local/share/modfetch")},
        "concurrency": {"batch_parallel_files": 2},
        **extra,
    }
    if apps is not None:
        sections["placement"] = {"apps": apps}
    mf.write_config(**sections)


def _batch(tmp_path: Path, jobs: Any) -> Path:
    path = tmp_path / "jobs.yml"
    path.write_text(yaml.safe_dump({"jobs": jobs}) if not isinstance(jobs, str) else jobs, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "needle"), [
    ("jobs: [{uri: 'http://h/a'}, {dest: /tmp}]", "jobs[1].uri: is required"),
    ("jobs: [{uri: 'http://h/a', sha256: abc}]", "jobs[0].sha256: must be 64 hex digits"),
    ("jobs: [{uri: 'http://h/a'}, {uri: 'http://h/b', type: sd.nope}]", "jobs[1].type: unknown type"),
    ("jobs: [{uri: 'http://h/a', place: 'yes'}]", "jobs[0].place: must be true or false"),
    ("jobs: [{uri: 'http://h/a', name: '../x.bin'}]", "jobs[0].name: must be a plain file name"),
    ("jobs: [{uri: 'http://h/a', colour: red}]", "jobs[0].colour: unknown key"),
    ("jobs: [{uri: 'ftp://h/a'}]", "jobs[0].uri: unsupported URI"),
    ("jobs: [{uri: 42}]", "jobs[0].uri: must be a non-empty string"),
    ("jobs: [[1, 2]]", "jobs[0]: must be a mapping"),
    ("jobs: []", "jobs: must be a non-empty list"),
    ("- {uri: 'http://h/a'}", "top level"),
    ("jobs: [{uri: 'http://h/a'}]\nextra: 1", "extra: unknown key"),
    ("jobs: [{uri: 'http://h/a'\n", "invalid YAML"),
])
def test_validation_names_job_index_and_key(text: str, needle: str) -> None:
    with pytest.raises(BatchError) as info:
        parse_batch(text, "jobs.yml")
    assert info.value.message.startswith("jobs.yml: ")
    assert needle in info.value.message


def test_valid_batch_parses_every_field(tmp_path: Path) -> None:
    jobs = parse_batch(f"""
jobs:
  - uri: hf://owner/repo/file.safetensors
    dest: {tmp_path}/llm
    name: renamed.safetensors
    sha256: {"A" * 64}
    type: sd.lora
    place: true
  - https://example.com/x.bin
""", "jobs.yml")
    assert jobs[0].dest == tmp_path / "llm" and jobs[0].name == "renamed.safetensors"
    assert jobs[0].sha256 == "a" * 64 and jobs[0].artifact_type == "sd.lora" and jobs[0].place is True
    assert (jobs[1].index, jobs[1].uri, jobs[1].place) == (1, "https://example.com/x.bin", None)


def test_invalid_batch_downloads_nothing(mf: Modfetch, tmp_path: Path,
                                        faulty_server: Callable[..., FaultyServer]) -> None:
    server = faulty_server(size=64 << 10)
    _config(mf, tmp_path)
    jobs = [{"uri": server.url_for("/a.bin")}, {"uri": server.url_for("/b.bin"), "sha256": "x"}]
    path = _batch(tmp_path, jobs)
    result = mf.cli("download", "--quiet", "--batch", str(path))
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "jobs[1].sha256")
    assert server.mark() == 0  # not even a probe
    assert not mf.dest.exists() or not any(mf.dest.iterdir())


def test_failing_job_does_not_stop_others_and_rerun_fetches_nothing(
        mf: Modfetch, tmp_path: Path, faulty_server: Callable[..., FaultyServer]) -> None:
    """Done means: a failing job lets the others complete, exits non-zero; a rerun fetches nothing."""
    good = faulty_server(size=300 << 10)
    bad = faulty_server(size=1000, error_status=404, error_times=None, include_probe=True)
    _config(mf, tmp_path)
    jobs = [
        {"uri": good.url_for("/one.bin")},
        {"uri": bad.url_for("/missing.bin")},
        {"uri": good.url_for("/two.bin"), "name": "renamed.bin", "dest": str(tmp_path / "other"),
         "sha256": good.sha256()},
        {"uri": good.url_for("/three.bin")},
    ]
    path = _batch(tmp_path, jobs)
    result = mf.cli("download", "--quiet", "--batch", str(path))
    assert result.exit_code == 1, result.output
    assert_clean_error(result.stderr, "1 of 4 batch jobs failed")
    assert "3 of 4 jobs succeeded" in result.stdout
    assert "FAILED" in result.stdout and "missing.bin" in result.stdout
    content = good.content()
    host = mf.dest / f"127.0.0.1_{good.port}"  # jobs without a dest: the library layout (<host>_<port>/)
    for file in (host / "one.bin", tmp_path / "other" / "renamed.bin", host / "three.bin"):
        assert file.read_bytes() == content
    mark = good.mark()
    rerun = mf.cli("download", "--quiet", "--json", "--batch", str(path))
    assert rerun.exit_code == 1
    lines = [json.loads(line) for line in rerun.stdout.splitlines() if line.startswith("{")]
    assert [line["ok"] for line in lines] == [True, False, True, True]
    assert all(f["already_present"] and f["fetched_bytes"] == 0 for line in lines for f in line["files"])
    assert good.body_bytes(since=mark) == 0  # only probes: nothing already done is fetched again


def test_batch_place_per_job_and_type_override(mf: Modfetch, tmp_path: Path,
                                              faulty_server: Callable[..., FaultyServer]) -> None:
    server = faulty_server(size=100 << 10)
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    _config(mf, tmp_path, apps={"comfyui": {"preset": "comfyui", "base": str(comfy)}})
    path = _batch(tmp_path, [
        {"uri": server.url_for("/style.safetensors"), "type": "sd.lora", "place": True},
        {"uri": server.url_for("/vae.safetensors"), "type": "sd.vae"},                # place from --place
        {"uri": server.url_for("/keep.bin"), "type": "sd.vae", "place": False},
    ])
    result = mf.cli("download", "--quiet", "--batch", str(path), "--place")
    assert result.exit_code == 0, result.output
    library = mf.dest / f"127.0.0.1_{server.port}"  # no dest: the library layout
    assert os.readlink(comfy / "models/loras/style.safetensors") == str(library / "style.safetensors")
    assert (comfy / "models/vae/vae.safetensors").is_symlink()
    assert not (comfy / "models/vae/keep.bin").exists()
    again = mf.cli("download", "--quiet", "--json", "--batch", str(path), "--place")
    assert again.exit_code == 0, again.output
    first = json.loads(again.stdout.splitlines()[0])
    assert [t["action"] for t in first["placements"][0]["targets"]] == ["skipped"]  # placement re-checked


def test_download_place_end_to_end(mf: Modfetch, tmp_path: Path,
                                   faulty_server: Callable[..., FaultyServer]) -> None:
    server = faulty_server(size=100 << 10)
    comfy, a1111 = tmp_path / "ComfyUI", tmp_path / "sd-webui"
    comfy.mkdir()
    a1111.mkdir()
    _config(mf, tmp_path, apps={"comfyui": {"preset": "comfyui", "base": str(comfy)},
                                "a1111": {"preset": "a1111", "base": str(a1111)}})
    result = mf.download(server.url_for("/detail.safetensors"), "--place", "--type", "sd.lora")
    assert result.exit_code == 0, result.output
    final = mf.dest / "detail.safetensors"
    for link in (comfy / "models/loras/detail.safetensors", a1111 / "models/Lora/detail.safetensors"):
        assert os.readlink(link) == str(final)
    assert "comfyui" in result.stdout and "created" in result.stdout
    status = mf.status()
    assert status[0]["artifact_type"] == "sd.lora"
    assert {p["app"] for p in status[0]["placements"]} == {"comfyui", "a1111"}


def test_download_place_without_apps_fails_before_downloading(
        mf: Modfetch, tmp_path: Path, faulty_server: Callable[..., FaultyServer]) -> None:
    server = faulty_server(size=10 << 10)
    _config(mf, tmp_path)
    result = mf.download(server.url, "--place")
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "no apps configured")
    assert "placement:" in result.stderr
    assert server.mark() == 0


def test_batch_with_urls_is_a_usage_error(mf: Modfetch, tmp_path: Path) -> None:
    _config(mf, tmp_path)
    path = _batch(tmp_path, [{"uri": "http://127.0.0.1:9/x"}])
    result = mf.cli("download", "--batch", str(path), "http://127.0.0.1:9/y")
    assert result.exit_code == 2
    assert_clean_error(result.stderr, "--batch")
