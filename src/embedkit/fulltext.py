"""Keyword search: an FTS5 index over each collection's stored text, BM25 ranking, and
reciprocal rank fusion of rankings (hybrid search).

Each collection has an external-content FTS5 table, `_embedkit_COLLECTION_fts`: it indexes
the collection table's `content` column without keeping a second copy of the text, and
reads the text back from the collection table by rowid. Three triggers on the collection
table (`_embedkit_COLLECTION_fts_ai`, `_ad`, `_au`) keep it in sync the way the FTS5
documentation describes, so writes from any client (the sqlite3 shell, sqlite-utils,
Datasette) are indexed too. Rows without stored text (embedded without --store) index no
words.

The index refers to rows by rowid, and the collection tables have an implicit rowid, which
SQLite does not promise to keep: VACUUM may renumber it (current SQLite versions keep it for
tables with an index, which collection tables always have, but older ones and a dump
restored into a new file do not), and an INSERT OR REPLACE from another client removes the
replaced row without firing the delete trigger. So before searching, keyword_top checks that
the index holds exactly the table's rowids (their count and sum) and rebuilds it if not;
the check runs again only once the collection or the schema has changed (VACUUM changes
the schema version).
"""

import json
import logging
import re
import threading

from . import storage
from .errors import EmbedkitError

log = logging.getLogger("embedkit")

# Reciprocal rank fusion's constant, the k in 1 / (k + rank): 60, as in Cormack, Clarke and
# Buettcher, "Reciprocal rank fusion outperforms Condorcet and individual rank learning
# methods" (SIGIR 2009). A larger k flattens the difference between ranks.
RRF_K = 60

# Case folding is the tokenizer's own; "remove_diacritics 2" makes "cafe" match "café" (and
# the other way round), for every diacritic Unicode composes, not only the common ones.
TOKENIZE = "unicode61 remove_diacritics 2"
# Stemming, a collection setting ("stemming" in the registry's settings): "porter" puts
# FTS5's Porter stemmer in front, so "flows", "flowing" and "flow" match each other; new
# collections get it (measured: docs/ranking.md), older ones keep "none" until rebuilt with
# `embedkit index COLLECTION --stemming porter`.
STEMMING = ("porter", "none")
DEFAULT_STEMMING = "porter"
# The triggers' suffixes, named after the SQLite documentation's example (tbl_ai, tbl_ad, tbl_au).
TRIGGERS = ("ai", "ad", "au")
# A word of the query: what unicode61 makes a token of, letters and digits (not "_").
WORD = re.compile(r"[^\W_]+")

_lock = threading.Lock()
# (database key, collection) -> (schema version, collection version) when the index was
# last found to match the table
_verified: dict[tuple, tuple] = {}


def table_name(name: str) -> str:
    """The FTS5 table of a collection.

    It ends in _fts, which none of FTS5's shadow tables (NAME_data, _idx, _docsize,
    _config) and none of embedkit's other objects (_embedkit_NAME_hash, _insert, ...) end
    in, so no two collections' names can clash: with _embedkit_fts_NAME instead, the index
    of collection "posts_data" would be the shadow table of that of "posts".
    """
    return f"_embedkit_{name}_fts"


def trigger_names(name: str) -> list:
    return [f"{table_name(name)}_{suffix}" for suffix in TRIGGERS]


def available(conn) -> bool:
    """Whether this connection's SQLite has FTS5."""
    try:
        conn.execute("create virtual table if not exists temp._embedkit_fts5_probe using fts5(x)")
        conn.execute("drop table temp._embedkit_fts5_probe")
        return True
    except Exception:
        return False


def stemming(conn, name: str) -> str:
    """The collection's stemming setting: "porter" or "none"."""
    row = conn.execute(f"select settings from {storage.REGISTRY} where name = ?", [name]).fetchone()
    return (json.loads(row[0] or "{}") if row else {}).get("stemming", "none")


def tokenizer(stemming: str) -> str:
    return f"porter {TOKENIZE}" if stemming == "porter" else TOKENIZE


def ensure(conn, name: str, table: str) -> bool:
    """Create the keyword index of a collection and its triggers where missing, and (re)fill
    the index from the table's rows, with the tokenizer its stemming setting asks for (an
    index made with another one is made again). False, doing nothing, where SQLite lacks FTS5."""
    if not available(conn):
        log.warning("embedkit: this SQLite has no FTS5, so collection %r gets no keyword index", name)
        return False
    fts, source = storage.quote(table_name(name)), storage.quote(table)
    wanted = tokenizer(stemming(conn, name))
    made = conn.execute("select sql from sqlite_master where name = ?", [table_name(name)]).fetchone()
    remake = made is not None and f"tokenize='{wanted}'" not in made[0]
    ai, ad, au = (storage.quote(trigger) for trigger in trigger_names(name))
    # content="TABLE" (double-quoted) is also how Datasette recognises a table's FTS index:
    # it then offers a search box on the collection's table page.
    content = '"' + table.replace('"', '""') + '"'
    with storage.transaction(conn):
        if remake:
            conn.execute(f"drop table {fts}")
        conn.execute(
            f"create virtual table if not exists {fts} using fts5(content, content={content}, "
            f"content_rowid='rowid', tokenize='{wanted}')"
        )
        # The documented external-content triggers: FTS5's 'delete' command must be given the
        # values that were indexed, so the old ones, before the new ones are indexed.
        conn.execute(
            f"""
            create trigger if not exists {ai} after insert on {source} begin
                insert into {fts} (rowid, content) values (new.rowid, new.content);
            end
            """
        )
        conn.execute(
            f"""
            create trigger if not exists {ad} after delete on {source} begin
                insert into {fts} ({fts}, rowid, content) values ('delete', old.rowid, old.content);
            end
            """
        )
        # Rewrites that keep the text (new metadata, the same content upserted again) cost nothing.
        conn.execute(
            f"""
            create trigger if not exists {au} after update on {source}
            when old.content is not new.content or old.rowid is not new.rowid begin
                insert into {fts} ({fts}, rowid, content) values ('delete', old.rowid, old.content);
                insert into {fts} (rowid, content) values (new.rowid, new.content);
            end
            """
        )
        conn.execute(f"insert into {fts} ({fts}) values ('rebuild')")
    return True


def drop(conn, name: str):
    """Drop a collection's keyword index and its triggers (dropping the table drops these too)."""
    with storage.transaction(conn):
        for trigger in trigger_names(name):
            conn.execute(f"drop trigger if exists {storage.quote(trigger)}")
        conn.execute(f"drop table if exists {storage.quote(table_name(name))}")


@storage.guarded
def rebuild(collection, stemming: str | None = None):
    """Rebuild a collection's keyword index (and its triggers) from the rows of its table;
    with stemming ("porter" or "none"), first make that the collection's setting."""
    conn = collection.db.conn
    collection.db.require_writable()
    if stemming is not None:
        if stemming not in STEMMING:
            raise EmbedkitError(f"stemming must be one of {', '.join(STEMMING)}, not {stemming!r}")
        with storage.transaction(conn):
            conn.execute(
                f"update {storage.REGISTRY} set settings = json_set(coalesce(settings, '{{}}'), '$.stemming', ?) "
                "where name = ?",
                [stemming, collection.name],
            )
    if not ensure(conn, collection.name, collection.table):
        raise EmbedkitError("keyword search needs SQLite's FTS5 extension, which this SQLite lacks")
    forget(collection.db.key, collection.name)


def forget(db_key, name=None):
    """Forget which indexes of a database (or which one) were found to be in sync."""
    with _lock:
        for key in [k for k in _verified if k[0] == db_key and name in (None, k[1])]:
            del _verified[key]


def problem(conn, name, table):
    """Why the index no longer matches the table, or None if it does."""
    objects = [table_name(name), *trigger_names(name)]
    found = {
        row[0]
        for row in conn.execute(
            f"select name from sqlite_master where name in ({', '.join('?' * len(objects))})", objects
        )
    }
    missing = [o for o in objects if o not in found]
    if missing:
        return f"{', '.join(missing)} missing"
    # FTS5 keeps one _docsize row per indexed row, keyed by its rowid: the same rowids, or
    # the table's were renumbered (VACUUM, a dump restored) or rows went without the delete
    # trigger firing (INSERT OR REPLACE). total(): a float sum cannot overflow.
    source, docsize = storage.quote(table), storage.quote(table_name(name) + "_docsize")
    rows, rowids, indexed, indexed_ids = conn.execute(
        f"select (select count(*) from {source}), (select total(rowid) from {source}), "
        f"(select count(*) from {docsize}), (select total(id) from {docsize})"
    ).fetchone()
    if rows != indexed:
        return f"it indexes {indexed} rows, the table has {rows}"
    if rowids != indexed_ids:
        return "the table's rowids have changed, as VACUUM or a dump restored may do"
    return None


def _check(collection):
    """Make sure the collection's index matches its table, rebuilding it if it does not."""
    conn = collection.db.conn
    key = (collection.db.key, collection.name)
    state = (conn.execute("pragma schema_version").fetchone()[0], collection.version())
    with _lock:
        if _verified.get(key) == state:
            return
    found = problem(conn, collection.name, collection.table)
    if found is not None:
        if collection.db.read_only:
            raise EmbedkitError(
                f"the keyword index of collection {collection.name!r} no longer matches its table ({found}), and "
                f"the database is read-only here: run `embedkit check --fix {collection.db.path}` where it can be "
                "written"
            )
        log.warning(
            "embedkit: rebuilding the keyword index of collection %r, which no longer matches its table (%s)",
            collection.name, found,
        )
        try:
            if not ensure(conn, collection.name, collection.table):
                raise EmbedkitError("keyword search needs SQLite's FTS5 extension, which this SQLite lacks")
        except collection.db.sqlite_error as ex:
            fts = table_name(collection.name)
            raise EmbedkitError(
                f"the keyword index of collection {collection.name!r} is out of date and cannot be rebuilt "
                f"here ({ex}); open the database writable once, or run: "
                f"insert into \"{fts}\" (\"{fts}\") values ('rebuild')"
            ) from ex
        state = (conn.execute("pragma schema_version").fetchone()[0], collection.version())
    # Inside a transaction the rows may be uncommitted, and a rollback reuses the version
    # number: only a state seen outside one may be remembered.
    if not conn.in_transaction:
        with _lock:
            _verified[key] = state


def match_query(text: str) -> str:
    """Free text as an FTS5 query that cannot be a syntax error: each word (a run of letters
    and digits) a double-quoted string, the strings joined with OR.

    Quoted, FTS5 syntax (AND, OR, NOT, NEAR(, *, ^, :, parentheses) is only text. OR, not
    AND (FTS5's default): an item needs only some of the words, and BM25 ranks those with
    more of them, and rarer ones, first, so a natural-language query finds something, as
    vector search does. Words written together with punctuation ("sqlite-vec", "don't",
    "v1.2") are also asked for as a phrase, which FTS5's tokenizer splits as it split the
    stored text: an item that has them side by side scores higher, one that has them apart
    still matches. Repeats are left out.
    """
    if not text or not text.strip():
        raise EmbedkitError("the query text is empty")
    terms, seen = [], set()
    for chunk in text.split():
        words = WORD.findall(chunk)
        for term in ([chunk] if len(words) > 1 else []) + words:
            quoted = '"' + term.replace('"', '""') + '"'
            if quoted.casefold() not in seen:
                seen.add(quoted.casefold())
                terms.append(quoted)
    if not terms:
        raise EmbedkitError(f"the query text {text.strip()!r} has no words to search for (letters or digits)")
    return " OR ".join(terms)


def keyword_top(collection, text: str, n: int, condition=None, params=()) -> list:
    """[(id, score)] of the n items whose stored text best matches text by BM25, best first.

    score is -bm25() (SQLite's bm25() is lower for better matches), so higher is better; it
    is comparable between the results of one query only. Ties are broken by id. Matching
    ignores case and diacritics (see match_query for how text becomes a query). condition
    (with params for its ? placeholders) is an SQL boolean expression over the collection
    table's columns, unqualified, such as "json_extract(metadata, '$.tag') = ?": only
    rows it holds for are ranked, so n results come back whenever n matching rows contain
    a word of the query.
    """
    query = match_query(text)
    if n <= 0:
        return []
    conn = collection.db.conn
    _check(collection)
    fts, source = storage.quote(table_name(collection.name)), storage.quote(collection.table)
    restrict = ""
    if condition is not None and str(condition).strip() != "1":
        # A subquery of the collection table alone, so that its columns (content above all,
        # which the FTS table has too) need no qualifying; evaluated for each match by rowid,
        # which for a rare word costs a few lookups instead of a scan of the condition's rows
        # (and "fts.rowid in (...)" would make FTS5 run the whole query once per row).
        restrict = (
            f"and exists (select 1 from {source} as candidate "
            f"where candidate.rowid = item.rowid and ({condition}))"
        )
    rows = conn.execute(
        f"""
        select item.id, -bm25({fts}) from {fts} join {source} as item on item.rowid = {fts}.rowid
        where {fts} match ? {restrict}
        order by bm25({fts}), item.id
        limit ?
        """,
        [query, *params, n],
    ).fetchall()
    if not rows and not _stores_text(collection):
        raise EmbedkitError(
            f"collection {collection.name!r} stores no text: keyword search needs embed-multi --store"
        )
    return [(id, float(score)) for id, score in rows]


def _stores_text(collection) -> bool:
    # The index's size record of each row (a varint per column: its number of words) is
    # 0x00 for a row without text; this reads those small records, not the whole table.
    docsize = storage.quote(table_name(collection.name) + "_docsize")
    return collection.db.conn.execute(f"select exists (select 1 from {docsize} where sz != x'00')").fetchone()[0] == 1


def fuse(rankings, k: int = RRF_K) -> list:
    """Reciprocal rank fusion: [(id, score)], highest score first, then by id.

    rankings are lists of ids, best first; an id's score is the sum, over the lists that
    have it, of 1 / (k + rank), rank counting from 1. Only ranks matter, so rankings whose
    scores are not comparable (cosine similarity, BM25) fuse fairly.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, id in enumerate(ranking, 1):
            scores[id] = scores.get(id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
