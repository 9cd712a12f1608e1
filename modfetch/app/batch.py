"""Batch runs: a YAML list of download jobs, validated up front, run with bounded parallelism.

One failing job never stops the others; the summary says what happened to each.  A rerun is idempotent:
the engine turns an already finished, verified file into a no-op (its recorded stat stamp), and placement
re-checks each target (identical targets are skipped).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..artifacts import TYPES
from ..cancel import check_stop, wait_or_stop
from ..config import Config
from ..engine.download import DownloadResult
from ..engine.mirrors import check_mirrors
from ..errors import ModfetchError, UsageError
from ..metrics import checkpoint_writer
from ..paths import expand_path
from ..progress import ProgressListener
from ..state import open_state
from ..util.filenames import sanitize_filename
from ..util.redact import redact, redact_url
from ..util.yamltext import describe_value, load_yaml
from .download import DownloadOptions, download_uri
from .place import PlaceOptions, PlaceReport, configured_apps, place_download

log = logging.getLogger("modfetch.batch")
JOB_KEYS = ("uri", "dest", "name", "sha256", "type", "place", "metadata", "mirrors")
_SCHEMES = ("http://", "https://", "hf://", "civitai://")
MAX_BATCH_BYTES = 16 << 20  # ~100,000 jobs; more is a mistake like --batch /dev/zero, which must not eat memory
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)  # what os.path.expandvars expands


class BatchError(UsageError):
    """The batch file is missing, malformed, or a job is invalid (names the file, job index and key)."""


@dataclass(frozen=True)
class BatchJob:
    """One validated job; ``index`` is its 0-based position in ``jobs``."""

    index: int
    uri: str
    dest: Path | None = None
    name: str | None = None
    sha256: str | None = None
    artifact_type: str | None = None
    place: bool | None = None
    metadata: bool | None = None  # CivitAI sidecars; None: the run's --metadata, else general.metadata
    mirrors: tuple[str, ...] = ()  # other http(s) URLs serving the same file (like --mirror)


@dataclass
class JobOutcome:
    """What one job did: its downloads, its placements, or the error that stopped it."""

    job: BatchJob
    results: list[DownloadResult] = field(default_factory=list)
    placements: list[PlaceReport] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the download and every placement succeeded."""
        return self.error is None and not any(r.failed for r in self.placements)


@dataclass
class BatchSummary:
    """All job outcomes, in job order."""

    outcomes: list[JobOutcome]

    @property
    def failed(self) -> list[JobOutcome]:
        """Jobs that did not fully succeed."""
        return [o for o in self.outcomes if not o.ok]


def _fail(source: str, where: str, message: str) -> BatchError:
    where = where if where.isprintable() else repr(where)  # a key holding a newline must not split the line
    where = where if len(where) <= 100 else f"{where[:100]}..."  # a 1 MB key is not a useful message
    return BatchError(f"{source}: {where}: {message}",
                      hint="each job is a mapping with uri (required), dest, name, sha256, type, place, metadata, "
                      "mirrors; "
                      "see docs/PLACEMENT.md")


def parse_batch(text: str, source: str, base: Path | None = None) -> list[BatchJob]:
    """Parse and validate batch YAML; the first problem raises BatchError naming ``jobs[i].key``.

    A relative ``dest`` starts at ``base`` (the batch file's folder), else at the current directory."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise _fail(source, where, f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict) or "jobs" not in data:
        raise _fail(source, "top level", "must be a mapping with a 'jobs' list")
    extra = [str(k) for k in data if k != "jobs"]
    if extra:
        raise _fail(source, extra[0], "unknown key (only 'jobs' is allowed at the top level)")
    raw_jobs = data["jobs"]
    if not isinstance(raw_jobs, list) or not raw_jobs:
        raise _fail(source, "jobs", "must be a non-empty list")
    jobs = [_parse_job(source, i, raw, base) for i, raw in enumerate(raw_jobs)]
    _check_duplicates(source, jobs)
    return jobs


def _check_duplicates(source: str, jobs: list[BatchJob]) -> None:
    """Two jobs that would write the same file would race for it (one fails on the lock, or the later one
    finds "a different file" there): refuse them before anything downloads."""
    seen: dict[tuple[str, Path | None, str | None], int] = {}
    named: dict[tuple[Path | None, str], int] = {}
    for job in jobs:
        first = seen.setdefault((job.uri, job.dest, job.name), job.index)
        if first != job.index:
            raise _fail(source, f"jobs[{job.index}]", f"the same download as jobs[{first}] (same uri, dest, name)")
        if job.name is not None:
            first = named.setdefault((job.dest, job.name), job.index)
            if first != job.index:
                raise _fail(source, f"jobs[{job.index}].name",
                            f"jobs[{first}] already writes {job.name!r} to the same dest")


def _dest_path(source: str, where: str, value: str, base: Path | None) -> Path:
    """``dest`` with ``~`` and ``$VARS`` expanded; relative to ``base`` (the batch file's folder), not the cwd:
    cron starts in ``$HOME``, systemd in ``/``, and the same jobs file must mean the same folders everywhere."""
    unset = [name.strip("{}") for name in _VARIABLE.findall(value) if name.strip("{}") not in os.environ]
    if unset:  # expandvars would keep "$NAME" literally and download into a folder of that name
        raise _fail(source, where, f"environment variable ${unset[0]} is not set (cron's environment is small: "
                    "set it in the crontab or write the path out)")
    expanded = Path(os.path.expandvars(os.path.expanduser(value)))
    if base is None or expanded.is_absolute():
        return expand_path(value)
    return base / expanded


def _parse_job(source: str, index: int, raw: Any, base: Path | None = None) -> BatchJob:
    where = f"jobs[{index}]"
    if isinstance(raw, str):
        raw = {"uri": raw}
    if not isinstance(raw, dict):
        raise _fail(source, where, f"must be a mapping, got {describe_value(raw)}")
    for key in raw:
        if key not in JOB_KEYS:
            raise _fail(source, f"{where}.{key}", f"unknown key (known: {', '.join(JOB_KEYS)})")

    def text(key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _fail(source, f"{where}.{key}", f"must be a non-empty string, got {describe_value(value)}")
        return value.strip()

    uri = text("uri")
    if uri is None:
        raise _fail(source, f"{where}.uri", "is required")
    if not uri.lower().startswith(_SCHEMES):
        raise _fail(source, f"{where}.uri", f"unsupported URI {describe_value(redact_url(uri))} "
                    "(use http(s)://, hf://owner/repo/path or civitai://model/ID)")
    dest = text("dest")
    name = text("name")
    if name is not None and sanitize_filename(name) != name:
        raise _fail(source, f"{where}.name", f"must be a plain file name, got {describe_value(name)}")
    sha256 = text("sha256")
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise _fail(source, f"{where}.sha256", "must be 64 hex digits")
    artifact_type = text("type")
    if artifact_type is not None and artifact_type not in TYPES:
        raise _fail(source, f"{where}.type",
                    f"unknown type {describe_value(artifact_type)} (known: {', '.join(TYPES)})")
    place = raw.get("place")
    if place is not None and not isinstance(place, bool):
        raise _fail(source, f"{where}.place", f"must be true or false, got {describe_value(place)}")
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, bool):
        raise _fail(source, f"{where}.metadata", f"must be true or false, got {describe_value(metadata)}")
    dest_path = _dest_path(source, f"{where}.dest", dest, base) if dest else None
    mirrors = _mirrors(source, f"{where}.mirrors", raw.get("mirrors"))
    return BatchJob(index, uri, dest_path, name, sha256, artifact_type, place, metadata, mirrors)


def _mirrors(source: str, where: str, value: Any) -> tuple[str, ...]:
    """A job's ``mirrors:``: a list of http(s) URLs (each checked like ``--mirror``)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(source, where, f"must be a list of http(s) URLs, got {describe_value(value)}")
    try:
        return check_mirrors(value, "mirror")
    except UsageError as exc:
        raise _fail(source, where, exc.message) from None


def load_batch(path: Path | None) -> list[BatchJob]:
    """Read and validate a batch file (``None``: standard input, whose relative dests start at the cwd)."""
    where = "standard input" if path is None else str(path)
    try:
        if path is None:
            data = sys.stdin.buffer.read(MAX_BATCH_BYTES + 1)
        else:
            with path.open("rb") as fh:
                data = fh.read(MAX_BATCH_BYTES + 1)
        if len(data) > MAX_BATCH_BYTES:
            raise BatchError(f"batch file {where} is larger than {MAX_BATCH_BYTES >> 20} MiB",
                             hint="split it into several batch files")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read batch file {where}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_batch(text, "<stdin>" if path is None else where, None if path is None else path.parent)


def run_batch(config: Config, jobs: list[BatchJob], progress: Callable[[], ProgressListener], *,
              place: bool = False, place_options: PlaceOptions | None = None, force: bool = False,
              concurrency: int | None = None, chunk_size: int | None = None,
              metadata: bool | None = None) -> BatchSummary:
    """Run every job (``concurrency.batch_parallel_files`` at a time); never raises for a failing job."""
    place_options = place_options or PlaceOptions()
    wants_place = [job.place if job.place is not None else place for job in jobs]
    apps = configured_apps(config, place_options.apps) if any(wants_place) else []

    def run(job: BatchJob, do_place: bool) -> JobOutcome:
        outcome = JobOutcome(job)
        options = DownloadOptions(dest=job.dest, out=job.name, sha256=job.sha256, force=force,
                                  concurrency=concurrency, chunk_size=chunk_size,
                                  artifact_type=job.artifact_type, mirrors=job.mirrors)
        try:
            outcome.results = download_uri(config, job.uri, options, progress, on_checkpoint=metrics_hook)
            if do_place:
                opts = dataclasses.replace(
                    place_options, artifact_type=job.artifact_type or place_options.artifact_type)
                outcome.placements = [place_download(config, r, opts, apps) for r in outcome.results]
            if _pick(job.metadata, metadata, config.general.metadata):
                from .metadata import write_metadata

                for index, result in enumerate(outcome.results):
                    reports = outcome.placements[index:index + 1]
                    write_metadata(config, result, reports, apps)
        except Exception as exc:  # one job's bug or OS error must not stop the others
            check_stop()  # request_stop() shut the job's connections down: stopped, not failed
            if isinstance(exc, ModfetchError):
                outcome.error = redact(exc.message)
            else:
                log.debug("job %d failed", job.index, exc_info=exc)
                outcome.error = redact(f"{type(exc).__name__}: {exc}")
        if outcome.error:
            log.error("job %d (%s) failed: %s", job.index, redact_url(job.uri), outcome.error)
        return outcome

    metrics_hook = checkpoint_writer(config)
    # Create and migrate the state DB before the workers race to do it (first opens contend for the lock).
    open_state(config.state_db).close()
    parallel = max(1, config.concurrency.batch_parallel_files)
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="batch") as pool:
        futures = [pool.submit(run, job, do) for job, do in zip(jobs, wants_place, strict=True)]
        wait_or_stop(futures)  # Ctrl-C/SIGTERM: every job checkpoints, then Interrupted
        return BatchSummary([f.result() for f in futures])


def _pick(*choices: bool | None) -> bool:
    """The first choice that was made (job key, then command line, then config)."""
    return next((c for c in choices if c is not None), False)
