"""The one error hierarchy: every error a user can see is a ModfetchError carrying its message and a hint.

The CLI maps the class to an exit code in one place (``exit_code``); core code never calls ``sys.exit``.
"""

from __future__ import annotations


class ModfetchError(Exception):
    """Base of every user-facing error: ``message`` is one line, ``hint`` an optional second line."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ModfetchError):
    """Bad command-line input: unknown id, malformed URI, conflicting flags."""

    exit_code = 2


class ConfigError(UsageError):
    """Config file missing, malformed, or with unknown / forbidden keys."""


class NetworkError(ModfetchError):
    """The server could not be reached or kept failing after all retries."""


class TLSError(NetworkError):
    """A TLS failure that retrying cannot fix: an untrusted certificate, an unusable CA bundle, a server that
    does not speak TLS."""


class HTTPStatusError(ModfetchError):
    """The server answered with a status that retrying will not fix (401/403/404/...)."""

    def __init__(self, message: str, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class AuthError(HTTPStatusError):
    """Missing or insufficient credentials (gated repo, login-only file)."""


class NotFoundError(HTTPStatusError, FileNotFoundError):
    """The remote repo, model, version, revision or file does not exist."""


class RemoteChangedError(ModfetchError):
    """The remote entity changed during the download more often than we are willing to restart."""


class IntegrityError(ModfetchError):
    """Bytes do not match the expected hash and no chunk repair can explain it."""


class ProtocolViolation(ModfetchError):
    """The server broke HTTP's promises (wrong Content-Range, wrong length, 200 to a ranged request)."""


class TargetExistsError(ModfetchError):
    """A different file already exists at the target and overwriting was not allowed."""


class LockedError(ModfetchError):
    """Another modfetch process is working on the same target."""


class DiskError(ModfetchError, OSError):
    """An OS error while writing (ENOSPC, EROFS, EACCES): the .part and state stay resumable."""


class StateError(ModfetchError):
    """The state database cannot be opened or is from a newer modfetch."""


def exit_code(error: BaseException) -> int:
    """The process exit code for an error: 0 ok, 1 download/verify failure, 2 usage or config error."""
    if isinstance(error, ModfetchError):
        return error.exit_code
    return 1


class AmbiguousChoiceError(UsageError):
    """A URI matches several files or versions; ``candidates`` lists them (the CLI may offer a picker)."""

    def __init__(self, message: str, candidates: list[Candidate], hint: str | None = None) -> None:
        listing = "; ".join(c.label for c in candidates)
        super().__init__(f"{message}: {listing}", hint=hint)
        self.candidates = candidates


class Candidate:
    """One choice in an ambiguity: a label to show, its size/format, and the URI that selects it."""

    def __init__(self, label: str, uri: str, size: int | None = None, fmt: str | None = None) -> None:
        self.label = label
        self.uri = uri
        self.size = size
        self.fmt = fmt

    def __repr__(self) -> str:
        return f"Candidate({self.label!r}, {self.uri!r})"


class GatedError(AuthError):
    """A gated repository the current credentials may not download (accept its terms, set a token)."""


# The error classes `status`, the TUI and the metrics' ``reason`` label show, most specific first.
ERROR_CLASSES = ("not_found", "auth", "gated", "unreachable", "tls", "server", "integrity", "disk", "other")
_CLASS_OF: tuple[tuple[type[BaseException], str], ...] = (
    (GatedError, "gated"), (AuthError, "auth"), (NotFoundError, "not_found"), (TLSError, "tls"),
    (NetworkError, "unreachable"), (IntegrityError, "integrity"), (DiskError, "disk"),
    (ProtocolViolation, "server"), (RemoteChangedError, "server"), (StateError, "disk"),
)


def error_class(error: BaseException) -> str:
    """The one place that names an error's class (one of ERROR_CLASSES) for records, tables and metrics."""
    for cls, name in _CLASS_OF:
        if isinstance(error, cls):
            return name
    if isinstance(error, HTTPStatusError):
        if error.status in (404, 410):
            return "not_found"
        if error.status in (401, 403):
            return "auth"
        return "server" if error.status >= 500 else "other"
    if isinstance(error, OSError) and not isinstance(error, ModfetchError):
        return "disk"
    return "other"
