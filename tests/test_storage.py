"""Connections, migrations, WAL and concurrent readers and writers."""

import hashlib
import sqlite3
import threading
import time

import numpy as np
import pytest

import embedkit
from conftest import dump
from embedkit import Item, fulltext, migrations, models, quantized, storage


def migration_rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            f"select id, name, applied_at from {migrations.TABLE} where migration_set = 'embedkit' order by id"
        ).fetchall()
    finally:
        conn.close()


def test_migrations_are_applied_once_and_recorded(db, db_path, letters):
    assert migrations.applied(db.conn) == []  # an empty database gets no tables until needed
    db.create_collection("docs", model="test-letters")
    rows = migration_rows(db_path)
    assert [(id, name) for id, name, _ in rows] == [
        (number, fn.__name__) for number, fn in enumerate(migrations.STEPS, 1)
    ]
    assert rows[0][1] == "m001_registry"
    assert migrations.pending(db.conn) == []
    # creating more collections does not migrate again
    db.create_collection("more", model="test-letters")
    assert migration_rows(db_path) == rows


def test_a_reopened_database_is_not_migrated_again(db_path, letters):
    with embedkit.Database(db_path) as db:
        db.create_collection("docs", model="test-letters").embed("1", "aaa")
    before = dump(db_path)
    rows = migration_rows(db_path)
    for _ in range(2):
        with embedkit.Database(db_path) as db:
            migrations.migrate(db.conn)
            assert len(db.collection("docs")) == 1
    assert migration_rows(db_path) == rows
    assert dump(db_path) == before


def test_a_new_migration_is_applied_once_to_an_older_database(db_path, letters, monkeypatch):
    with embedkit.Database(db_path) as db:
        db.create_collection("docs", model="test-letters").embed("1", "aaa")
    runs = []

    def m999_add_notes(conn):
        runs.append(conn)
        conn.execute("create table _embedkit_test_notes (note text)")

    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS, m999_add_notes])
    for _ in range(3):
        with embedkit.Database(db_path) as db:  # opening an older database upgrades it
            assert len(db.collection("docs")) == 1
    assert len(runs) == 1
    rows = migration_rows(db_path)
    assert [(id, name) for id, name, _ in rows][-1] == (len(migrations.STEPS), "m999_add_notes")
    assert len(rows) == len(migrations.STEPS)


def test_a_failing_migration_changes_nothing(db_path, letters, monkeypatch):
    with embedkit.Database(db_path) as db:
        db.create_collection("docs", model="test-letters").embed("1", "aaa")
    before = dump(db_path)

    def m999_broken(conn):
        conn.execute("create table _embedkit_half_done (x)")
        raise RuntimeError("migration failed half way")

    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS, m999_broken])
    with pytest.raises(RuntimeError, match="half way"):
        embedkit.Database(db_path)
    assert dump(db_path) == before


def test_the_migrations_table_of_older_versions_is_converted(db_path, letters, monkeypatch):
    """Databases made before sqlite-utils' Migrations recorded (id, name, applied): they are
    read as they are, and converted when the next migration is applied."""
    with embedkit.Database(db_path) as db:
        db.create_collection("docs", model="test-letters").embed("1", "aaa")
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(f"drop table {migrations.TABLE}")
        conn.execute(f"create table {migrations.TABLE} (id integer primary key, name text not null, applied text not null)")
        conn.executemany(
            f"insert into {migrations.TABLE} (id, name, applied) values (?, ?, '2026-01-01T00:00:00Z')",
            list(enumerate([step.__name__ for step in migrations.STEPS], 1)),
        )
    conn.close()
    before = dump(db_path)
    with embedkit.Database(db_path) as db:
        assert migrations.pending(db.conn) == []
    assert dump(db_path) == before  # nothing to do, nothing written

    def m999_add_notes(conn):
        conn.execute("create table _embedkit_test_notes (note text)")

    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS, m999_add_notes])
    with embedkit.Database(db_path) as db:
        assert len(db.collection("docs")) == 1
    rows = migration_rows(db_path)
    assert [name for _, name, _ in rows] == [step.__name__ for step in migrations.STEPS]
    assert [applied for _, _, applied in rows[:-1]] == ["2026-01-01T00:00:00Z"] * (len(rows) - 1)


def test_wal_mode_and_lock_timeout(db, db_path, monkeypatch):
    assert db.conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("pragma busy_timeout").fetchone()[0] == storage.LOCK_TIMEOUT * 1000 == 60_000
    plain = sqlite3.connect(db_path)  # WAL is a property of the file: every client gets it
    assert plain.execute("pragma journal_mode").fetchone()[0] == "wal"
    plain.close()
    with embedkit.Database(":memory:") as memory:
        assert memory.path == ":memory:"
        assert memory.conn.execute("pragma busy_timeout").fetchone()[0] == 60_000
    with embedkit.Database(db_path, lock_timeout=2.5) as other:
        assert other.conn.execute("pragma busy_timeout").fetchone()[0] == 2500
    monkeypatch.setenv("EMBEDKIT_LOCK_TIMEOUT", "0.25")
    with embedkit.Database(db_path) as other:
        assert other.lock_timeout == 0.25 and other.conn.execute("pragma busy_timeout").fetchone()[0] == 250
    monkeypatch.setenv("EMBEDKIT_LOCK_TIMEOUT", "soon")
    with pytest.raises(embedkit.EmbedkitError, match="EMBEDKIT_LOCK_TIMEOUT must be a number of seconds, not 'soon'"):
        embedkit.Database(db_path)


def test_transaction_rolls_back_on_any_exception(db, letters):
    docs = db.create_collection("docs", model="test-letters")
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with storage.transaction(db.conn):
                docs.embed("1", "aaa")  # nested: the outer transaction decides
                assert len(docs) == 1
                raise error
        assert len(docs) == 0
        assert not db.conn.in_transaction


def test_a_reader_sees_commits_while_the_writer_keeps_writing(db_path, letters):
    writer = embedkit.Database(db_path)
    docs = writer.create_collection("docs", model="test-letters")
    docs.embed("0", "first")
    reader = embedkit.Database(db_path)
    seen = reader.collection("docs")
    assert len(seen) == 1
    with storage.transaction(writer.conn):
        docs.embed_multi([Item("1", "aaa"), Item("2", "eee")])
        # uncommitted: the reader neither sees it nor waits for it
        assert len(seen) == 1
        assert [e.id for e in seen.similar("aaa", 5)] == ["0"]
    assert len(seen) == 3
    assert [e.id for e in seen.similar("aaa", 1)] == ["1"]
    writer.close()
    reader.close()


class HandshakeModel(models.EmbeddingModel):
    """Before each batch after the first, waits until the reader has seen the previous batch."""

    model_id = "test-storage-handshake"
    dimensions = 2
    source = "tests"

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.seen = 0
        self.condition = threading.Condition()

    def reader_saw(self, count):
        with self.condition:
            self.seen = max(self.seen, count)
            self.condition.notify_all()

    def _embed(self, texts):
        if self.calls > 1:
            with self.condition:
                wanted = (self.calls - 1) * self.batch_size
                if not self.condition.wait_for(lambda: self.seen >= wanted, timeout=10):
                    raise RuntimeError(f"the reader never saw {wanted} rows")
        return np.array([[1.0, float(len(text))] for text in texts])


def test_reader_and_writer_connections_run_side_by_side(db_path):
    batch_size, batches = 10, 8
    model = models.register(HandshakeModel(batch_size))
    with embedkit.Database(db_path) as setup:
        setup.create_collection("docs", model=model.model_id)
    errors, result = [], {}

    def write():
        try:
            with embedkit.Database(db_path) as db:
                result["stats"] = db.collection("docs").embed_multi(
                    [Item(f"{i:03d}", "x" * (i + 1)) for i in range(batch_size * batches)], batch_size=batch_size
                )
        except Exception as ex:  # reported below
            errors.append(ex)

    thread = threading.Thread(target=write)
    counts = []
    with embedkit.Database(db_path) as db:
        docs = db.collection("docs")
        thread.start()
        deadline = time.monotonic() + 30
        while thread.is_alive() and time.monotonic() < deadline:
            count = len(docs)
            counts.append(count)
            if count:
                assert len(docs.similar_by_vector([1.0, 1.0], 3)) == 3
            model.reader_saw(count)
            time.sleep(0.001)
        thread.join(10)
        final = len(docs)
    assert not errors, errors
    assert result["stats"].embedded == batch_size * batches
    assert final == batch_size * batches
    assert counts == sorted(counts)  # never goes back
    assert all(count % batch_size == 0 for count in counts)  # whole batches only
    # the reader saw every intermediate state while the writer was still writing
    assert set(range(batch_size, batch_size * batches, batch_size)) <= set(counts)


def test_a_second_writer_waits_instead_of_failing(db_path, letters):
    with embedkit.Database(db_path) as setup:
        setup.create_collection("docs", model="test-letters")
    locked, errors = threading.Event(), []

    def hold_the_write_lock():
        try:
            with embedkit.Database(db_path) as db:
                with storage.transaction(db.conn):
                    db.collection("docs").embed("first", "aaa")
                    locked.set()
                    time.sleep(0.5)
        except Exception as ex:
            errors.append(ex)

    thread = threading.Thread(target=hold_the_write_lock)
    thread.start()
    assert locked.wait(10)
    with embedkit.Database(db_path) as db:
        start = time.monotonic()
        db.collection("docs").embed("second", "eee")
        waited = time.monotonic() - start
        thread.join(10)
        assert [e.id for e in db.collection("docs")] == ["first", "second"]
    assert not errors, errors
    assert waited > 0.2


OLD_TABLE = """
    create table docs (
        id text primary key,
        embedding blob not null,
        content text,
        metadata text,
        content_hash text not null,
        updated text not null
    )
"""


def make_old_database(path, letters, monkeypatch):
    """A database as embedkit made them before m007: hex content hashes, ISO 8601 times, 8 KiB
    pages, with a keyword index and an int8 quantised index."""
    texts = {f"d{i}": f"document number {i} about {'apples' if i % 2 else 'pears'}" for i in range(40)}
    monkeypatch.setattr(storage, "PAGE_SIZE", 8192)
    monkeypatch.setattr(migrations, "STEPS", migrations.STEPS[:4])
    with embedkit.Database(path) as db:
        migrations.migrate(db.conn)
        with storage.transaction(db.conn):
            db.conn.execute(OLD_TABLE)
            db.conn.execute('create index "_embedkit_docs_hash" on docs (content_hash)')
            db.conn.execute(
                f"insert into {storage.REGISTRY} (name, table_name, model, dimensions, settings, created, version) "
                "values ('docs', 'docs', 'test-letters', 8, '{}', '2026-01-01T00:00:00Z', 7)"
            )
            for event in ("insert", "update", "delete"):
                db.conn.execute(f'create trigger "_embedkit_docs_{event}" after {event} on docs begin '
                                f"update {storage.REGISTRY} set version = version + 1 where name = 'docs'; end")
            db.conn.executemany(
                "insert into docs values (?, ?, ?, ?, ?, '2026-02-03T04:05:06Z')",
                [(id, letters.embed([text])[0].tobytes(), text, '{"k":1}',
                  hashlib.blake2b(text.encode(), digest_size=16).hexdigest()) for id, text in texts.items()],
            )
            fulltext.ensure(db.conn, "docs", "docs")
        if storage.has_sqlite_vec(db.conn):
            quantized.build(db.collection("docs"), "int8")
    monkeypatch.undo()
    return texts


def test_an_older_database_is_converted_to_the_compact_layout(db_path, letters, monkeypatch):
    texts = make_old_database(db_path, letters, monkeypatch)
    conn = sqlite3.connect(db_path)
    assert conn.execute("pragma page_size").fetchone()[0] == 8192
    triggers = sorted(row[0] for row in conn.execute("select name from sqlite_master where type = 'trigger'"))
    conn.close()
    with embedkit.Database(db_path) as db:
        assert "m007_compact_rows" in migrations.applied(db.conn)
        columns = {row[1]: (row[2], row[3]) for row in db.conn.execute("pragma table_info(docs)")}
        assert columns["content_hash"] == ("BLOB", 0) and columns["updated"] == ("INTEGER", 1)
        digest, updated = db.conn.execute("select content_hash, updated from docs where id = 'd3'").fetchone()
        assert digest == hashlib.blake2b(texts["d3"].encode(), digest_size=16).digest()
        assert updated == 1770091506  # 2026-02-03T04:05:06Z
        assert db.conn.execute("pragma page_size").fetchone()[0] == storage.PAGE_SIZE
        assert db.conn.execute("pragma freelist_count").fetchone()[0] == 0
        assert db.conn.execute("pragma journal_mode").fetchone()[0] == "wal"
        assert sorted(row[0] for row in db.conn.execute("select name from sqlite_master where type = 'trigger'")) == triggers
        docs = db.collection("docs")
        fts = storage.quote(fulltext.table_name("docs"))
        db.conn.execute(f"insert into {fts} ({fts}, rank) values ('integrity-check', 1)")
        assert [e.id for e in docs.similar("number 7", mode="keyword", n=1)] == ["d7"]
        # Nothing to embed again: the digests are those of the same text.
        letters.calls = 0
        stats = docs.embed_multi([Item(id, text, {"k": 1}) for id, text in texts.items()], store=True)
        assert (stats.unchanged, stats.embedded, letters.calls) == (40, 0, 0)
        version = docs.version()
        docs.delete("d0")
        assert docs.version() == version + 1
        if storage.has_sqlite_vec(db.conn):
            assert docs.similar_by_vector(letters.embed([texts["d9"]])[0], n=1)[0].id in {"d9", *texts}
            assert quantized.status(docs)["pending"] == 0
        # The registry takes a collection without a model now.
        assert db.create_collection("bare", model=False).model_id is None
