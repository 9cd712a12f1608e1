"""Logging, configured in one place: human or JSON-lines on stderr, a redaction filter on every handler.

* ``human``: ``HH:MM:SS LEVEL logger  message  key=value ...`` - short, aligned; the level is coloured only
  when stderr is a terminal, ``TERM`` is not ``dumb`` and ``NO_COLOR`` is unset (https://no-color.org).
* ``json``: one object per line with ``ts`` (RFC 3339, UTC), ``level`` (debug/info/warn/error), ``msg``,
  ``logger`` and every structured field passed through ``extra=`` (``download_id``, ``url``, ``chunk``,
  ``attempt``, ``bytes``, ``elapsed_s``, ``status``, ...).

The handler sits on the root logger so third-party records (urllib3 at debug level, warnings) pass through
the same :class:`RedactionFilter`; every formatter also redacts its final text (tracebacks included).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from .util import termtext
from .util.redact import redact

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
           "error": logging.ERROR}
_COLOURS = {"debug": "\x1b[2m", "info": "\x1b[36m", "warn": "\x1b[33m", "error": "\x1b[31;1m"}
_RESET = "\x1b[0m"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a structured field.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime",
                                                                                       "taskName"}
_MARK = "_modfetch_handler"


def level_name(levelno: int) -> str:
    """modfetch's level vocabulary: debug, info, warn, error."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    return "info" if levelno >= logging.INFO else "debug"


def parse_level(name: str) -> int:
    """``debug``/``info``/``warn``/``error`` (case-insensitive) -> a logging level; unknown -> INFO."""
    return _LEVELS.get((name or "info").lower(), logging.INFO)


def _map_strings(value: Any, convert: Callable[[str], str]) -> Any:
    """``value`` with ``convert`` applied to every string inside it (dicts, lists and tuples walked)."""
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, convert) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map_strings(v, convert) for v in value]
    return value


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8: bytes that are not UTF-8 (surrogate escapes from argv or file names) become the
    text ``\\xff``, any other lone surrogate ``\\ud800``.  json.dumps would emit them as ``\\udcff`` escapes,
    which strict JSON parsers reject, and a strict stream would raise."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate outside the surrogateescape range
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def terminal_text(text: str) -> str:
    """``utf8_text(text)`` on one line with control and bidi characters shown as ``?``: server and DB text in a
    message must not reach a terminal as escape sequences (``\\x1b[2J`` clears the screen) or extra lines."""
    return termtext.printable(utf8_text(text))


def _terminal_lines(text: str) -> str:
    """``terminal_text`` of each line of a multi-line text (a traceback), the line breaks kept."""
    return "\n".join(terminal_text(line) for line in text.splitlines())


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries (what the caller passed as ``extra=``)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class RedactionFilter(logging.Filter):
    """Masks secrets in the rendered message and in every structured field (strings, lists, dicts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg} {record.args}"
        record.msg = redact(message)
        record.args = None
        for key, value in extra_fields(record).items():
            record.__dict__[key] = _map_strings(value, redact)
        return True


class HumanFormatter(logging.Formatter):
    """``12:34:56 INFO  engine  message  download_id=3 chunk=2`` (colour decided per record)."""

    def __init__(self, colour: bool | None = None) -> None:
        super().__init__()
        self.colour = colour

    def _use_colour(self) -> bool:
        if self.colour is not None:
            return self.colour
        return use_colour(sys.stderr)

    def format(self, record: logging.LogRecord) -> str:
        level = level_name(record.levelno)
        tag = f"{level.upper():<5}"
        if self._use_colour():
            tag = f"{_COLOURS[level]}{tag}{_RESET}"
        if record.name == "modfetch" or record.name.startswith("modfetch."):
            name = record.name[len("modfetch."):] or "main"
        else:
            name = record.name.split(".", 1)[0]  # urllib3, py.warnings, ...
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {tag} {name:<7} {terminal_text(record.getMessage())}"
        fields = extra_fields(record)
        if fields:
            line += "  " + " ".join(terminal_text(f"{k}={v}") for k, v in fields.items() if v is not None)
        # A traceback quotes server text too (an HTTP reason phrase, a header): each of its lines is made safe.
        if record.exc_info:
            line += "\n" + _terminal_lines(self.formatException(record.exc_info))
        if record.stack_info:
            line += "\n" + _terminal_lines(self.formatStack(record.stack_info))
        return utf8_text(redact(line.rstrip()))


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a traceback goes into ``exc`` so every line stays valid JSON."""

    def format(self, record: logging.LogRecord) -> str:
        millis = int(record.created * 1000) % 1000
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{millis:03d}Z"
        payload: dict[str, Any] = {
            "ts": ts,
            "level": level_name(record.levelno),
            "msg": redact(record.getMessage()),
            "logger": record.name,
        }
        for key, value in extra_fields(record).items():
            payload.setdefault(key, _map_strings(value, redact))
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(_map_strings(payload, utf8_text), default=lambda o: utf8_text(redact(str(o))),
                          ensure_ascii=False)


def json_line(level: int, msg: str, logger: str, **fields: Any) -> str:
    """One JSON log line built exactly like a logged record's (``ts``, ``level``, ``msg``, ``logger``, fields):
    for what the CLI prints itself, such as the final error, so every ``--json`` stderr line has one shape."""
    record = logging.LogRecord(logger, level, __file__, 0, msg, None, None)
    record.__dict__.update(fields)
    return JsonFormatter().format(record)


# While progress bars are on screen the CLI routes log lines through the bars' writer (which clears the bars,
# prints the line and redraws them), so a log line never lands in the middle of a bar.
_console_writer: Callable[[str], None] | None = None


def set_console_writer(writer: Callable[[str], None] | None) -> None:
    """Send stderr log lines to ``writer`` (one formatted line per call) until called again with None."""
    global _console_writer
    _console_writer = writer


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        writer = _console_writer
        if writer is None:
            super().emit(record)
            return
        try:
            writer(self.format(record))
        except Exception:
            self.handleError(record)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def use_colour(stream: IO[str]) -> bool:
    """Colour only on a terminal, never with ``NO_COLOR`` set (non-empty) or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_handler(fmt: str = "human", stream: IO[str] | None = None) -> logging.Handler:
    """A handler in the chosen format, with the redaction filter attached."""
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    setattr(handler, _MARK, True)
    return handler


def configure_logging(level: str = "info", fmt: str = "human", quiet: bool = False,
                      stream: IO[str] | None = None) -> None:
    """Route logs to stderr in the chosen format, replacing handlers an earlier call installed.

    ``level`` applies to modfetch's own loggers; other libraries log warnings and errors (and debug records
    too when ``level`` is debug).  ``quiet`` raises ``info`` to ``warn`` for human output: a quiet run only
    speaks up about problems.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
        old.close()
    ours = logging.getLogger("modfetch")
    for old in list(ours.handlers):
        ours.removeHandler(old)
    wanted = parse_level(level)
    if quiet and fmt != "json" and wanted == logging.INFO:
        wanted = logging.WARNING
    root.addHandler(make_handler(fmt, stream))
    root.setLevel(logging.DEBUG if wanted <= logging.DEBUG else logging.WARNING)
    ours.setLevel(wanted)
    ours.propagate = True
    logging.captureWarnings(True)


__all__ = ["HumanFormatter", "JsonFormatter", "RedactionFilter", "configure_logging", "level_name",
           "make_handler", "parse_level", "terminal_text", "use_colour", "utf8_text"]
