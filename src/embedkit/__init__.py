"""embedkit: embeddings in plain SQLite, searchable from the command line, Python, SQL and Datasette."""

from .chunking import Chunker
from .collection import Collection, EmbedStats
from .database import Database
from .errors import EmbedkitError
from .items import Entry, Item, RowMapping
from .sqlfunctions import register as register_functions

__version__ = "0.1.0"
__all__ = [
    "Chunker",
    "Collection",
    "Database",
    "EmbedStats",
    "EmbedkitError",
    "Entry",
    "Item",
    "RowMapping",
    "register_functions",
]
