import json

import click

from ..errors import EmbedkitError
from ..filters import parse_filter
from .base import ListGroup, cli, database_option, open_database, print_table


@cli.group(cls=ListGroup)
def collections():
    """List collections (the default) or delete one."""


@collections.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Output a JSON array")
@database_option
def list_collections(as_json, database):
    """Name, model, dimensions and item count of every collection."""
    db = open_database(database)
    rows = [
        {"name": c.name, "model": c.model_id, "dimensions": c.dimensions, "count": c.count()}
        for c in db.collections()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        print_table([list(r.values()) for r in rows], ["name", "model", "dimensions", "count"])


@collections.command(name="delete")
@click.argument("name")
@database_option
def delete_collection(name, database):
    """Delete collection NAME and everything in it."""
    open_database(database).delete_collection(name)


@cli.command()
@click.argument("collection")
@click.argument("ids", nargs=-1)
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Delete the items whose metadata has KEY=VALUE (all of them, if repeated)")
@database_option
def delete(collection, ids, filters, database):
    """Delete items from COLLECTION by id, or by metadata with --filter.

    Nothing is deleted if an id is unknown or no item matches the filters.

    \b
    embedkit delete notes readme todo
    embedkit delete papers --filter source=pdfs/bitnet.pdf
    """
    target = open_database(database).collection(collection)
    if bool(ids) == bool(filters):
        raise EmbedkitError("give the ids to delete or --filter KEY=VALUE, not both")
    if ids:
        missing = [id for id in ids if id not in target]
        if missing:
            raise EmbedkitError(f"no item with id {missing[0]!r} in collection {collection!r}")
        deleted = target.delete(ids)
    else:
        deleted = target.delete_where(dict(parse_filter(f) for f in filters))
        if not deleted:
            raise EmbedkitError(f"no item in collection {collection!r} matches {' '.join(filters)}")
    click.echo(f"Deleted {deleted} item{'s' * (deleted != 1)}", err=True)
