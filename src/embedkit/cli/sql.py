import base64

import click

from .. import errors, jsondata
from ..errors import EmbedkitError
from ..sqlfunctions import explain
from .base import cli, database_option, open_database


def _json_value(value):
    if isinstance(value, bytes):  # sqlite-utils' convention for binary values in JSON
        return {"$base64": True, "encoded": base64.b64encode(value).decode()}
    return value


@cli.command(short_help="Run SQL with the embedkit_* functions; print rows as JSON.")
@click.argument("query")
@click.option("-p", "--param", nargs=2, multiple=True, metavar="NAME VALUE", help="Named parameter for :NAME in QUERY")
@database_option
def sql(query, param, database):
    """Run QUERY with the embedkit_* SQL functions and sqlite-vec available; print
    each row as a JSON object on its own line.

    The plain sqlite3 shell cannot call functions written in Python; this can.

    \b
    embedkit sql "select id, embedkit_cosine(embedding, embedkit_embed(:q)) as score
                  from notes order by score desc limit 3" -p q 'backups'
    """
    db = open_database(database)
    try:
        cursor = db.conn.execute(query, dict(param))
        columns = [d[0] for d in cursor.description or ()]
        for number, row in enumerate(cursor, 1):
            click.echo(jsondata.dumps({c: _json_value(v) for c, v in zip(columns, row)}, f"row {number}",
                                      ensure_ascii=False))
    except db.sqlite_error as ex:
        fault = errors.from_sqlite(ex, db.path, db.lock_timeout)
        if fault is not None:
            db.faulted = True
            raise fault from None
        raise EmbedkitError(explain(ex)) from None
