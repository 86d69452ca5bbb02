"""Vectors from files: NL-JSON, JSON, CSV or TSV rows with a vector column, or a .npy array
whose ids (and text and metadata) come from a second file, row for row.

Rows are read as a stream, a batch at a time, so a file larger than memory can be imported
(apart from a JSON array, which is parsed whole). A vector column holds a JSON array of
numbers: a list in JSON, its text in CSV.
"""

import io
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import EmbedkitError
from ..items import as_text, row_id, row_metadata
from ..sources.tabular import FORMATS, detect_format, read_rows
from ..upsert import Batch, VectorStats, upsert
from . import target

BATCH_ROWS = 5000
VECTOR_COLUMNS = ("embedding", "vector")


@dataclass
class Columns:
    """Which columns give the id, the vector, the text and the metadata.

    vector None: "embedding" or else "vector"; content None: "content" when there is one.
    A `metadata` column holding a JSON object is merged with metadata_columns.
    """

    id: str = "id"
    vector: str | None = None
    content: str | None = None
    metadata: list = field(default_factory=list)


def batches(path, columns: Columns, format=None, ids_path=None, batch_rows=BATCH_ROWS):
    """Batches of the vectors in path (see the module's description); ids_path names the
    file of ids that a .npy file needs."""
    format = format or ("npy" if path.lower().endswith(".npy") else None)
    if format == "npy":
        if ids_path is None:
            raise EmbedkitError(f"{path}: a .npy file holds vectors only: give their ids with --ids FILE")
        yield from _npy_batches(path, ids_path, columns, batch_rows)
        return
    if ids_path is not None:
        raise EmbedkitError("--ids goes with a .npy file of vectors; this file's rows have their own ids")
    rows = _rows(path, format)
    vector_column = columns.vector
    batch = []
    for row, where in rows:
        if vector_column is None:
            vector_column = next((c for c in VECTOR_COLUMNS if c in row), None)
            if vector_column is None:
                raise EmbedkitError(
                    f"{where}: no 'embedding' or 'vector' column (columns: {', '.join(map(str, row))}); "
                    "choose one with --vector-column"
                )
        batch.append((row, where))
        if len(batch) == batch_rows:
            yield _batch(batch, columns, vector_column)
            batch = []
    if batch:
        yield _batch(batch, columns, vector_column)


def _batch(rows, columns, vector_column) -> Batch:
    ids, vectors, content, metadata = [], [], [], []
    for row, where in rows:
        ids.append(row_id(row, columns.id, where))
        if vector_column not in row:
            raise EmbedkitError(f"{where}: no {vector_column!r} column")
        vectors.append(_vector(row[vector_column], where))
        text, meta = _text_and_metadata(row, columns, where)
        content.append(text)
        metadata.append(meta)
    return Batch(ids, vectors, content, metadata)


def _vector(value, where):
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise EmbedkitError(f"{where}: the vector is not a JSON array of numbers") from None
    if not isinstance(value, list) or not value or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise EmbedkitError(f"{where}: the vector is not a JSON array of numbers")
    return value


def _text_and_metadata(row, columns, where):
    content_column = columns.content or ("content" if "content" in row else None)
    if content_column is not None and content_column not in row:
        raise EmbedkitError(f"{where}: no {content_column!r} column")
    text = row.get(content_column) if content_column else None
    if text is not None and not isinstance(text, str):
        text = as_text(text)
    return text or None, row_metadata(row, columns.metadata, where)


def _rows(path, format):
    """(row, where) pairs from a file or stdin ('-'), streamed where the format allows."""
    name = "stdin" if path == "-" else path
    if path != "-" and os.path.isdir(path):
        raise EmbedkitError(f"{path}: is a directory, not a file")
    try:
        stream = _open(path)
    except OSError as ex:
        raise EmbedkitError(f"{path}: {ex.strerror}") from None
    with stream:
        # Enough of the start to tell the format (the last character may be cut in two).
        format = format or detect_format(name, stream.peek(4096)[:4096].decode("utf-8", errors="ignore"))
        if format not in FORMATS:
            raise EmbedkitError(f"{name}: unknown format {format!r}")
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        try:
            yield from read_rows(text, name, format)
        except UnicodeDecodeError as ex:
            raise EmbedkitError(f"{name}: not valid utf-8 ({ex.reason})") from None


def _open(path):
    import sys

    return sys.stdin.buffer if path == "-" else open(path, "rb")


def _npy_batches(path, ids_path, columns, batch_rows):
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as ex:
        raise EmbedkitError(f"{path}: not a .npy array of numbers ({ex})") from None
    if array.ndim != 2 or array.dtype.kind not in "fiu":
        raise EmbedkitError(f"{path}: a .npy file of vectors must hold a 2-d array of numbers, not {array.ndim}-d {array.dtype}")
    ids = list(_npy_ids(ids_path, columns))
    if len(ids) != len(array):
        raise EmbedkitError(f"{path} has {len(array)} vectors and {ids_path} {len(ids)} ids: they must pair up row for row")
    for start in range(0, len(ids), batch_rows):
        chunk = ids[start : start + batch_rows]
        yield Batch([id for id, _, _ in chunk], np.asarray(array[start : start + len(chunk)]),
                    [text for _, text, _ in chunk], [meta for _, _, meta in chunk])


def _npy_ids(path, columns):
    """(id, content, metadata) per line of a text file of ids, or per row of a rows file."""
    if path.lower().endswith(".txt"):
        try:
            with open(path, encoding="utf-8-sig") as fp:
                for number, line in enumerate(fp, 1):
                    id = line.rstrip("\r\n")
                    if not id:
                        raise EmbedkitError(f"{path} line {number}: empty id")
                    yield id, None, None
        except OSError as ex:
            raise EmbedkitError(f"{path}: {ex.strerror}") from None
        except UnicodeDecodeError as ex:
            raise EmbedkitError(f"{path}: not valid utf-8 ({ex.reason})") from None
        return
    for row, where in _rows(path, None):
        yield (row_id(row, columns.id, where), *_text_and_metadata(row, columns, where))


def import_file(db, name, path, columns=None, format=None, ids_path=None, model=None, progress=None) -> VectorStats:
    """Store the vectors of a file in collection name (see importers.target), in one
    transaction. model names the model that made them from their text (upsert.upsert).
    progress(n) is called as n more items are stored."""
    collection = target(db, name, model)
    try:
        return upsert(collection, batches(path, columns or Columns(), format, ids_path), model, progress)
    except EmbedkitError as ex:
        source = "stdin" if path == "-" else path
        if str(ex).startswith(source):
            raise
        raise EmbedkitError(f"{source}: {ex}") from None  # a vector or id at fault: name the file too


def count_rows(path, format=None):
    """About how many items a file holds, for a progress bar (its lines, or the rows of a .npy
    file); None for standard input and a JSON array."""
    if path == "-" or not os.path.isfile(path):
        return None
    if (format or ("npy" if path.lower().endswith(".npy") else None)) == "npy":
        try:
            return len(np.load(path, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError):
            return None
    with open(path, "rb") as fp:
        if fp.read(4096).lstrip().startswith(b"["):
            return None
        fp.seek(0)
        lines = 0
        while block := fp.read(1 << 20):
            lines += block.count(b"\n")
    return lines
