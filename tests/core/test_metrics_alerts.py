"""Issue 16 items 2 and 3: the textfile is rewritten after every run (early failures, verify) and passes
prometheus_client's parser and ``promtool check metrics``; the shipped alert rules pass ``promtool check rules``
and their unit tests (``promtool test rules``: each alert fires when it should and stays quiet on an interrupt)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modfetch import metrics
from modfetch.errors import ERROR_CLASSES
from tests.conftest import MiB, Modfetch
from tests.servers.faulty import FaultyServer

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "modfetch-rules.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "modfetch-rules.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus; "
                                                             "scripts/test installs it when run as root)")


def enable(mf: Modfetch) -> Path:
    prom = mf.home / "textfiles" / "modfetch.prom"
    mf.write_config(metrics={"prometheus_textfile": {"enabled": True, "path": str(prom)}})
    return prom


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def promtool_check(text: str) -> None:
    if PROMTOOL is None:
        return
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_run_that_fails_before_any_download_still_writes_a_valid_textfile(
        mf: Modfetch, faulty_server: type[FaultyServer]) -> None:
    prom = enable(mf)
    server = faulty_server(size=MiB, error_status=404, error_times=None, include_probe=True)
    done = mf.run("download", "--quiet", "--dest", str(mf.dest), server.url)
    assert done.returncode == 1
    text = prom.read_text()
    promtool_check(text)
    got = values(text)
    assert got[("modfetch_downloads_failed_total", (("reason", "not_found"), ("source", "http")))] == 1
    assert got[("modfetch_downloads_interrupted_total", (("source", "http"),))] == 0
    assert got[("modfetch_last_failure_timestamp_seconds", ())] > 0
    assert got[("modfetch_verify_mismatches", ())] == 0
    # Every source x reason series exists from the start, so increase() sees the first failure of a kind.
    failed = {labels for (name, labels) in got if name == "modfetch_downloads_failed_total"}
    assert len(failed) == len(ERROR_CLASSES) * len(metrics.KNOWN_SOURCES)


def test_a_resolver_failure_rewrites_the_textfile(mf: Modfetch) -> None:
    prom = enable(mf)
    mf.write_config(metrics=mf.config["metrics"], sources={"huggingface": {"endpoint": "http://127.0.0.1:9"}})
    done = mf.run("download", "--quiet", "hf://acme/model/x.safetensors")
    assert done.returncode == 1
    got = values(prom.read_text())
    assert got[("modfetch_downloads_failed_total", (("reason", "unreachable"), ("source", "huggingface")))] == 1


def test_verify_rewrites_the_textfile_with_the_mismatch_gauge(mf: Modfetch,
                                                             faulty_server: type[FaultyServer]) -> None:
    prom = enable(mf)
    server = faulty_server(size=MiB)
    assert mf.run("download", "--quiet", "--dest", str(mf.dest), server.url).returncode == 0
    path = mf.dest / "file.bin"
    with path.open("r+b") as handle:
        handle.write(b"X")
    prom.unlink()
    done = mf.run("verify", "--all")
    assert done.returncode == 1
    text = prom.read_text()
    promtool_check(text)
    assert values(text)[("modfetch_verify_mismatches", ())] == 1
    assert values(text)[("modfetch_downloads_succeeded_total", (("source", "http"),))] == 1


@needs_promtool
def test_alert_rules_are_valid() -> None:
    done = subprocess.run([str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 rules found" in done.stdout


@needs_promtool
def test_alert_rule_unit_tests_pass() -> None:
    done = subprocess.run([str(PROMTOOL), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                          timeout=120, check=False, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_rule_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests are not vacuous: a failure rule that also counted interrupts makes them fail."""
    broken = RULES.read_text().replace("increase(modfetch_downloads_failed_total[1h]) > 0",
                                       "increase({__name__=~\"modfetch_downloads_(failed|interrupted)_total\"}[1h])"
                                       " > 0")
    assert broken != RULES.read_text()
    (tmp_path / "modfetch-rules.yml").write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = subprocess.run([str(PROMTOOL), "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    assert done.returncode != 0
