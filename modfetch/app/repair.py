"""``verify --repair``: mend a finished file that no longer matches its recorded SHA-256, in place.

The file's source is resolved again (the original URI is kept in the row's meta), and the engine's repair path
(``Downloader._repair_installed``) copies the damaged file to its ``.part``, re-hashes every recorded chunk,
fetches only those that differ and replaces the file only once the whole file hashes to the recorded value.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..engine.download import Downloader, DownloadRequest, DownloadResult
from ..errors import RemoteChangedError, UsageError
from ..progress import ProgressListener
from ..state import DownloadRow
from ..util.redact import redact_url
from .download import resolve_uri


def repair_download(config: Config, row: DownloadRow, progress: ProgressListener | None = None) -> DownloadResult:
    """Repair ``row``'s installed file from its source; raises a ModfetchError when it cannot."""
    if not row.sha256:
        raise UsageError(f"{row.dest_path} has no recorded SHA-256 to repair against",
                         hint=f"download it again with --force (id {row.id})")
    uri = row.meta.get("uri") if isinstance(row.meta.get("uri"), str) else row.url
    items = resolve_uri(config, str(uri))
    matches = [i for i in items if redact_url(i.display_url or i.url) == row.url]
    item = matches[0] if matches else (items[0] if len(items) == 1 else None)
    if item is None:
        raise RemoteChangedError(f"{redact_url(str(uri))} no longer names {Path(row.dest_path).name}",
                                 hint="the damaged file is kept; 'modfetch rm' it or download it again")
    if item.sha256 and item.sha256.lower() != row.sha256:
        raise RemoteChangedError(f"the source now publishes another SHA-256 for {Path(row.dest_path).name}: "
                                 "not repairing it to the old version",
                                 hint="the damaged file is kept; pass --force to download the new version")
    dest = Path(row.dest_path)
    request = DownloadRequest(
        url=item.url, dest_dir=dest.parent, display_url=row.url, filename=dest.name,
        headers=dict(item.headers), auth_host=item.auth_host, expected_sha256=row.sha256,
        expected_size=item.size, expected_git_sha1=item.git_sha1, source=row.source,
        artifact_type=row.artifact_type, meta=dict(item.hints, uri=redact_url(str(uri))), repair=True)
    return Downloader(config, progress=progress).run(request)


__all__ = ["repair_download"]
