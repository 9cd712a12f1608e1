"""The download service: resolve a URI, then run the engine for each file it names (bounded parallelism)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..engine.download import Downloader, DownloadRequest, DownloadResult
from ..engine.session import make_session
from ..errors import ModfetchError, UsageError
from ..failures import record_failure, settle_success, source_of_uri
from ..progress import ProgressListener
from ..resolvers.base import ResolvedFile
from ..resolvers.registry import resolve
from ..state import StateDB, db_failure, open_state
from ..util.redact import redact, redact_url
from .layout import dest_subdir, library_subdir, previous_location
from .manyfiles import download_many

log = logging.getLogger("modfetch.app")
ProgressFactory = Callable[[], ProgressListener]


@dataclass(frozen=True)
class DownloadOptions:
    """What the user asked for beyond the URI."""

    dest: Path | None = None
    out: str | None = None
    sha256: str | None = None
    force: bool = False
    concurrency: int | None = None
    chunk_size: int | None = None
    artifact_type: str | None = None
    mirrors: tuple[str, ...] = ()  # checked http(s) URLs serving the same file (engine.mirrors.check_mirrors)


def resolve_uri(config: Config, uri: str, dry_run: bool = False) -> list[ResolvedFile]:
    """Resolve a URI with a short-lived session (``dry_run``: without writing anything)."""
    session = make_session(config)
    try:
        return resolve(uri, config, session, dry_run)
    finally:
        session.close()


def resolve_recorded(config: Config, uri: str) -> list[ResolvedFile]:
    """``resolve_uri``, leaving a ``failed`` row keyed by the URI when the source refuses (404, gated, login
    required, unreachable) and clearing such a row once the URI resolves again.  Bad input (UsageError, exit 2)
    is not recorded: it is a mistake on the command line, not a run that failed."""
    key = redact_url(uri.strip())
    try:
        items = resolve_uri(config, uri)
    except ModfetchError as exc:
        if not isinstance(exc, UsageError):
            with open_state(config.state_db) as db:
                record_failure(db, key, None, source_of_uri(uri), exc)
        raise
    with open_state(config.state_db) as db:
        settle_success(db, None, key)
    return items


def build_request(config: Config, item: ResolvedFile, options: DownloadOptions, single: bool,
                  db: StateDB | None = None, uri: str | None = None) -> DownloadRequest:
    """The engine request for one resolved file, applying --dest/--out/--sha256/--type and the library layout
    (see ``app.layout``); with ``db``, a file an earlier run put in the old flat layout is found where it is."""
    if options.out and not single:
        raise UsageError("--out names one file, but this URI resolves to several")
    if options.mirrors and not single:
        raise UsageError("--mirror serves one file, but this URI resolves to several",
                         hint="name the one file the mirrors serve (e.g. hf://owner/repo/file.safetensors)")
    expected = options.sha256 or item.sha256
    if options.sha256 and item.sha256 and options.sha256.lower() != item.sha256.lower():
        raise UsageError(f"--sha256 {options.sha256} disagrees with the source's published {item.sha256}")
    hints = dict(item.hints)
    if uri is not None:
        hints.setdefault("uri", redact_url(uri))  # what `verify --repair` resolves again
    display_url = redact_url(item.display_url or item.url)  # as the engine stores it
    dest_dir, subdir, filename = options.dest or config.download_root, "", options.out or item.filename
    if options.dest is not None:
        subdir = dest_subdir(item)
    else:
        old = None if db is None or options.out else previous_location(db, display_url, config.download_root)
        if old is not None:
            dest_dir, filename = old.parent, old.name
        else:
            subdir = library_subdir(item, config.download_root)
    return DownloadRequest(
        url=item.url,
        dest_dir=dest_dir,
        display_url=item.display_url or redact_url(item.url),
        filename=filename,
        subdir=subdir,
        headers=dict(item.headers),
        auth_host=item.auth_host,
        expected_sha256=expected.lower() if expected else None,
        expected_size=item.size,
        expected_git_sha1=item.git_sha1,
        force=options.force,
        source=item.source,
        artifact_type=options.artifact_type or hints.get("artifact_type"),
        meta=hints,
        mirrors=options.mirrors,
    )


def validate_sha256(value: str | None) -> str | None:
    """Lower-cased hex, or UsageError for anything that is not 64 hex digits."""
    if value is None:
        return None
    text = value.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise UsageError(f"--sha256 must be 64 hex digits, got {value!r}")
    return text


def download_uri(config: Config, uri: str, options: DownloadOptions, progress: ProgressFactory,
                 on_checkpoint: Callable[[], None] | None = None) -> list[DownloadResult]:
    """Download every file ``uri`` names; raises the first error after letting the other files finish."""
    items = resolve_recorded(config, uri)
    if not items:
        raise UsageError(f"{redact_url(uri)} names no files", hint="check the include/exclude patterns")
    with open_state(config.state_db) as db:
        requests_ = [build_request(config, item, options, single=len(items) == 1, db=db, uri=uri)
                     for item in items]

    def run(req: DownloadRequest) -> DownloadResult:
        downloader = Downloader(config, progress=progress(), concurrency=options.concurrency,
                                chunk_size=options.chunk_size, on_checkpoint=on_checkpoint)
        return downloader.run(req)

    if len(requests_) == 1:
        return [run(requests_[0])]
    done, errors = download_many(config, requests_, progress=progress, concurrency=options.concurrency,
                                 chunk_size=options.chunk_size, on_checkpoint=on_checkpoint,
                                 failure=lambda req, exc: file_failure(config, req, exc))
    results = [done[n] for n in sorted(done)]
    if errors:
        first = errors[0]
        raise ModfetchError(f"{len(errors)} of {len(requests_)} files failed; first: {first.message}",
                            hint=first.hint)
    return results


def file_failure(config: Config, req: DownloadRequest, exc: Exception) -> ModfetchError:
    """One clear line for an exception no layer below expected while downloading ``req`` (an OSError from an
    odd path, a state DB error, a bug): it fails that file only, never the run."""
    name = req.filename or req.display_url or redact_url(req.url)
    if isinstance(exc, sqlite3.DatabaseError):
        return db_failure(exc, str(config.state_db))
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return ModfetchError(f"cannot download {name}: {exc.strerror or exc}{where}")
    log.debug("unexpected error downloading %s", name, exc_info=exc)
    return ModfetchError(f"cannot download {name}: internal error: {type(exc).__name__}: {redact(str(exc))}",
                         hint="rerun with --log-level debug for the traceback and report it")
