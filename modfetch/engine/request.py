"""What the engine is asked to download (``DownloadRequest``) and what it answers (``DownloadResult``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..util.redact import redact_url


@dataclass(frozen=True)
class DownloadRequest:
    """What to download and where.  ``filename`` is authoritative (``--out`` or a resolver's name);
    otherwise the server's Content-Disposition, then the URL's last segment, name the file."""

    url: str
    dest_dir: Path
    display_url: str = ""
    filename: str | None = None
    subdir: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    auth_host: str | None = None
    expected_sha256: str | None = None
    expected_size: int | None = None
    expected_git_sha1: str | None = None
    force: bool = False
    source: str = "http"
    artifact_type: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    repair: bool = False  # `verify --repair`: mend the installed file even if its inode changed since
    mirrors: tuple[str, ...] = ()  # other URLs serving the same bytes (`--mirror`; engine/mirrors.py)

    @property
    def expected(self) -> str | None:
        """The expected SHA-256 in lower case, if one was given."""
        return self.expected_sha256.lower() if self.expected_sha256 else None

    @cached_property
    def row_url(self) -> str:
        """The URL as the state DB keys it: what the user gave (``display_url``) or the URL, redacted (worked out
        once: a many-file run asks for it several times per file)."""
        return redact_url(self.display_url or self.url)


@dataclass
class DownloadResult:
    """The outcome of a successful download (or of finding the file already present)."""

    download_id: int
    path: Path
    sha256: str
    size: int
    fetched_bytes: int = 0
    elapsed_s: float = 0.0
    already_present: bool = False
    resumed: bool = False
    sources: Mapping[str, Any] | None = None  # with mirrors: the sources used and excluded (SourceSet.summary)
