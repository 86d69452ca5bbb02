"""Related items: every item's nearest neighbours, precomputed for static sites."""

import hashlib
import json
import os
import pathlib
import re
from dataclasses import dataclass

import numpy as np

from . import jsondata, ranking, storage, vectors
from .errors import EmbedkitError
from .filters import Filter

# A name is kept as it is when it only has these characters: lower case only, so that two
# ids differing in case cannot land on one file of a case-insensitive file system.
_PLAIN = re.compile(r"[a-z0-9_-]")
MAX_NAME = 200
# Names Windows keeps for devices, whatever the extension, and the name of export's own
# index.json: their first letter is encoded.
_RESERVED = {"con", "prn", "aux", "nul", "index", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def file_name(id: str) -> str:
    """The file (without .json) holding an item's related list: safe for any id, on any OS.

    Characters other than a-z, 0-9, "_" and "-" become "~" and the two hex digits of each
    of their UTF-8 bytes (and the first letter of a Windows device name such as "con", or of
    "index", the index's own file); a name that would be longer than 200 characters is "~~"
    and the first 40 hex digits of the id's SHA-256 instead. related.js computes the same names.
    """
    name = "".join(
        char if _PLAIN.fullmatch(char) else "".join(f"~{byte:02X}" for byte in char.encode("utf-8")) for char in id
    )
    if len(name) > MAX_NAME:
        return "~~" + hashlib.sha256(id.encode("utf-8")).hexdigest()[:40]
    if name in _RESERVED:
        return f"~{ord(name[0]):02X}{name[1:]}"
    return name


BLOCK_MB = int(os.environ.get("EMBEDKIT_RELATED_BLOCK_MB", "128"))
# Scores are stored rounded, and ranked by the rounded value and then the id: the same
# collection gives the same lists whether they were computed at once or bit by bit.
DECIMALS = 6
# Above this share of changed items one pass over everything is as cheap as patching.
FULL_SHARE = 0.25
# Rows of related lists written per transaction (benchmarks/locks.py measures how long that
# holds the write lock).
WRITE_ROWS = 5_000


@dataclass
class RelatedStats:
    items: int = 0
    computed: int = 0  # lists computed against every item
    patched: int = 0  # lists kept, with changed items merged in
    unchanged: int = 0
    removed: int = 0  # lists of items gone from the collection (or no longer matching the filter)

    def summary(self) -> str:
        text = (f"{self.items} items: {self.computed} lists computed, {self.patched} updated, "
                f"{self.unchanged} unchanged")
        return text + (f", {self.removed} removed" if self.removed else "")


def table_name(collection) -> str:
    return f"{collection.name}_related"


def compute(collection, n=10, min_score=None, metadata=None, same=None, progress=None) -> RelatedStats:
    """Every item's n most similar items into the COLLECTION_related table.

    metadata (a dict) keeps only items whose metadata has those values, on both sides; same
    (a metadata key) relates an item only to items with the same value of it.

    The items are read in one snapshot, and the lists written as they are computed, at most
    WRITE_ROWS rows to a transaction, so that other writers get in between: a reader sees
    each item's old list or its new one, never a mix, and the record of what the lists were
    computed from is written last, so an interrupted run is completed by the next.
    """
    if n < 1:
        raise EmbedkitError(f"n must be at least 1, not {n}")
    progress = progress or (lambda done, total: None)  # done: lists finished since the last call
    conn = collection.db.conn
    settings = jsondata.dumps({"n": n, "min_score": min_score, "filter": metadata or {}, "same": same},
                              "the related settings", sort_keys=True)
    table = _ensure_table(collection)
    with storage.snapshot(conn):  # one snapshot for the version, the items and the lists stored
        version = collection.version()
        previous = conn.execute(
            f"select settings, version from {storage.RELATED} where collection = ?", [collection.name]
        ).fetchone()
        if previous == (settings, version):
            count = conn.execute(f"select count(*) from {storage.RELATED_ITEMS} where collection = ?",
                                 [collection.name]).fetchone()[0]
            return RelatedStats(items=count, unchanged=count)
        items = _Items.load(collection, metadata, same)
        known = {} if previous is None or previous[0] != settings else dict(conn.execute(
            f"select id, signature from {storage.RELATED_ITEMS} where collection = ?", [collection.name]))
        changed = [i for i, id in enumerate(items.ids) if known.get(id) != items.signatures[i]]
        current = set(items.ids)
        full = not known or len(changed) + len(known.keys() - current) > FULL_SHARE * max(len(items.ids), 1)
        old = {} if full else _stored_lists(conn, table)
        stored = set(old) if not full else {row[0] for row in conn.execute(f"select distinct id from {table}")}
    stale = stored - current  # lists of items gone (or no longer matching the filter)
    stats = RelatedStats(items=len(items.ids), removed=len(stale))

    if full:
        changed = list(range(len(items.ids)))
        for lists in _top(items, changed, n, min_score, progress):
            _write_lists(conn, table, lists)
        stats.computed = len(items.ids)
    else:
        changed_ids = {items.ids[i] for i in changed}
        # A list holding a changed or removed item may lose it, and then needs whatever came
        # next: computed again. Any other list can only gain changed items: merged in.
        redo = [i for i, id in enumerate(items.ids)
                if id in changed_ids or any(other in changed_ids or other not in current for other, _ in old.get(id, ()))]
        redo_set = set(redo)
        keep = [i for i in range(len(items.ids)) if i not in redo_set]
        for lists in _top(items, redo, n, min_score, progress):
            _write_lists(conn, table, lists)
        for lists in _merge(items, keep, changed, old, n, min_score) if changed else ():
            _write_lists(conn, table, lists)
            stats.patched += len(lists)
        stats.computed = len(redo)
        stats.unchanged = len(keep) - stats.patched

    with storage.transaction(conn):
        for chunk in storage.chunked(sorted(stale), storage.IN_CHUNK):
            conn.execute(f"delete from {table} where id in ({','.join('?' * len(chunk))})", chunk)
        if full:
            conn.execute(f"delete from {storage.RELATED_ITEMS} where collection = ?", [collection.name])
        else:
            conn.executemany(f"delete from {storage.RELATED_ITEMS} where collection = ? and id = ?",
                             [(collection.name, id) for id in sorted(known.keys() - current)])
        conn.executemany(
            f"insert or replace into {storage.RELATED_ITEMS} (collection, id, signature) values (?, ?, ?)",
            [(collection.name, items.ids[i], items.signatures[i]) for i in changed],
        )
        conn.execute(
            f"insert or replace into {storage.RELATED} (collection, settings, version, computed) values (?, ?, ?, ?)",
            [collection.name, settings, version, storage.now()],
        )
    return stats


def _write_lists(conn, table, lists):
    """Replace the stored lists of these items (id -> ranked neighbours), WRITE_ROWS rows or so
    to a transaction."""
    ids = sorted(lists)
    start = 0
    while start < len(ids):
        end, rows = start, 0
        while end < len(ids) and (end == start or rows + len(lists[ids[end]]) <= WRITE_ROWS):
            rows += len(lists[ids[end]])
            end += 1
        chunk = ids[start:end]
        with storage.transaction(conn):
            for part in storage.chunked(chunk, storage.IN_CHUNK):
                conn.execute(f"delete from {table} where id in ({','.join('?' * len(part))})", part)
            conn.executemany(
                f"insert into {table} (id, other_id, rank, score) values (?, ?, ?, ?)",
                ((id, other, rank, score) for id in chunk for rank, (other, score) in enumerate(lists[id], 1)),
            )
        start = end


def _ensure_table(collection) -> str:
    name = table_name(collection)
    conn = collection.db.conn
    registered = conn.execute(f"select 1 from {storage.REGISTRY} where table_name = ?", [name]).fetchone()
    columns = [row[1] for row in conn.execute(f"pragma table_info({storage.quote(name)})")]
    if registered or (columns and columns != ["id", "other_id", "rank", "score"]):
        raise EmbedkitError(f"{name} is already a table that embedkit did not make for related items; "
                            f"rename it to compute related items of {collection.name!r}")
    if not columns:
        with storage.transaction(conn):
            conn.execute(
                f"""
                create table {storage.quote(name)} (
                    id text not null,
                    other_id text not null,
                    rank integer not null,
                    score real not null,
                    primary key (id, rank)
                ) without rowid
                """
            )
            # which lists hold an item: those must be computed again when it changes
            conn.execute(f"create index {storage.quote(name + '_other')} on {storage.quote(name)} (other_id)")
            # A table made afresh (the user dropped the old one?) holds no lists, whatever the
            # state says was computed: forget that, for a full pass.
            conn.execute(f"delete from {storage.RELATED} where collection = ?", [collection.name])
            conn.execute(f"delete from {storage.RELATED_ITEMS} where collection = ?", [collection.name])
    return storage.quote(name)


@dataclass
class _Items:
    ids: list
    signatures: list
    groups: np.ndarray  # an integer per distinct value of the `same` key (all 0 without one)
    matrix: np.ndarray  # unit-length rows
    grouped: bool  # related only within groups (--same)

    @classmethod
    def load(cls, collection, metadata, same):
        """The items (metadata filtering them), in id order; those whose stored vector cannot be
        used are left out, with a warning naming them."""
        where, params = Filter(metadata or {}).condition()
        source = f"from {storage.quote(collection.table)} where {where}"
        conn = collection.db.conn
        count = conn.execute(f"select count(*) {source}", params).fetchone()[0]
        dims = collection.dimensions or 0
        matrix = np.empty((count, dims), dtype=np.float32)
        ids, signatures, group_values, unusable = [], [], [], []
        cursor = conn.execute(f"select id, embedding, content_hash, metadata {source} order by id", params)
        while rows := cursor.fetchmany(10_000):
            kept, chunk, bad = ranking.decode_rows(rows, dims)
            unusable += bad
            matrix[len(ids) : len(ids) + len(kept)] = chunk
            for id, blob, digest, meta in kept:
                group = json.dumps((json.loads(meta) if meta else {}).get(same), sort_keys=True) if same else ""
                ids.append(id)
                group_values.append(group)
                # The text's digest, in hex as embedkit once stored it (another program may have
                # written text there); a vector from elsewhere (no digest) is known by its bytes.
                if digest is None:
                    known = "vector:" + hashlib.blake2b(blob, digest_size=16).hexdigest()
                else:
                    known = digest.hex() if isinstance(digest, bytes) else str(digest)
                signatures.append(f"{known} {group}")
        ranking.warn_unusable(collection, unusable)
        matrix = matrix[: len(ids)]
        codes = {value: code for code, value in enumerate(sorted(set(group_values)))}
        vectors.normalize_rows(matrix)
        return cls(ids, signatures, np.array([codes[v] for v in group_values], dtype=np.int64), matrix,
                   same is not None)


def _ranked(items, row, scores, columns, n, min_score):
    """The n best (id, score) of the item at row against the items at columns, from its
    float32 scores over them.

    The scores kept are not the float32 ones: those come out of matrix products whose sums
    run in an order that depends on the shape of the block, so one pair's score can differ
    in its last bits between a full pass, a patch or another BLOCK_MB, round to a
    neighbouring 6th decimal and rank differently. Every item the float32 scores cannot rule
    out (within what float32 sums can be off by, of the n-th) is scored again in float64,
    where the order of the sum no longer shows after rounding. That also takes in every item
    of a tie, however many (equal content has equal vectors), so ties go by id.
    """
    if len(scores) == 0:
        return []
    k = min(n, len(scores))
    nth = np.partition(scores, len(scores) - k)[len(scores) - k]
    if nth == -np.inf:
        near = np.flatnonzero(scores != -np.inf)
    else:
        # float32 sums of d unit-vector products are off by at most about d * 2**-24
        near = np.flatnonzero(scores >= nth - (2.5 * items.matrix.shape[1] * 2.0**-24 + 10.0**-DECIMALS))
    others = columns[near]
    exact = items.matrix[others].astype(np.float64) @ items.matrix[row].astype(np.float64)
    candidates = [
        (round(float(score), DECIMALS), items.ids[j])
        for score, j in zip(exact, others)
        if min_score is None or score >= min_score
    ]
    candidates.sort(key=lambda pair: (-pair[0], pair[1]))
    return [(id, score) for score, id in candidates[:n]]


def _top(items, rows, n, min_score, progress):
    """{id: ranked neighbours} for the items at rows, against every item, a block of rows at a
    time (yielded as each is done) so that the score matrix stays within BLOCK_MB."""
    rows = list(rows)
    count = len(items.ids)
    block = max(1, BLOCK_MB * 2**20 // (4 * max(count, 1)))
    columns = np.arange(count)
    for start in range(0, len(rows), block):
        chunk = np.array(rows[start : start + block], dtype=np.int64)
        scores = items.matrix[chunk] @ items.matrix.T
        scores[np.arange(len(chunk)), chunk] = -np.inf  # never related to itself
        if items.grouped:
            scores[items.groups[chunk][:, None] != items.groups[None, :]] = -np.inf
        lists = {items.ids[i]: _ranked(items, i, scores[r], columns, n, min_score) for r, i in enumerate(chunk)}
        del scores  # before the next block is made: one block in memory, not two
        yield lists
        progress(len(chunk), len(rows))


def _merge(items, keep, changed, old, n, min_score):
    """{id: ranked neighbours} for the items at keep whose lists gain a changed item, a block
    at a time."""
    changed = np.array(changed, dtype=np.int64)
    block = max(1, BLOCK_MB * 2**20 // (4 * len(changed)))
    for start in range(0, len(keep), block):
        chunk = np.array(keep[start : start + block], dtype=np.int64)
        scores = items.matrix[chunk] @ items.matrix[changed].T
        if items.grouped:
            scores[items.groups[chunk][:, None] != items.groups[changed][None, :]] = -np.inf
        merged = {}
        for r, i in enumerate(chunk):
            new = _ranked(items, i, scores[r], changed, n, min_score)
            if not new:
                continue
            current = old.get(items.ids[i], [])
            ranked = sorted(set(current) | set(new), key=lambda pair: (-pair[1], pair[0]))[:n]
            if ranked != current:
                merged[items.ids[i]] = ranked
        del scores
        yield merged


def _stored_lists(conn, table) -> dict:
    lists: dict[str, list] = {}
    for id, other, score in conn.execute(f"select id, other_id, score from {table} order by id, rank"):
        lists.setdefault(id, []).append((other, score))
    return lists


def _lists(collection, fields, id=None) -> dict:
    """id -> [{"id", "score", *fields}] of the stored lists (of every item, or of one), best
    first; an item whose list is empty has []."""
    table = storage.quote(table_name(collection))
    rows = collection.db.conn.execute(
        f"select k.id, r.other_id, r.score, item.metadata, json_valid(item.metadata) from {storage.RELATED_ITEMS} as k "
        f"left join {table} as r on r.id = k.id "
        f"left join {storage.quote(collection.table)} as item on item.id = r.other_id "
        "where k.collection = ? and (? is null or k.id = ?) order by k.id, r.rank",
        [collection.name, id, id],
    )
    lists: dict[str, list] = {}
    for item, other, score, metadata, valid in rows:
        entries = lists.setdefault(item, [])
        if other is not None:
            if metadata and not valid:
                raise jsondata.stored_error(collection, other)
            entries.append(_entry(other, score, metadata, fields))
    return lists


def _entry(id, score, metadata, fields):
    metadata = json.loads(metadata) if metadata else {}
    keys = sorted(metadata) if fields is None else [key for key in fields if key in metadata]
    return {"id": id, "score": score, **{key: metadata[key] for key in keys}}


def document(collection, id, fields=None) -> dict:
    """The related list of one item as export-related writes it (fields: the metadata keys to
    include for each neighbour; all of them when None)."""
    _check_computed(collection)
    if id not in collection:
        raise EmbedkitError(f"no item with id {id!r} in collection {collection.name!r}")
    return {"id": id, "related": _lists(collection, fields, id).get(id, [])}


def precomputed(collection, id, n) -> list | None:
    """[(id, score)]: the n items most similar to item id, from its stored related list when
    that list is fresh (nothing written to the collection since) and was computed for at least
    n items with nothing left out (no --min-score, --filter or --same); else None. An exact
    search gives the same, at the cost of scanning every vector."""
    conn = collection.db.conn
    row = conn.execute(f"select settings, version from {storage.RELATED} where collection = ?",
                       [collection.name]).fetchone() if storage.table_exists(conn, storage.RELATED) else None
    if row is None or row[1] != collection.version():
        return None
    settings = json.loads(row[0])
    if settings["n"] < n or settings["min_score"] is not None or settings["filter"] or settings["same"] is not None:
        return None
    hits = conn.execute(f"select other_id, score from {storage.quote(table_name(collection))} where id = ? "
                        "order by rank limit ?", [id, n]).fetchall()
    return [(other, score) for other, score in hits]


def _check_computed(collection):
    if not storage.table_exists(collection.db.conn, table_name(collection)):
        raise EmbedkitError(f"collection {collection.name!r} has no related items yet: "
                            f"run embedkit related {collection.name} first")


@dataclass
class ExportStats:
    files: int = 0
    written: int = 0  # new or changed
    removed: int = 0

    def summary(self) -> str:
        return (f"{self.files} files, {self.written} written, {self.files - self.written} unchanged"
                + (f", {self.removed} removed" if self.removed else ""))


INDEX = "index.json"
COMBINED = "related.json"


def export(collection, directory, fields=None, combined=False) -> ExportStats:
    """Write the related lists as JSON: a file per item (NAME.json, see file_name) and an
    index.json of them, or with combined one related.json. Files whose bytes would not change
    are left alone, and files of items no longer related are removed, so a site build diffs cleanly."""
    _check_computed(collection)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lists = _lists(collection, fields)
    stats = ExportStats()
    if combined:
        stats.files = 1
        stats.written = int(_write(directory / COMBINED, {"collection": collection.name, "items": lists},
                                   f"the related lists of collection {collection.name!r}"))
        return stats
    names = {id: file_name(id) + ".json" for id in lists}
    index_path = directory / INDEX
    previous = _read_index(index_path)
    for id, entries in lists.items():
        stats.written += _write(directory / names[id], {"id": id, "related": entries}, f"the related list of {id!r}")
    for stale in sorted(set(previous.values()) - set(names.values())):
        (directory / stale).unlink(missing_ok=True)
        stats.removed += 1
    _write(index_path, {"collection": collection.name, "files": names}, "the index")
    stats.files = len(names)
    return stats


def _read_index(path) -> dict:
    """The files an earlier export wrote (only those are ever removed)."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        files = index["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    # Never follow a name out of the directory, whoever wrote the index.
    return {id: name for id, name in files.items()
            if isinstance(name, str) and name == file_name(id) + ".json"}


def _write(path, data, where) -> bool:
    text = jsondata.dumps(data, where, ensure_ascii=False, separators=(",", ":")) + "\n"
    data = text.encode("utf-8")
    if path.exists() and path.read_bytes() == data:
        return False
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)  # a reader (a web server) never sees half a file
    return True
