"""YAML loading for user-written files (config, batch jobs): every failure is a ``yaml.YAMLError``.

PyYAML's safe loader raises more than YAMLError on hostile input: ValueError for impossible dates
(``2001-13-01``) or bad ``!!int``/``!!float`` values, AttributeError for a malformed ``!!timestamp``,
RecursionError for deeply nested flow collections.  Callers catch one exception type and report one line.
"""

from __future__ import annotations

from typing import Any

import yaml


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``; anything that goes wrong is re-raised as a MarkedYAMLError with a problem text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise yaml.MarkedYAMLError(problem="nesting too deep") from None
    except (ValueError, TypeError, AttributeError, OverflowError, IndexError, KeyError) as exc:
        raise yaml.MarkedYAMLError(problem=f"bad value ({exc})") from None
