"""Writing many rows of a collection at once.

A collection's table carries embedkit's triggers: one bumps the collection's version, three
keep the keyword index (FTS5) in step, and with a quantised index three more log the ids
that changed. They fire once per row, which makes a bulk write of 100k rows twenty times
slower than the inserts alone. A Writer drops them for the length of one transaction and
does their work in bulk before it commits: one version bump, one FTS5 insert of every new
row's text, one insert into the change log. Dropping triggers is part of the transaction,
so a rollback brings them back; readers never see the table without them. Triggers of
other programs stay and fire as usual.
"""

from . import fulltext, quantized, storage

COLUMNS = "id, embedding, content, metadata, content_hash, updated"
# The largest rowid: past it SQLite stops numbering new rows max(rowid) + 1.
MAX_ROWID = 2**63 - 1


class Writer:
    """Inserts, rewrites and deletes of one collection's rows inside the caller's transaction.

    Rows are (id, embedding, content, metadata, content_hash, updated). insert() takes ids
    the table does not have, replace() and update_text() ids it has: the caller knows which
    from the lookups it made to decide what changed. The index and version bookkeeping is
    done by finish(), which must run before the transaction commits.
    """

    def __init__(self, conn, name: str, table: str):
        if not conn.in_transaction:
            raise RuntimeError("a Writer works inside a transaction")
        self.conn, self.name, self.raw_table, self.table = conn, name, table, storage.quote(table)
        self.changed = False
        self.inserted = 0
        self.inserted_ids: list[str] = []
        self.fts = storage.quote(fulltext.table_name(name)) if storage.table_exists(conn, fulltext.table_name(name)) else None
        log = quantized.names(name)["log"]
        self.log = storage.quote(log) if storage.table_exists(conn, log) else None
        self.last_rowid = conn.execute(f"select max(rowid) from {self.table}").fetchone()[0] or 0
        self.triggers = [
            (trigger, sql)
            for trigger, sql in conn.execute(
                "select name, sql from sqlite_master where type = 'trigger' and tbl_name = ?", [table]
            )
            if trigger in own_triggers(name)
        ]
        for trigger, _ in self.triggers:
            conn.execute(f"drop trigger {storage.quote(trigger)}")

    def insert(self, rows):
        rows = list(rows)
        if rows:
            self.conn.executemany(
                f"insert into {self.table} ({COLUMNS}) values (?, ?, ?, ?, ?, ?)", rows
            )
            self.inserted += len(rows)
            self.inserted_ids.extend(row[0] for row in rows)
            self.changed = True

    def upsert(self, rows):
        """insert() the rows whose ids the table does not have, replace() the others."""
        rows = list(rows)
        found = {id for (id,) in storage.select_in(self.conn, self.raw_table, "id", "id", [row[0] for row in rows])}
        self.insert([row for row in rows if row[0] not in found])
        self.replace([row for row in rows if row[0] in found])

    def replace(self, rows):
        """Rewrite whole rows (a new vector) of ids the table has."""
        for chunk in _chunks(list(rows)):
            self._retext(
                [(row[0], row[2]) for row in chunk],
                f"update {self.table} set embedding = ?, content = ?, metadata = ?, content_hash = ?, updated = ? "
                "where id = ?",
                [(*row[1:], row[0]) for row in chunk],
            )
            if self.log:
                self.conn.executemany(f"insert into {self.log} (id) values (?)", [(row[0],) for row in chunk])

    def update_text(self, rows):
        """Rewrite the stored text and metadata of ids the table has; rows are
        (id, content, metadata, updated)."""
        for chunk in _chunks(list(rows)):
            self._retext(
                [(row[0], row[1]) for row in chunk],
                f"update {self.table} set content = ?, metadata = ?, updated = ? where id = ?",
                [(*row[1:], row[0]) for row in chunk],
            )

    def delete(self, ids) -> int:
        deleted = 0
        for chunk in _chunks(list(ids)):
            where = f"where id in ({','.join('?' * len(chunk))})"
            if self.fts:
                self.conn.execute(
                    f"insert into {self.fts} ({self.fts}, rowid, content) "
                    f"select 'delete', rowid, content from {self.table} {where}",
                    chunk,
                )
            if self.log:
                self.conn.execute(f"insert into {self.log} (id) select id from {self.table} {where}", chunk)
            deleted += self.conn.execute(f"delete from {self.table} {where}", chunk).rowcount
        self.changed = self.changed or deleted > 0
        return deleted

    def _retext(self, texts, sql, params):
        """executemany(sql, params) on existing rows, keeping the keyword index in step where
        their text changes: FTS5 must be told the text it indexed before that text is gone."""
        self.changed = True
        if not self.fts:
            self.conn.executemany(sql, params)
            return
        ids = [id for id, _ in texts]
        old = {
            id: (rowid, content)
            for id, rowid, content in self.conn.execute(
                f"select id, rowid, content from {self.table} where id in ({','.join('?' * len(ids))})", ids
            )
        }
        moved = [(id, content) for id, content in texts if id in old and old[id][1] != content]
        self.conn.executemany(
            f"insert into {self.fts} ({self.fts}, rowid, content) values ('delete', ?, ?)",
            [old[id] for id, _ in moved],
        )
        self.conn.executemany(sql, params)
        self.conn.executemany(
            f"insert into {self.fts} (rowid, content) values (?, ?)", [(old[id][0], content) for id, content in moved]
        )

    def finish(self):
        """Do the suspended triggers' work for everything written, and bring them back."""
        if self.inserted:
            # New rows were numbered from max(rowid) + 1 on, unless the table's rowids
            # reached the largest there is: then they are found by id.
            if self.last_rowid + self.inserted < MAX_ROWID:
                self._each_new(f"where rowid > {self.last_rowid}", [])
            else:
                for chunk in _chunks(self.inserted_ids):
                    self._each_new(f"where id in ({','.join('?' * len(chunk))})", chunk)
        if self.changed:
            self.conn.execute(f"update {storage.REGISTRY} set version = version + 1 where name = ?", [self.name])
        for _, sql in self.triggers:
            self.conn.execute(sql)
        self.triggers = []

    def _each_new(self, where, params):
        if self.fts:
            self.conn.execute(
                f"insert into {self.fts} (rowid, content) select rowid, content from {self.table} {where}", params
            )
        if self.log:
            self.conn.execute(f"insert into {self.log} (id) select id from {self.table} {where}", params)


def _chunks(sequence):
    return storage.chunked(list(sequence), storage.IN_CHUNK)


def record_dimensions(collection, dimensions: int):
    """Record the width of a collection's vectors once the first arrive (inside a transaction)."""
    if collection.dimensions is None:
        collection.db.conn.execute(
            f"update {storage.REGISTRY} set dimensions = ? where name = ?", [dimensions, collection.name]
        )
        collection.dimensions = dimensions


def own_triggers(name: str) -> set:
    """The names of the triggers embedkit may put on collection name's table."""
    return {
        *(f"_embedkit_{name}_{event}" for event in ("insert", "update", "delete")),
        *fulltext.trigger_names(name),
        *(quantized.names(name)[event] for event in quantized.EVENTS),
    }
