"""Items to embed, and how input rows (CSV, JSON, SQL) map onto them."""

import hashlib
import json
from dataclasses import dataclass, field

from . import jsondata
from .errors import EmbedkitError


@dataclass
class Item:
    """Something to embed: its id, the text, and optional metadata (a JSON object)."""

    id: str
    content: str | None
    metadata: dict | None = None


@dataclass(frozen=True)
class Part:
    """The window of a long item that matched a search (a collection with windows on): its
    number (from 1), where it is in the item's stored text, that text, and its score."""

    number: int
    start: int
    end: int
    text: str | None
    score: float

    def to_dict(self) -> dict:
        return {"number": self.number, "start": self.start, "end": self.end, "text": self.text, "score": self.score}


@dataclass
class Entry:
    """A search result or a stored item read back. part: the window that gave a long item its
    score, when that was better than the item's own vector (collections with windows on)."""

    id: str
    score: float | None = None
    content: str | None = None
    metadata: dict | None = None
    part: Part | None = field(default=None, repr=False)  # shown as to_dict() shows it: only when there is one

    def to_dict(self) -> dict:
        data = {"id": self.id, "score": self.score, "content": self.content, "metadata": self.metadata}
        return data if self.part is None else {**data, "part": self.part.to_dict()}


# How a collection hashes the text of its items, by the name its settings give ("hash"):
# BLAKE2b-128 for embedkit's own collections, MD5 for those copied from llm, which hashes so.
HASHES = {
    "blake2b": lambda data: hashlib.blake2b(data, digest_size=16).digest(),
    "md5": lambda data: hashlib.md5(data, usedforsecurity=False).digest(),
}
DEFAULT_HASH = "blake2b"


def content_hash(text: str, scheme: str = DEFAULT_HASH) -> bytes:
    """The 16-byte digest of text (UTF-8) that a row's content_hash holds."""
    return HASHES[scheme](text.encode("utf-8"))


def metadata_json(metadata, where: str = "metadata") -> str | None:
    """Metadata as stored: JSON any parser reads (refused in one line naming where if it cannot
    be), compact since it is repeated on every chunk of a document and every byte is on disk."""
    if not metadata:
        return None
    jsondata.check(metadata, where)
    return jsondata.dumps(metadata, where, ensure_ascii=False, separators=(",", ":"))


def same_json(stored, new) -> bool:
    """Whether two metadata JSON texts (or NULLs) hold the same value."""
    if stored is None or new is None:
        return stored is new
    return stored == new or json.loads(stored) == json.loads(new)


def check_unique_ids(items):
    """Raise on the first id that occurs twice: an input must name each item once."""
    seen = set()
    for item in items:
        if item.id in seen:
            raise EmbedkitError(f"duplicate id {item.id!r} in the input")
        seen.add(item.id)


def as_text(value) -> str:
    """A row value as text for embedding: numbers and booleans as written, objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, bytes):
        raise EmbedkitError("binary values cannot be embedded as text")
    return json.dumps(value) if isinstance(value, bool) else str(value)


def parse_metadata(value, where="metadata") -> dict | None:
    """A metadata value from input: a dict, a JSON object string, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = jsondata.loads(value)
        except ValueError as ex:
            raise EmbedkitError(f"{where} is not valid JSON: {ex}") from None
    if not isinstance(value, dict):
        raise EmbedkitError(f"{where} must be a JSON object, got {type(value).__name__}")
    jsondata.check(value, where)
    return value or None


@dataclass
class RowMapping:
    """Which columns of an input row give the id, the content and the metadata.

    Content comes from content_columns in order, or else from every column that is
    not the id, a metadata column or `metadata`; values are joined with newlines.
    A `metadata` column holding a JSON object is merged with metadata_columns.
    """

    id_column: str = "id"
    content_columns: list = field(default_factory=list)
    metadata_columns: list = field(default_factory=list)
    id_prefix: str = ""

    def item(self, row: dict, where: str) -> Item:
        id = row_id(row, self.id_column, where)
        for name in self.content_columns:
            if name not in row:
                raise EmbedkitError(f"{where}: no {name!r} column")
        metadata = row_metadata(row, self.metadata_columns, where, "metadata" not in self.content_columns)
        content_columns = self.content_columns or [
            name
            for name in row
            if name not in (self.id_column, "metadata") and name not in self.metadata_columns
        ]
        try:
            parts = [as_text(row[name]) for name in content_columns if row[name] is not None]
        except EmbedkitError as ex:
            raise EmbedkitError(f"{where}: {ex}") from None
        if metadata:
            jsondata.check(metadata, f"{where}: metadata")
        return Item(
            id=self.id_prefix + id,
            content="\n".join(part for part in parts if part != ""),
            metadata=metadata,
        )


def row_id(row: dict, column: str, where: str) -> str:
    """The id an input row gives in column, as text."""
    if column not in row:
        raise EmbedkitError(
            f"{where}: no {column!r} column (columns: {', '.join(map(str, row)) or 'none'}); choose one with --id-column"
        )
    value = row[column]
    if value is None or value == "" or isinstance(value, (dict, list, bytes)):
        raise EmbedkitError(f"{where}: {column!r} is empty or not a scalar")
    return as_text(value)


def row_metadata(row: dict, columns, where: str, merge_metadata_column: bool = True) -> dict | None:
    """The metadata of an input row: its columns named, merged into the JSON object of its
    `metadata` column (unless that column is used otherwise)."""
    metadata = {}
    if merge_metadata_column and "metadata" in row:
        metadata.update(parse_metadata(row["metadata"], f"{where}: metadata") or {})
    for name in columns:
        if name not in row:
            raise EmbedkitError(f"{where}: no {name!r} column")
        metadata[name] = row[name]
    return metadata or None
