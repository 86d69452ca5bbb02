"""import, import-llm, import-chroma: vectors made elsewhere, into collections."""

import time

import click

from ..collection import validate_name
from ..importers import chroma, files, llm
from ..models import get_model
from ..sources.tabular import FORMATS
from .base import Progress, cli, database_option, open_database


@cli.command(name="import", short_help="Store vectors made elsewhere, from NL-JSON, JSON, CSV or .npy files.")
@click.argument("collection")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--ids", "ids_path", type=click.Path(dir_okay=False), help="With a .npy FILE: the ids, one per line of a .txt file, or the rows (id, content, metadata) of a CSV/JSON/NL-JSON file, in the order of the vectors")
@click.option("--format", "input_format", type=click.Choice([*FORMATS, "npy"]), help="Format of FILE (default: from its name and content)")
@click.option("--id-column", default="id", show_default=True, help="Column holding each item's id")
@click.option("--vector-column", help="Column holding each vector, a JSON array of numbers  [default: embedding, else vector]")
@click.option("--content-column", help="Column holding the text to store  [default: content, if there is one]")
@click.option("--metadata-column", multiple=True, help="Column(s) stored as metadata, besides a 'metadata' column of JSON objects")
@click.option("-m", "--model", help="The model that made the vectors from the text (for a new collection): searches by text embed the query with it, and embed-multi reuses the vectors")
@database_option
def import_(collection, file, ids_path, input_format, id_column, vector_column, content_column, metadata_column, model,
            database):
    """Store the vectors in FILE in COLLECTION, creating it if needed.

    FILE is NL-JSON, JSON or CSV/TSV with a column of vectors (JSON arrays of numbers), or
    a .npy array with --ids. An id stored already is overwritten, unless nothing about it
    changed. Every vector is checked (one width, finite, not all zeros) and all is stored
    in one transaction, or nothing is.

    Without --model the collection has no model: it is searched by item, by vector or by
    keyword, and its vectors are never taken for a text's embedding.

    \b
    embedkit import papers vectors.jsonl
    embedkit import papers vectors.npy --ids ids.txt -m all-MiniLM-L6-v2
    """
    validate_name(collection)
    if model is not None:
        get_model(model)  # an unknown model is refused before a database file is made
    columns = files.Columns(id_column, vector_column, content_column, list(metadata_column))
    total = files.count_rows(file, input_format)
    db = open_database(database, create=True)
    started = time.perf_counter()
    with Progress() as progress:
        stats = files.import_file(db, collection, file, columns, input_format, ids_path, model,
                                  lambda n: progress.importing(n, total) if total else None)
    click.echo(f"{stats.summary()} in {time.perf_counter() - started:.1f} s", err=True)


@cli.command(name="import-llm", short_help="Copy collections out of an llm embeddings database.")
@click.argument("llm_database", type=click.Path(dir_okay=False))
@click.argument("collections", nargs=-1)
@click.option("--into", help="Name of the embedkit collection (when copying one)")
@database_option
def import_llm(llm_database, collections, into, database):
    """Copy the collections of LLM_DATABASE (all, or those named) into the database: vectors
    byte for byte, stored text, metadata, model and content hashes, so embed-multi over the
    input llm embedded embeds nothing. A collection copied before is brought up to date.

    An llm database can also be searched where it is, without a copy: give it as the
    database (-d llm.db) of similar, collections or sql.

    \b
    embedkit import-llm ~/.config/io.datasette.llm/embeddings.db
    embedkit import-llm llm.db docs --into papers
    """
    if into is not None:
        validate_name(into)
    db = open_database(database, create=True)
    with Progress() as progress:
        for copied in _timed(lambda: llm.copy(db, llm_database, collections, into, progress.importing)):
            note = f" ({len(copied.binary)} with binary content: vectors copied, not the content)" if copied.binary else ""
            click.echo(f"{copied.name}: {copied.stats.summary()}, model {copied.model}{note}", err=True)


@cli.command(name="import-chroma", short_help="Copy collections out of a Chroma persistent directory.")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("collections", nargs=-1)
@click.option("--into", help="Name of the embedkit collection (when copying one)")
@click.option("-m", "--model", help="The model that made the vectors from the documents (for new collections)")
@database_option
def import_chroma(directory, collections, into, model, database):
    """Copy the collections of the Chroma directory DIRECTORY (all, or those named) into the
    database: ids, vectors, documents (stored as the text) and metadata, read from its
    chroma.sqlite3 and index files without Chroma. A format embedkit does not know is
    refused, naming the Chroma version found.

    Without --model the collections have no model: they are searched by item, by vector or
    by keyword.

    \b
    embedkit import-chroma ./chroma
    embedkit import-chroma ./chroma papers -m all-MiniLM-L6-v2
    """
    if into is not None:
        validate_name(into)
    if model is not None:
        get_model(model)
    db = open_database(database, create=True)
    with Progress() as progress:
        for copied in _timed(lambda: chroma.copy(db, directory, collections, into, model, progress.importing)):
            click.echo(f"{copied.name}: {copied.stats.summary()}", err=True)
            function = copied.source.embedding_function
            if model is None and function is not None:
                click.echo(f"  Chroma made its vectors with its {function!r} embedding function; to search it by text, "
                           "import it into a new collection with --model", err=True)


def _timed(run):
    """The results of run(), the time it took said after them."""
    started = time.perf_counter()
    results = run()
    yield from results
    click.echo(f"in {time.perf_counter() - started:.1f} s", err=True)
