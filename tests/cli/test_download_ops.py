"""Issue 16 items 4-7 through the installed ``modfetch``: several URIs continue past a failure, ``-i FILE``
URI lists, ``--dry-run`` and ``--json`` on every stderr line."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MiB, Modfetch, assert_clean_error, error_lines, wait_for
from tests.servers.faulty import FaultyServer
from tests.servers.lookalike import pseudo_random_bytes
from tests.servers.lookalike.civitai import CivitaiLookalike
from tests.servers.lookalike.hub import HubLookalike


def test_three_urls_with_the_middle_one_404_fetch_two_and_exit_1(mf: Modfetch,
                                                                 faulty_server: type[FaultyServer]) -> None:
    good = faulty_server(size=MiB)
    bad = faulty_server(size=MiB, error_status=404, error_times=None, include_probe=True)
    done = mf.run("download", "--quiet", "--dest", str(mf.dest), good.url_for("/a.bin"), bad.url_for("/b.bin"),
                  good.url_for("/c.bin"))
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in mf.dest.iterdir() if p.suffix == ".bin") == ["a.bin", "c.bin"]
    errors = error_lines(done.stderr)
    assert len(errors) == 2, done.stderr
    assert "404" in errors[0] and "b.bin" in errors[0]
    assert errors[1] == "modfetch: error: 2 of 3 downloads succeeded"
    assert "Traceback" not in done.stderr
    assert len(done.stdout.strip().splitlines()) == 4  # path + sha256 line for each of the two files


def test_several_urls_that_all_succeed_exit_0_with_a_summary(mf: Modfetch,
                                                             faulty_server: type[FaultyServer]) -> None:
    good = faulty_server(size=MiB)
    done = mf.run("download", "--dest", str(mf.dest), good.url_for("/a.bin"), good.url_for("/b.bin"))
    assert done.returncode == 0, done.stderr
    assert "2 of 2 downloads succeeded" in done.stderr


def test_input_file_with_comments_and_blank_lines(mf: Modfetch, faulty_server: type[FaultyServer],
                                                  tmp_path: Path) -> None:
    good = faulty_server(size=MiB)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# nightly models\n\n{good.url_for('/one.bin')}\n   # indented comment\n"
                       f"{good.url_for('/two.bin')}  \n\n")
    done = mf.run("download", "--quiet", "-i", str(listing), "--dest", str(mf.dest / "sub"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (mf.dest / "sub").glob("*.bin")) == ["one.bin", "two.bin"]


def test_input_file_from_a_pipe_combines_with_urls_on_the_command_line(mf: Modfetch,
                                                                       faulty_server: type[FaultyServer]) -> None:
    good = faulty_server(size=MiB)
    done = subprocess.run(mf.command("download", "--quiet", "--json", "--dest", str(mf.dest), "--input-file", "-",
                                     good.url_for("/argv.bin")),
                          input=f"{good.url_for('/piped.bin')}\n", capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    paths = sorted(Path(json.loads(line)["path"]).name for line in done.stdout.splitlines())
    assert paths == ["argv.bin", "piped.bin"]


@pytest.mark.parametrize(("content", "needle"), [
    (None, "cannot read --input-file"),
    (b"\x00\x01binary", "binary file"),
    (b"\xff\xfe not utf8", "not UTF-8"),
    (b"http://127.0.0.1:9/x\n  dir=/tmp\n", ":2: indented option lines"),
    (b"http://127.0.0.1:9/x http://127.0.0.1:9/y\n", ":1: one URI per line"),
    (b"# only comments\n\n", "lists no URIs"),
])
def test_a_bad_input_file_is_one_clear_line(mf: Modfetch, tmp_path: Path, content: bytes | None,
                                            needle: str) -> None:
    listing = tmp_path / "list.txt"
    if content is not None:
        listing.write_bytes(content)
    done = mf.run("download", "-i", str(listing))
    assert done.returncode == 2
    assert_clean_error(done.stderr, needle)
    assert not mf.dest.exists() or not any(mf.dest.iterdir())


def test_input_file_and_batch_do_not_mix(mf: Modfetch, tmp_path: Path) -> None:
    (tmp_path / "jobs.yml").write_text("jobs: []\n")
    (tmp_path / "list.txt").write_text("http://127.0.0.1:9/x\n")
    done = mf.run("download", "-i", str(tmp_path / "list.txt"), "--batch", str(tmp_path / "jobs.yml"))
    assert done.returncode == 2
    assert_clean_error(done.stderr, "--input-file cannot be combined with --batch")


# -- item 6: --dry-run -------------------------------------------------------------------------------------


def test_dry_run_http_probes_only_and_writes_nothing(mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    server = faulty_server(size=3 * MiB, path="/model.safetensors")
    done = mf.run("download", "--dry-run", "--json", "--dest", str(mf.dest), server.url)
    assert done.returncode == 0, done.stderr
    (item,) = json.loads(done.stdout)
    assert item["path"] == str(mf.dest / "model.safetensors")
    assert (item["name"], item["size"], item["state"], item["source"]) == ("model.safetensors", 3 * MiB,
                                                                            "absent", "http")
    assert item["url"] == server.url and item["sha256"] is None
    # The server sent no body bytes beyond a bytes=0-0 probe; nothing was written anywhere.
    data = [r for r in server.requests if r.method == "GET"]
    assert all(r.is_probe for r in data), [(r.range_start, r.range_end) for r in data]
    assert sum(r.bytes_sent for r in data) <= 1
    assert not mf.dest.exists()
    assert not mf.state_db.exists()
    human = mf.run("download", "--dry-run", "--dest", str(mf.dest), server.url)
    assert human.returncode == 0
    assert f"path    {mf.dest / 'model.safetensors'}  [absent]" in human.stdout
    assert "3.0 MiB, 3145728 bytes" in human.stdout


def test_dry_run_says_present_after_a_real_download_and_keeps_the_state_untouched(
        mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    server = faulty_server(size=MiB)
    assert mf.run("download", "--quiet", "--dest", str(mf.dest), server.url).returncode == 0
    before = mf.rows()
    done = mf.run("download", "--dry-run", "--json", "--dest", str(mf.dest), server.url)
    assert json.loads(done.stdout)[0]["state"] == "present"
    assert mf.rows() == before
    (mf.dest / "file.bin").write_bytes(b"other bytes")
    done = mf.run("download", "--dry-run", "--json", "--dest", str(mf.dest), server.url)
    assert json.loads(done.stdout)[0]["state"] == "conflict"


def test_dry_run_hf_whole_repo_lists_every_file_without_touching_the_cdn(mf: Modfetch, tmp_path: Path) -> None:
    with HubLookalike() as hub:
        mf.write_config(sources={"huggingface": {"endpoint": hub.url}})
        done = mf.run("download", "--dry-run", "--json", "--dest", str(mf.dest), "hf://acme/tiny-model")
        assert done.returncode == 0, done.stderr
        items = {Path(i["path"]).relative_to(mf.dest).as_posix(): i for i in json.loads(done.stdout)}
        assert hub.cdn.requests() == []
    assert len(items) == 5
    weights = [v for k, v in items.items() if k.endswith("weights/model.safetensors")]
    assert len(weights) == 1 and weights[0]["size"] == 1_200_000
    assert weights[0]["sha256"] == hashlib.sha256(pseudo_random_bytes("tiny-st", 1_200_000)).hexdigest()
    assert all(i["state"] == "absent" and i["source"] == "huggingface" for i in items.values())
    assert not mf.dest.exists() and not mf.state_db.exists()


def test_dry_run_civitai_with_place_names_the_placements(mf: Modfetch, tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    with CivitaiLookalike() as civ:
        mf.write_config(sources={"civitai": {"endpoint": civ.url}},
                        placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)}}})
        done = mf.run("download", "--dry-run", "--place", "--json", "--dest", str(mf.dest),
                      "civitai://model/4201?version=130072")
    assert done.returncode == 0, done.stderr
    (item,) = json.loads(done.stdout)
    assert item["name"] == "realisticVision_v60B1.safetensors" and item["size"] == 400_000
    assert item["sha256"] and len(item["sha256"]) == 64
    assert item["path"].startswith(str(mf.dest))
    assert item["placements"] and item["placements"][0]["app"] == "comfyui"
    assert item["placements"][0]["target"].startswith(str(comfy / "models" / "checkpoints"))
    assert not mf.dest.exists() and not mf.state_db.exists() and list(comfy.iterdir()) == []


# -- item 7: --json everywhere -----------------------------------------------------------------------------


def json_lines(stderr: str) -> list[dict[str, object]]:
    """Every stderr line parsed; each must be one JSON object with ts, level, msg and logger."""
    out = []
    for line in stderr.splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        assert {"ts", "level", "msg", "logger"} <= set(obj), line
        out.append(obj)
    return out


@pytest.mark.parametrize("case", ["404", "several", "usage", "bad-option", "config", "status-id", "input-file"])
def test_every_stderr_line_is_json_with_ts_and_logger(mf: Modfetch, faulty_server: type[FaultyServer],
                                                     tmp_path: Path, case: str) -> None:
    good = faulty_server(size=MiB)
    bad = faulty_server(size=MiB, error_status=404, error_times=None, include_probe=True)
    args = {
        "404": ["download", bad.url],
        "several": ["download", good.url_for("/a.bin"), bad.url_for("/b.bin")],
        "usage": ["download", "notaurl"],
        "bad-option": ["download", "--concurrency", "0", good.url],
        "config": ["--config", str(tmp_path / "missing.yml"), "download", good.url],
        "status-id": ["status", "424242"],
        "input-file": ["download", "-i", str(tmp_path / "nope.txt")],
    }[case]
    done = mf.run("--json", *args)
    assert done.returncode in (1, 2), done.stderr
    lines = json_lines(done.stderr)
    final = lines[-1]
    assert final["level"] == "error" and final["exit_code"] == done.returncode and final["logger"] == "modfetch"
    assert str(final["ts"]).endswith("Z")


def test_sigterm_with_json_is_a_json_line(mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    import signal

    server = faulty_server(size=4 * MiB, hold=True)
    proc = mf.popen("--json", "download", "--dest", str(mf.dest), server.url)
    try:
        wait_for(lambda: any(r["status"] == "running" for r in mf.rows()), "a running row", proc)
        proc.send_signal(signal.SIGTERM)
        server.release()
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    final = json_lines(err)[-1]
    assert final["exit_code"] == 130 and "interrupted" in str(final["msg"])


def test_verify_json_prints_json_results(mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    server = faulty_server(size=MiB)
    assert mf.run("download", "--quiet", "--dest", str(mf.dest), server.url).returncode == 0
    ok = mf.run("verify", "--all", "--json")
    assert ok.returncode == 0, ok.stderr
    (result,) = json.loads(ok.stdout)
    assert result["ok"] is True and result["path"] == str(mf.dest / "file.bin") and result["message"] == "ok"
    with (mf.dest / "file.bin").open("r+b") as handle:
        handle.write(b"X")
    bad = mf.run("verify", "--all", "--json")
    assert bad.returncode == 1
    (result,) = json.loads(bad.stdout)
    assert result["ok"] is False and result["sha256"] != result["expected"]
    assert json_lines(bad.stderr)[-1]["level"] == "error"


# -- item 10: single-stream honesty ------------------------------------------------------------------------


def test_a_server_without_ranges_says_it_cannot_resume_and_status_shows_the_bytes_on_disk(
        mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    import signal

    server = faulty_server(size=3 * MiB, ranges=False, rate=1 * MiB)
    part = mf.dest / "file.bin.part"
    proc = mf.popen("download", "--dest", str(mf.dest), server.url)
    try:
        # While it runs, the row follows the .part (checkpointed about once a second), not 0.
        wait_for(lambda: any(r["bytes_done"] > 0 for r in mf.rows()), "bytes_done to move", proc)
        (row,) = mf.rows()
        assert 0 < row["bytes_done"] <= part.stat().st_size
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    (row,) = mf.status()
    on_disk = part.stat().st_size
    assert row["status"] == "interrupted" and row["bytes_done"] == on_disk > 0
    table = mf.run("status").stdout
    assert f"{on_disk / (3 * MiB) * 100:.1f}%" in table and " 0.0%" not in table

    server.configure(rate=None)
    rerun = mf.run("download", "--dest", str(mf.dest), server.url)
    assert rerun.returncode == 0, rerun.stderr
    lines = rerun.stderr.splitlines()
    said = [i for i, line in enumerate(lines) if "this server cannot resume; starting again from 0" in line]
    started = [i for i, line in enumerate(lines) if "as a single stream" in line]
    assert said and started and said[0] < started[0], rerun.stderr
    assert f"{on_disk} bytes on disk are discarded" in lines[said[0]]
    assert (mf.dest / "file.bin").stat().st_size == 3 * MiB


def test_input_file_combines_with_place_and_type(mf: Modfetch, faulty_server: type[FaultyServer],
                                                 tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    comfy.mkdir()
    mf.write_config(placement={"apps": {"comfyui": {"preset": "comfyui", "base": str(comfy)}}})
    good = faulty_server(size=MiB)
    listing = tmp_path / "loras.txt"
    listing.write_text(f"# two LoRAs\n{good.url_for('/a.safetensors')}\n{good.url_for('/b.safetensors')}\n")
    done = mf.run("download", "--quiet", "-i", str(listing), "--place", "--type", "sd.lora",
                  "--dest", str(mf.dest))
    assert done.returncode == 0, done.stderr
    for name in ("a.safetensors", "b.safetensors"):
        assert (comfy / "models" / "loras" / name).resolve() == (mf.dest / name).resolve()
