"""Where items come from.

Plain inputs (rows of CSV/JSON/SQL, text files) give Items directly. A Source is an input
that is split into many items (a PDF, a text cut into chunks): its items are replaced
together, and what it was when last read is recorded so an unchanged one is not fetched,
extracted or split again.
"""

import hashlib
import json
from dataclasses import dataclass

from ..items import Item, content_hash


@dataclass
class Known:
    """What the collection recorded about a source when it was last read."""

    digest: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class Document:
    """A source as read now: its items, and what identifies this version of it.

    items is None for content that has not changed but came with new validators (a server
    that changed its ETag): only those are recorded.
    """

    source: str
    items: list | None
    digest: str | None
    etag: str | None = None
    last_modified: str | None = None


class Source:
    """An input split into many items. Subclasses set name and implement read()."""

    name: str

    def read(self, known, chunker):
        """A Document, or None when the source is unchanged since known (a Known or None).

        Raises EmbedkitError when the source cannot be read; nothing of it is written then.
        """
        raise NotImplementedError


def input_name(input) -> str:
    """What names an input to embed_multi: an Item's id, a Source's name."""
    return input.id if isinstance(input, Item) else input.name


def digest(*parts) -> str:
    """A hash of a source's raw content (bytes or text)."""
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        hasher.update(part if isinstance(part, bytes) else str(part).encode("utf-8"))
        hasher.update(b"\0")
    return hasher.hexdigest()


def chunk_id(source_id, chunk, page=None) -> str:
    # A URL fragment: `paper.pdf#page=3&chunk=2` opens the PDF at that page in a browser.
    return f"{source_id}#page={page}&chunk={chunk}" if page is not None else f"{source_id}#chunk={chunk}"


@dataclass
class Chunk(Item):
    """An Item cut out of a longer text at start: late chunking embeds it with that text in view."""

    text: str = ""
    start: int = 0
    text_hash: bytes = b""  # content_hash(text)

    def late_hash(self, scheme: str) -> bytes:
        """The content hash (by the collection's scheme) of its late-chunked vector, which
        depends on the whole text and where in it the chunk is, not on its own words alone."""
        return content_hash(f"{self.text_hash.hex()} {self.start} {self.content}", scheme)


def split_text(source, id, text, chunker, metadata=None, page=None) -> list:
    """The chunks of one text as Chunks with source, page and chunk (1-based) in their metadata."""
    items = []
    text_hash = content_hash(text) if chunker.late else b""
    for number, (start, end) in enumerate(chunker.spans(text), 1):
        extra = {"source": source, **({"page": page} if page is not None else {}), "chunk": number}
        items.append(Chunk(chunk_id(id, number, page), text[start:end], {**(metadata or {}), **extra}, text, start,
                           text_hash))
    return items


class TextSource(Source):
    """One text input (a file, a row) cut into chunks; its id names the source."""

    def __init__(self, item: Item):
        self.item = item
        self.name = item.id

    def read(self, known, chunker):
        # The metadata is copied into every chunk, so a change to it is a change of the source.
        version = digest(self.item.content, json.dumps(self.item.metadata, sort_keys=True))
        if known is not None and known.digest == version:
            return None
        return Document(self.name, split_text(self.name, self.name, self.item.content, chunker, self.item.metadata), version)
