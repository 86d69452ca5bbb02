"""JSON that every parser accepts, and nothing else.

Python's json module writes NaN and Infinity (which JSON does not have: browsers' JSON.parse,
SQLite's json_valid() and most other parsers reject them) and reads them, and 1e400, as
floats. embedkit writes every JSON text through dumps(): stored metadata, exports, --json
output, what the Datasette plugin serves. Input is read with loads(), and metadata is held
to check(): finite numbers, and nesting no deeper than MAX_DEPTH.
"""

import json
import math
import re
from typing import Any

from .errors import EmbedkitError

# Levels of objects and arrays inside one another that metadata may have. Real metadata has
# a few; thousands make Python's json module fail with a RecursionError.
MAX_DEPTH = 100
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def problem(value) -> str | None:
    """Why value cannot be written as JSON (naming where in it), or None if it can."""
    stack = [(value, "$", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{path} is {_number(item)}, which JSON cannot hold"
        if isinstance(item, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                return f"it is nested more than {MAX_DEPTH} levels deep"
            if isinstance(item, dict):
                for key, child in item.items():
                    if key is not None and not isinstance(key, (str, int, float)):  # those json writes as text
                        return f"{path} has the key {key!r}, and JSON keys are text"
                    key = str(key)
                    stack.append((child, path + (f".{key}" if _NAME.fullmatch(key) else f"[{json.dumps(key)}]"),
                                  depth + 1))
            else:
                stack.extend((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item))
        elif item is not None and not isinstance(item, (str, int, float)):
            return f"{path} is a {type(item).__name__}, which JSON cannot hold"
    return None


def check(value, where: str) -> None:
    """Raise EmbedkitError, naming where, unless value can be written as JSON within MAX_DEPTH."""
    found = problem(value)
    if found is not None:
        raise EmbedkitError(f"{where}: {found}")


def dumps(value, where: str = "the value", **options) -> str:
    """json.dumps that refuses (EmbedkitError naming where, and where in value) what is not JSON:
    NaN and infinite numbers, and values JSON has no type for."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except (ValueError, TypeError, RecursionError):
        raise EmbedkitError(f"{where}: {problem(value) or 'it cannot be written as JSON'}") from None


def stored_error(collection, id) -> EmbedkitError:
    """The error for an item whose stored metadata is not JSON (written by another program, or by
    embedkit before it refused NaN and Infinity), where JSON is to be written from it."""
    return EmbedkitError(
        f"item {id!r} of collection {collection.name!r} holds metadata that is not valid JSON, so it cannot "
        f"be written out as JSON; correct it (`embedkit check {collection.db.path}` lists such rows)"
    )


def loads(text: str | bytes) -> Any:
    """json.loads for input: ValueError (with json's position where it has one) for anything
    but JSON, NaN, Infinity and numbers too large for a float (1e400) included."""
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise ValueError("it is nested too deeply to be read") from None


def _constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large")
    return value


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
