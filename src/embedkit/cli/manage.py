import sys

import click

from .. import jsondata
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
    """Name, model, dimensions and item count of every collection (with --json, also how it
    splits documents into chunks: method, size, overlap and whether texts are split too)."""
    db = open_database(database)
    collections = db.collections()
    if as_json:
        click.echo(jsondata.dumps([
            {"name": c.name, "model": c.model_id, "dimensions": c.dimensions, "count": c.count(), "chunking": c.chunking}
            for c in collections
        ], "the collections", indent=2))
    elif collections:
        # A collection of vectors brought without a model has none.
        print_table([[c.name, c.model_id or "(none)", c.dimensions, c.count()] for c in collections],
                    ["name", "model", "dimensions", "count"])
    else:
        click.echo(f"No collections in {database}", err=True)


@collections.command(name="delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Delete without asking")
@database_option
def delete_collection(name, yes, database):
    """Delete collection NAME and everything in it, once you confirm (or with --yes).

    \b
    embedkit collections delete notes
    embedkit collections delete notes --yes
    """
    db = open_database(database, write=True)
    count = db.collection(name).count()
    items = f"{count} item{'s' * (count != 1)}"
    if not yes:
        if not sys.stdin.isatty():  # nobody to ask
            raise EmbedkitError(f"collection {name!r} not deleted: pass --yes to delete it without asking")
        if not click.confirm(f"Delete collection {name!r} and its {items} from {database}?", err=True):
            raise EmbedkitError(f"collection {name!r} not deleted")
    db.delete_collection(name)
    click.echo(f"Deleted collection {name!r} ({items})", err=True)


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
    target = open_database(database, write=True).collection(collection)
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


@cli.command()
@database_option
def migrate(database):
    """Upgrade the embedkit tables of a database made by an older embedkit.

    Every writing command does this on its own; read-only readers such as Datasette do not,
    and say to run this where the file can be written.
    """
    with open_database(database, read_only=True) as db:
        pending = db.pending_migrations()
    if not pending:
        click.echo(f"{database} is up to date")
        return
    open_database(database).close()  # opening it writable applies them, in one transaction
    click.echo(f"{database}: applied {len(pending)} upgrade{'s' if len(pending) > 1 else ''}: {', '.join(pending)}")
