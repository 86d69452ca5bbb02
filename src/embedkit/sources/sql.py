"""Rows from a SQL query, optionally against attached databases."""

import os

from ..errors import EmbedkitError
from ..storage import quote


def sql_rows(conn, query, attach=()):
    """(row, where) pairs for each result row; attached databases are detached afterwards."""
    attached = []
    try:
        for alias, path in attach:
            if not os.path.isfile(path):
                raise EmbedkitError(f"--attach {alias}: {path}: no such database file")
            conn.execute(f"attach database ? as {quote(alias)}", [os.fspath(path)])
            attached.append(alias)
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
            raise EmbedkitError(f"--sql: {ex}") from None
        finally:
            conn.execute("pragma query_only = 0")
        return [(dict(zip(columns, values)), f"--sql row {number}") for number, values in enumerate(rows, 1)]
    finally:
        for alias in attached:
            conn.execute(f"detach database {quote(alias)}")
