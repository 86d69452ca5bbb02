"""Rows from a SQL query, optionally against attached databases; never a write."""

import os

from .. import storage
from ..errors import EmbedkitError
from ..sqlfunctions import explain, register


def sql_rows(database, query, attach=()):
    """(row, where) pairs for each result row of query.

    Unqualified table names are looked up in the attached (alias, path) databases first,
    then in the embeddings database (alias `embeddings`): so `select … from posts
    --attach blog blog.db` still reads blog's posts once a collection named posts exists.
    """
    conn = storage.connect(":memory:")
    register(conn)
    try:
        for alias, path in attach:
            if not os.path.isfile(path):
                raise EmbedkitError(f"--attach {alias}: {path}: no such database file")
            conn.execute(f"attach database ? as {storage.quote(alias)}", [os.fspath(path)])
        if os.path.isfile(database):
            conn.execute("attach database ? as embeddings", [os.fspath(database)])
        # The query reads input; it must never change the database it runs against.
        conn.execute("pragma query_only = 1")
        try:
            cursor = conn.execute(query)
            if cursor.description is None:
                raise EmbedkitError("--sql: the query returns no rows (is it a SELECT?)")
            columns = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        except EmbedkitError:
            raise
        except Exception as ex:
            raise EmbedkitError(f"--sql: {explain(ex)}") from None
        return [(dict(zip(columns, values)), f"--sql row {number}") for number, values in enumerate(rows, 1)]
    finally:
        conn.close()
