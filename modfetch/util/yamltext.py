"""YAML loading for user-written files (config, batch jobs): every failure is a ``yaml.YAMLError``.

PyYAML's safe loader raises more than YAMLError on hostile input: ValueError for impossible dates
(``2001-13-01``) or bad ``!!int``/``!!float`` values, AttributeError for a malformed ``!!timestamp``,
RecursionError for deeply nested flow collections.  Callers catch one exception type and report one line.
A key given twice in one mapping is an error too: PyYAML would silently keep the last value.
"""

from __future__ import annotations

from typing import Any

import yaml


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys (``uri:`` twice in a job must not silently pick one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are not duplicates
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable keys: the base constructor reports them
            if duplicate:
                label = key if isinstance(key, str) and key.isprintable() else repr(key)
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {label!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """PyYAML's merge-key flattening, keeping each merged pair once (the last copy, which is the one that
        wins anyway).  Before PyYAML 6.0.4 every ``<<: [*a, *a, ...]`` copied ``a``'s pairs again, so a few
        nested levels of it (a "billion laughs" through merge keys) never finished loading."""
        super().flatten_mapping(node)  # flattens merged mappings through this method first: each stays small
        kept: dict[int, tuple[Any, Any]] = {}
        for pair in node.value:
            kept.pop(id(pair), None)  # a pair merged twice is the very same tuple
            kept[id(pair)] = pair
        node.value = list(kept.values())


def describe_value(value: Any, limit: int = 60) -> str:
    """A value for an error message: a scalar's repr (cut to ``limit`` characters), a list's or mapping's kind.

    Never a container's repr: aliases let a 1 KiB file hold billions of nested strings ("billion laughs"), and
    repr() would expand every one of them."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set)):
        return "a list"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` minus duplicate keys; anything that goes wrong is a MarkedYAMLError."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise yaml.MarkedYAMLError(problem="nesting too deep") from None
    except (ValueError, TypeError, AttributeError, OverflowError, IndexError, KeyError) as exc:
        raise yaml.MarkedYAMLError(problem=f"bad value ({exc})") from None
