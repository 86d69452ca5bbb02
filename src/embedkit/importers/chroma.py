"""Collections from a Chroma persistent directory, read without chromadb.

A Chroma directory (`chromadb.PersistentClient(path=DIR)`, Chroma 0.4 and later) holds
`chroma.sqlite3` and a folder per vector segment:

- ids, documents and metadata are rows of the metadata segment in chroma.sqlite3
  (`embeddings`, `embedding_metadata`, `embedding_metadata_array`; the document under the
  key `chroma:document`);
- vectors are in the segment folder's hnswlib index (`header.bin`, `data_level0.bin`), whose
  labels `index_metadata.pickle` maps to ids, up to the segment's sequence number (table
  `max_seq_id`); what came later is still in the write-ahead log, table `embeddings_queue`
  (operations add, update, upsert and delete, vectors as float32 BLOBs).

Collections whose space is "cosine" give their vectors back normalised to unit length from
the index (hnswlib stores them so); cosine similarity is the same.

The format is checked against what embedkit knows before anything is read: the migrations
chroma.sqlite3 records and the index's header version. Anything else is refused, naming
what was found.
"""

import json
import os
import pickle
import struct
from dataclasses import dataclass

import numpy as np

from .. import storage
from ..errors import EmbedkitError
from ..upsert import Batch, VectorStats, upsert
from . import chosen, target

BATCH_ROWS = 5000
# The migrations of chroma.sqlite3 as chromadb 1.5.9 applies them, by directory. Older
# versions (since 0.4, the first with chroma.sqlite3) applied the first few of each.
NEWEST_KNOWN = "1.5.9"
MIGRATIONS = {
    "sysdb": [
        "00001-collections.sqlite.sql",
        "00002-segments.sqlite.sql",
        "00003-collection-dimension.sqlite.sql",
        "00004-tenants-databases.sqlite.sql",
        "00005-remove-topic.sqlite.sql",
        "00006-collection-segment-metadata.sqlite.sql",
        "00007-collection-config.sqlite.sql",
        "00008-maintenance-log.sqlite.sql",
        "00009-segment-collection-not-null.sqlite.sql",
        "00010-collection-schema.sqlite.sql",
    ],
    "metadb": [
        "00001-embedding-metadata.sqlite.sql",
        "00002-embedding-metadata.sqlite.sql",
        "00003-full-text-tokenize.sqlite.sql",
        "00004-metadata-indices.sqlite.sql",
        "00005-max-seq-id-int.sqlite.sql",
        "00006-metadata-array-support.sqlite.sql",
    ],
    "embeddings_queue": [
        "00001-embeddings.sqlite.sql",
        "00002-embeddings-queue-config.sqlite.sql",
    ],
}
# Operation codes of embeddings_queue.
ADD, UPDATE, UPSERT, DELETE = range(4)
DOCUMENT_KEY = "chroma:document"
# hnswlib's header as Chroma's fork saves it: a format version, then the index's fields.
HEADER = struct.Struct("<iQQQQQQiIQQQdQ")
HEADER_VERSION = 1
DELETED = 0x01  # in the third byte of an element's level-0 link list header


@dataclass
class ChromaCollection:
    id: str
    name: str
    count: int
    space: str  # "l2", "cosine" or "ip"
    embedding_function: str  # the name Chroma recorded, or None


class ChromaDirectory:
    """An open Chroma persistent directory (read only)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise EmbedkitError(f"{self.path}: not a directory (give the folder Chroma's PersistentClient was given)")
        files = set(os.listdir(self.path))
        if {"chroma-collections.parquet", "chroma-embeddings.parquet"} & files:
            raise EmbedkitError(
                f"{self.path}: a Chroma 0.3 directory (DuckDB and Parquet), which embedkit does not read: "
                "open it once with chromadb 0.4 or later to convert it to chroma.sqlite3"
            )
        if "chroma.sqlite3" not in files:
            raise EmbedkitError(f"{self.path}: no chroma.sqlite3, so not a Chroma persistent directory")
        database = os.path.join(self.path, "chroma.sqlite3")
        self.conn = storage.sqlite3.connect(f"file:{_uri_path(database)}?mode=ro", uri=True)
        try:
            self._check_format()
        except BaseException:
            self.conn.close()
            raise

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_format(self):
        try:
            applied = self.conn.execute("select dir, version, filename from migrations order by dir, version").fetchall()
        except storage.sqlite3.DatabaseError as ex:
            raise EmbedkitError(f"{self.path}/chroma.sqlite3: not a Chroma database ({ex})") from None
        for directory, version, filename in applied:
            known = MIGRATIONS.get(directory, [])
            if version <= len(known) and known[version - 1] == filename:
                continue
            newer = directory in MIGRATIONS and version > len(known)
            raise EmbedkitError(
                f"{self.path}: made by "
                + (f"a Chroma newer than {NEWEST_KNOWN}" if newer else "a Chroma version embedkit does not know")
                + f" (its chroma.sqlite3 has migration {directory}/{filename}); embedkit reads the format of "
                f"Chroma 0.4 to {NEWEST_KNOWN}"
            )
        if not applied:
            raise EmbedkitError(f"{self.path}/chroma.sqlite3: no Chroma migrations recorded, so not a Chroma database")

    def collections(self) -> list:
        result = []
        rows = self.conn.execute("select id, name from collections order by name").fetchall()
        for id, name in rows:
            metadata_segment = self._segment(id, "METADATA")
            count = self.conn.execute(
                "select count(*) from embeddings where segment_id = ?", [metadata_segment]
            ).fetchone()[0]
            result.append(ChromaCollection(id, name, count, *self._space_and_function(id)))
        return result

    def collection(self, name) -> ChromaCollection:
        found = {c.name: c for c in self.collections()}
        if name not in found:
            raise EmbedkitError(f"no collection named {name!r} in {self.path} (collections: {', '.join(found) or 'none'})")
        return found[name]

    def _segment(self, collection_id, scope):
        row = self.conn.execute(
            "select id from segments where collection = ? and scope = ?", [collection_id, scope]
        ).fetchone()
        if row is None:
            raise EmbedkitError(f"{self.path}: collection {collection_id} has no {scope.lower()} segment")
        return row[0]

    def _space_and_function(self, collection_id):
        """The distance space and the embedding function's name, wherever this version keeps them."""
        space, function = None, None
        row = self.conn.execute(
            "select str_value from collection_metadata where collection_id = ? and key = 'hnsw:space'", [collection_id]
        ).fetchone()
        space = row[0] if row else None
        columns = _columns(self.conn, "collections")
        for column in ("schema_str", "config_json_str"):
            if column not in columns:
                continue
            text = self.conn.execute(f"select {column} from collections where id = ?", [collection_id]).fetchone()[0]
            try:
                settings = json.loads(text or "{}")
            except ValueError:
                continue
            vector_index = _find(settings, "vector_index") or {}
            config = vector_index.get("config", {}) if isinstance(vector_index, dict) else {}
            space = space or config.get("space") or (_find(settings, "hnsw_configuration") or {}).get("space")
            function = function or (config.get("embedding_function") or _find(settings, "embedding_function") or {}).get("name")
        return space or "l2", function

    def batches(self, collection: ChromaCollection, batch_rows=BATCH_ROWS):
        """The collection's items, a Batch (ids, vectors, documents, metadata) at a time, in
        the order Chroma added them."""
        items = self._items(collection)
        vectors = self._vectors(collection)
        ids = list(items)
        for start in range(0, len(ids), batch_rows):
            chunk = ids[start : start + batch_rows]
            missing = next((id for id in chunk if id not in vectors), None)
            if missing is not None:
                raise EmbedkitError(
                    f"{self.path}: item {missing!r} of collection {collection.name!r} has no vector in the index "
                    "or the log (a directory copied while Chroma was writing?)"
                )
            yield Batch(chunk, [vectors[id] for id in chunk], [items[id][0] for id in chunk],
                        [items[id][1] or None for id in chunk])

    def _items(self, collection) -> dict:
        """id -> (document, metadata): the metadata segment, then the log entries after it."""
        segment = self._segment(collection.id, "METADATA")
        items: dict[str, list] = {}
        for item, key, string, integer, real, boolean in self.conn.execute(
            f"""
            select e.embedding_id, m.key, m.string_value, m.int_value, m.float_value, {_bool_column(self.conn, 'embedding_metadata')}
            from embeddings e left join embedding_metadata m on m.id = e.id
            where e.segment_id = ? order by e.id
            """,
            [segment],
        ):
            entry = items.setdefault(item, [None, {}])
            if key == DOCUMENT_KEY:
                entry[0] = _value(string, integer, real, boolean)
            elif key is not None and not key.startswith("chroma:"):
                entry[1][key] = _value(string, integer, real, boolean)
        if "embedding_metadata_array" in _tables(self.conn):
            for item, key, string, integer, real, boolean in self.conn.execute(
                """
                select e.embedding_id, a.key, a.string_value, a.int_value, a.float_value, a.bool_value
                from embedding_metadata_array a join embeddings e on e.id = a.id
                where e.segment_id = ? order by a.rowid
                """,
                [segment],
            ):
                items[item][1].setdefault(key, []).append(_value(string, integer, real, boolean))
        for _, operation, id, _, _, metadata in self._log(collection, self._max_seq_id(segment)):
            metadata = json.loads(metadata) if metadata else {}
            document = metadata.pop(DOCUMENT_KEY, None)
            if operation == DELETE:
                items.pop(id, None)
            elif operation in (ADD, UPSERT) and (id not in items or operation == UPSERT):
                old = items.get(id, [None, {}]) if operation == UPSERT else [None, {}]
                items[id] = [document if document is not None else old[0], _merged(old[1], metadata)]
            elif operation == UPDATE and id in items:
                if document is not None:
                    items[id][0] = document
                items[id][1] = _merged(items[id][1], metadata)
        return {id: (document, metadata) for id, (document, metadata) in items.items()}

    def _vectors(self, collection) -> dict:
        """id -> float32 vector: the persisted index, then the log entries after it."""
        segment = self._segment(collection.id, "VECTOR")
        vectors, done = self._index_vectors(segment)
        for _, operation, id, vector, encoding, _ in self._log(collection, done):
            if operation == DELETE:
                vectors.pop(id, None)
            elif vector and (operation != ADD or id not in vectors):
                vectors[id] = _decode(vector, encoding, self.path)
        return vectors

    def _index_vectors(self, segment):
        """(id -> vector, sequence number it is current to) from a segment's hnswlib files."""
        folder = os.path.join(self.path, segment)
        if not os.path.exists(os.path.join(folder, "header.bin")):
            return {}, 0  # nothing persisted yet: every vector is in the log
        with open(os.path.join(folder, "header.bin"), "rb") as fp:
            header = fp.read(HEADER.size)
        if len(header) != HEADER.size:
            raise EmbedkitError(f"{folder}/header.bin: {len(header)} bytes, not an hnswlib header embedkit knows")
        version, _, _, count, size, label_offset, data_offset = HEADER.unpack(header)[:7]
        if version != HEADER_VERSION:
            raise EmbedkitError(
                f"{folder}/header.bin: hnswlib index format version {version}, which embedkit does not know "
                f"(it reads version {HEADER_VERSION}, written by Chroma 0.4 to {NEWEST_KNOWN})"
            )
        if count == 0:  # an index created, nothing persisted in it yet
            return {}, self._max_seq_id(segment)
        mapping = _read_pickle(os.path.join(folder, "index_metadata.pickle"))
        labels = mapping.get("label_to_id") if isinstance(mapping, dict) else None
        if not isinstance(labels, dict):
            raise EmbedkitError(f"{folder}/index_metadata.pickle: no label_to_id mapping, a format embedkit does not know")
        dimensions = (label_offset - data_offset) // 4
        data = np.memmap(os.path.join(folder, "data_level0.bin"), dtype=np.uint8, mode="r")
        if len(data) < count * size:
            raise EmbedkitError(f"{folder}/data_level0.bin: shorter than the {count} elements its header counts")
        elements = data[: count * size].reshape(count, size)
        deleted = (elements[:, 2] & DELETED).astype(bool)
        found = elements[:, label_offset : label_offset + 8].copy().view("<u8").ravel()
        vectors = {}
        for position in np.flatnonzero(~deleted):
            id = labels.get(int(found[position]))
            if id is not None:
                vectors[id] = elements[position, data_offset : data_offset + 4 * dimensions].copy().view("<f4")
        done = mapping.get("max_seq_id")
        if done is None:
            done = self._max_seq_id(segment)
        return vectors, done

    def _max_seq_id(self, segment) -> int:
        row = self.conn.execute("select seq_id from max_seq_id where segment_id = ?", [segment]).fetchone()
        if row is None:
            return 0
        # Chroma 0.4 kept it as a big-endian BLOB, later versions as an integer.
        return int.from_bytes(row[0], "big") if isinstance(row[0], bytes) else int(row[0])

    def _log(self, collection, after):
        return self.conn.execute(
            "select seq_id, operation, id, vector, encoding, metadata from embeddings_queue "
            "where seq_id > ? and (topic = ? or topic like ?) order by seq_id",
            [after, collection.id, "%/" + collection.id],
        )


def _uri_path(path) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))


def _columns(conn, table) -> set:
    return {row[1] for row in conn.execute(f"pragma table_info({storage.quote(table)})")}


def _tables(conn) -> set:
    return {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}


def _bool_column(conn, table) -> str:
    return "m.bool_value" if "bool_value" in _columns(conn, table) else "null"


def _value(string, integer, real, boolean):
    if boolean is not None:
        return bool(boolean)
    if integer is not None:
        return integer
    if real is not None:
        return real
    return string


def _merged(old: dict, new: dict) -> dict:
    merged = dict(old)
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)  # Chroma's update removes a key given as None
        else:
            merged[key] = value
    return merged


def _decode(blob, encoding, path):
    if encoding == "FLOAT32":
        return np.frombuffer(blob, dtype="<f4")
    if encoding == "INT32":
        return np.frombuffer(blob, dtype="<i4").astype(np.float32)
    raise EmbedkitError(f"{path}: a vector in the log is encoded as {encoding!r}, which embedkit does not know")


def _find(settings, key):
    """The first value under key anywhere in nested JSON settings."""
    if isinstance(settings, dict):
        if key in settings:
            return settings[key]
        children = settings.values()
    elif isinstance(settings, list):
        children = settings
    else:
        return None
    for child in children:
        found = _find(child, key)
        if found is not None:
            return found
    return None


class _DataOnly(pickle.Unpickler):
    """Unpickles plain data only: a pickle naming any class or function is refused, so a
    crafted file cannot run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}")


def _read_pickle(path):
    try:
        with open(path, "rb") as fp:
            return _DataOnly(fp).load()
    except FileNotFoundError:
        raise EmbedkitError(f"{path}: missing (the index's labels cannot be matched to ids)") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as ex:
        raise EmbedkitError(f"{path}: not a label mapping embedkit knows ({ex})") from None


@dataclass
class Copied:
    """What import-chroma did with one collection."""

    name: str  # of the embedkit collection
    source: ChromaCollection
    stats: VectorStats


def copy(db, path, names=None, into=None, model=None, progress=None) -> list:
    """Copy the Chroma collections named (all of them by default) from the directory at path
    into db, each in one transaction. model names the model that made their vectors from
    their documents, for new collections (see importers.target); without, they have none.
    progress(n, total) is called as n more items of a collection of total are copied."""
    with ChromaDirectory(path) as directory:
        found = {c.name: c for c in directory.collections()}
        copied = []
        for name, target_name in chosen(found, names, into, path).items():
            collection = target(db, target_name, model)
            tick = (lambda n, total=found[name].count: progress(n, total)) if progress else None
            stats = upsert(collection, directory.batches(found[name]), model, tick)
            copied.append(Copied(target_name, found[name], stats))
        return copied
