"""embedkit: embeddings in plain SQLite, searchable from the command line, Python, SQL and Datasette."""

from .chunking import Chunker
from .collection import Collection, EmbedStats
from .database import Database
from .errors import EmbedkitError
from .extras import MissingExtra
from .items import Entry, Item, RowMapping
from .models import EmbeddingModel
from .sqlfunctions import register as register_functions
from .version import __version__

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
