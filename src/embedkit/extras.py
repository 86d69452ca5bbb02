"""The optional parts of embedkit, and the extra that installs each.

The core (HTTP models, search, related items, SQL functions) needs none of them; a command
that does is refused in one line naming the extra, before it writes anything.
"""

import importlib
import importlib.util
from types import ModuleType

from .errors import EmbedkitError

DISTRIBUTION = "embedkit-sqlite"


class MissingExtra(EmbedkitError):
    """An optional package embedkit needs for this is not installed."""


def _message(what: str, extra: str, detail: str = "") -> str:
    return f"{what} needs the {extra!r} extra{detail}: pip install '{DISTRIBUTION}[{extra}]'"


def check(module: str, extra: str, what: str) -> None:
    """Raise MissingExtra unless module can be imported (found without importing it)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        found = False
    if not found:
        raise MissingExtra(_message(what, extra))


def require(module: str, extra: str, what: str) -> ModuleType:
    """module, imported; MissingExtra naming the extra if it (or a package it needs) is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as ex:
        detail = f" (no module named {ex.name!r})" if ex.name and ex.name != module else ""
        raise MissingExtra(_message(what, extra, detail)) from None
