import base64
import json
import sys

import click

from ..collection import validate_name
from ..errors import EmbedkitError
from ..items import RowMapping, check_unique_ids, parse_metadata
from ..models import get_model
from ..sources.tabular import FORMATS
from . import cli, database_option, open_database, read_text


def model_option(fn):
    return click.option("-m", "--model", help="Model id, alias or local path (see 'embedkit models')")(fn)


def prefix_options(fn):
    fn = click.option("--document-prefix", default="", help="Text put before each document when embedding (new collections)")(fn)
    return click.option("--query-prefix", default="", help="Text put before each query when searching (new collections)")(fn)


@cli.command(short_help="Embed one text: print its vector or store it in a collection.")
@click.argument("collection", required=False)
@click.argument("id", required=False)
@click.option("-c", "--content", help="Text to embed")
@click.option("-i", "--input", "input_path", type=click.Path(dir_okay=False, allow_dash=True), help="File to embed, or - for stdin")
@model_option
@click.option("--store", is_flag=True, help="Store the text in the collection")
@click.option("--metadata", help="JSON object of metadata to store with the item")
@click.option(
    "-f", "--format", "output_format",
    type=click.Choice(["json", "blob", "hex", "base64"]),
    help="Print the vector in this format (when no collection is given; default json)",
)
@prefix_options
@database_option
def embed(collection, id, content, input_path, model, store, metadata, output_format, query_prefix, document_prefix, database):
    """Embed one text: print its vector, or store it as ID in COLLECTION.

    \b
    embedkit embed -c 'hello world'
    embedkit embed notes readme -i README.md --store --metadata '{"kind": "doc"}'
    """
    if collection is not None and not id:
        raise EmbedkitError("give both COLLECTION and ID to store an embedding")
    if collection is not None and output_format:
        raise EmbedkitError("--format prints a vector; it cannot be used with COLLECTION ID")
    if collection is None and (store or metadata):
        raise EmbedkitError("--store and --metadata need COLLECTION and ID")
    text = read_text(content, input_path)
    if not text.strip():
        raise EmbedkitError("the content to embed is empty")
    if collection is None:
        vector = get_model(model).embed([text])[0]
        _print_vector(vector, output_format or "json")
        return
    metadata = parse_metadata(metadata, "--metadata")
    _check_target(collection, model)
    db = open_database(database, create=True)
    target = db.get_or_create_collection(collection, model, query_prefix=query_prefix, document_prefix=document_prefix)
    target.embed(id, text, metadata, store=store)


def _check_target(collection, model):
    """Refuse a bad collection name or unknown model before a database file is created for it."""
    validate_name(collection)
    get_model(model)  # looks the model up without loading it


def _print_vector(vector, output_format):
    blob = vector.astype("<f4").tobytes()
    if output_format == "blob":
        sys.stdout.buffer.write(blob)
    elif output_format == "hex":
        click.echo(blob.hex())
    elif output_format == "base64":
        click.echo(base64.b64encode(blob).decode())
    else:
        click.echo(json.dumps([float(v) for v in vector.tolist()]))


@cli.command(name="embed-multi", short_help="Embed many items from a file, a glob of files or a SQL query.")
@click.argument("collection")
@click.argument("input_path", metavar="[INPUT]", required=False, type=click.Path(allow_dash=True))
@click.option("--format", "input_format", type=click.Choice(FORMATS), help="Format of INPUT (default: detected)")
@click.option("--files", nargs=2, multiple=True, metavar="DIR GLOB", help="Embed files under DIR matching GLOB (e.g. '**/*.md'); repeatable")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of --files")
@click.option("--sql", help="Embed the rows of this SELECT; tables are looked up in --attach databases first, then in the database")
@click.option("--attach", nargs=2, multiple=True, metavar="ALIAS PATH", help="Attach a database for --sql; repeatable")
@click.option("--id-column", default="id", show_default=True, help="Column holding each item's id")
@click.option("--content-column", multiple=True, help="Column(s) to embed, in order (default: all but id and metadata)")
@click.option("--metadata-column", multiple=True, help="Column(s) stored as metadata, not embedded")
@model_option
@click.option("--store", is_flag=True, help="Store the text in the collection")
@click.option("--prefix", default="", help="Prefix added to every id")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True, help="Items per model call and per transaction")
@prefix_options
@database_option
def embed_multi(collection, input_path, input_format, files, encoding, sql, attach, id_column, content_column,
                metadata_column, model, store, prefix, batch_size, query_prefix, document_prefix, database):
    """Embed many items into COLLECTION from a CSV/TSV/JSON/NL-JSON file (or - for stdin),
    from files matching a glob, or from a SQL query.

    Only new or changed content is embedded: re-running over unchanged input makes no
    model calls. A summary goes to stderr; the exit status is 1 if any item failed.

    \b
    embedkit embed-multi posts blog.csv --store
    embedkit embed-multi notes --files ~/notes '**/*.md' --store
    embedkit embed-multi posts --sql 'select id, title, body from posts' --attach blog blog.db
    """
    from ..sources.files import file_items
    from ..sources.sql import sql_rows
    from ..sources.tabular import decode_text, parse_rows, read_input

    if sum(map(bool, (input_path, files, sql))) != 1:
        raise EmbedkitError("give exactly one input: INPUT, --files DIR GLOB or --sql QUERY")
    if attach and not sql:
        raise EmbedkitError("--attach is for --sql")
    mapping = RowMapping(id_column, list(content_column), list(metadata_column), prefix)
    # Read and check all input before writing anything: bad input leaves the database as
    # it was (and creates none).
    if files:
        items = [item for directory, pattern in files for item in file_items(directory, pattern, encoding, prefix)]
    else:
        if sql:
            rows = sql_rows(database, sql, attach)
        else:
            name = "stdin" if input_path == "-" else input_path
            rows = parse_rows(decode_text(read_input(input_path), name), name, input_format)
        items = [mapping.item(row, where) for row, where in rows]
    check_unique_ids(items)  # before a new collection is created for them
    _check_target(collection, model)
    db = open_database(database, create=True)
    target = db.get_or_create_collection(collection, model, query_prefix=query_prefix, document_prefix=document_prefix)

    if sys.stderr.isatty():
        with click.progressbar(length=len(items), label="Embedding", file=sys.stderr) as bar:
            stats = target.embed_multi(items, store=store, batch_size=batch_size, progress=bar.update)
    else:
        stats = target.embed_multi(items, store=store, batch_size=batch_size)
    for id, reason in stats.failures:
        click.echo(f"Failed: {id}: {reason}", err=True)
    click.echo(stats.summary(), err=True)
    if stats.failed:
        sys.exit(1)
