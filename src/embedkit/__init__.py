"""embedkit: embeddings in plain SQLite, searchable from the command line, Python, SQL and Datasette."""

from typing import TYPE_CHECKING

from .version import __version__

# Each name is imported when first used (PEP 562): `embedkit --version` and a search from a
# new process do not pay for importing what they never use.
_WHERE = {
    "Chunker": "chunking",
    "Collection": "collection",
    "Database": "database",
    "EmbedStats": "ingest",
    "EmbeddingModel": "models",
    "EmbedkitError": "errors",
    "Entry": "items",
    "Item": "items",
    "MissingExtra": "extras",
    "RowMapping": "items",
    "register_functions": "sqlfunctions",
}

if TYPE_CHECKING:
    from .chunking import Chunker
    from .collection import Collection
    from .database import Database
    from .errors import EmbedkitError
    from .extras import MissingExtra
    from .ingest import EmbedStats
    from .items import Entry, Item, RowMapping
    from .models import EmbeddingModel
    from .sqlfunctions import register as register_functions


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'embedkit' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f".{_WHERE[name]}", __name__)
    value = getattr(module, "register" if name == "register_functions" else name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_WHERE])


__all__ = [
    "Chunker",
    "Collection",
    "Database",
    "EmbedStats",
    "EmbeddingModel",
    "EmbedkitError",
    "Entry",
    "Item",
    "MissingExtra",
    "RowMapping",
    "__version__",
    "register_functions",
]
