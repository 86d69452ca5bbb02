import base64
import contextlib
import glob
import os
import signal
import sys

import click

from .. import extras, jsondata
from ..chunking import METHODS, Chunker, describe, for_model
from ..collection import validate_name
from ..errors import EmbedkitError
from ..ingest import Interrupted
from ..items import Item, RowMapping, check_unique_ids, parse_metadata
from ..models import get_model
from ..sources import input_name
from ..sources.pdf import PdfSource, looks_like_pdf
from ..sources.tabular import FORMATS
from ..sources.url import is_url
from ..windows import check as check_windows
from .base import Progress, check_writable, cli, database_option, interruptible, open_database, read_text


def model_option(fn):
    return click.option("-m", "--model", help="Model id, alias or local path (see 'embedkit models')")(fn)


def collection_options(fn):
    """How a new collection embeds; an existing one must have been created the same way."""
    fn = click.option("--dimensions", type=click.IntRange(min=1), help="Keep only the first N dimensions of each vector, renormalised (Matryoshka models; new collections)")(fn)
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
@collection_options
@database_option
def embed(collection, id, content, input_path, model, store, metadata, output_format, query_prefix, document_prefix,
          dimensions, database):
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
    if collection is not None:
        check_writable(database)
    text = read_text(content, input_path)
    if not text.strip():
        raise EmbedkitError("the content to embed is empty")
    if collection is None:
        embedder = get_model(model).truncated(dimensions) if dimensions else get_model(model)
        vector = embedder.embed([text])[0]
        _print_vector(vector, output_format or "json")
        return
    metadata = parse_metadata(metadata, "--metadata")
    _check_target(collection, model, database)
    db = open_database(database, create=True)
    target = db.get_or_create_collection(
        collection, model, dimensions, query_prefix=query_prefix, document_prefix=document_prefix
    )
    target.embed(id, text, metadata, store=store)


def _check_target(collection, model, database):
    """Refuse a bad collection name, an unknown model or one whose extra is missing, before a
    database file is created for it. Without -m, an existing collection's own model is checked."""
    validate_name(collection)
    if model is None and os.path.isfile(database):
        with open_database(database) as db:
            if db.has_collection(collection):
                model = db.collection(collection).model_id
    found = get_model(model)
    found.check_available()  # looks the model up without loading it
    return found


def _print_vector(vector, output_format):
    blob = vector.astype("<f4").tobytes()
    if output_format == "blob":
        sys.stdout.buffer.write(blob)
    elif output_format == "hex":
        click.echo(blob.hex())
    elif output_format == "base64":
        click.echo(base64.b64encode(blob).decode())
    else:
        click.echo(jsondata.dumps([float(v) for v in vector.tolist()], "the vector"))


@cli.command(name="embed-multi", short_help="Embed many items from files, PDFs, URLs or a SQL query.")
@click.argument("collection")
@click.argument("inputs", metavar="[INPUT]...", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--format", "input_format", type=click.Choice(FORMATS), help="Format of INPUT tables (default: detected)")
@click.option("--files", nargs=2, multiple=True, metavar="DIR GLOB", help="Embed files under DIR matching GLOB (e.g. '**/*.{md,html,pdf}'); repeatable")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of --files")
@click.option("--pdf", multiple=True, metavar="PATH|URL", help="Embed a PDF file (or a glob of them) or URL, split into chunks; repeatable")
@click.option("--sql", help="Embed the rows of this SELECT; tables are looked up in --attach databases first, then in the database")
@click.option("--attach", nargs=2, multiple=True, metavar="ALIAS PATH", help="Attach a database for --sql; repeatable")
@click.option("--id-column", default="id", show_default=True, help="Column holding each item's id")
@click.option("--content-column", multiple=True, help="Column(s) to embed, in order (default: all but id and metadata)")
@click.option("--metadata-column", multiple=True, help="Column(s) stored as metadata, not embedded")
@model_option
@click.option("--store", is_flag=True, help="Store the text in the collection")
@click.option("--prefix", default="", help="Prefix added to every id")
@click.option("--batch-size", type=click.IntRange(min=1), help="Items per model call, and per commit  [default: 100; for HTTP models their batch size times concurrency]")
@click.option("--chunk-size", type=click.IntRange(min=1), help="Split each input into chunks of at most this many tokens (characters with --chunker recursive or chars)  [default: as the collection recorded; else all the model reads, or 1000 characters]")
@click.option("--chunk-overlap", type=click.IntRange(min=0), help="How much of each chunk starts the next  [default: a tenth of --chunk-size]")
@click.option("--chunker", type=click.Choice(METHODS), help="How to split: 'tokens' to fit the model, 'recursive' at paragraph and sentence breaks, or fixed 'chars' windows  [default: as the collection recorded; else tokens, or recursive for a model without a tokenizer]")
@click.option("--late/--no-late", default=None, help="Late chunking: embed each text (or PDF page) whole, in overlapping passes when it is longer than the model reads, and pool each chunk's vector from its tokens, so chunks keep their context; local models only  [default: as the collection recorded; else off]")
@click.option("--windows/--no-windows", default=None, help="Score long items by their best part: every stored text longer than the model reads is also embedded as overlapping windows of what it reads, and similar scores an item by its best window, naming it; needs --store  [default: as the collection recorded; else off]")
@click.option("--sync", is_flag=True, help="Delete the items of sources (ids, files, PDFs) that are no longer in the input")
@click.option("--workers", type=click.IntRange(min=1), help="Embed on a local Dask cluster of this many worker processes, each with the model loaded (needs the 'cluster' extra)")
@click.option("--cluster", metavar="ADDRESS", help="Embed on the workers of the Dask scheduler at ADDRESS, such as tcp://10.0.0.5:8786 (needs the 'cluster' extra)")
@collection_options
@database_option
def embed_multi(collection, inputs, input_format, files, encoding, pdf, sql, attach, id_column, content_column,
                metadata_column, model, store, prefix, batch_size, chunk_size, chunk_overlap, chunker, late, windows, sync,
                workers, cluster, query_prefix, document_prefix, dimensions, database):
    """Embed many items into COLLECTION from CSV/TSV/JSON/NL-JSON files (or - for stdin),
    PDF files and URLs, files matching a glob, or a SQL query.

    PDFs are split into chunks (as are other inputs with --chunk-size, --chunker or
    --late); each chunk's metadata names its source, page and chunk. The collection records how it
    splits, and later runs split the same way unless given other options. Only new or
    changed content is embedded: re-running over unchanged input makes no model calls, and
    a changed source has its chunks replaced in one transaction. A summary goes to stderr;
    the exit status is 1 if any item or source failed, and the rest are still stored. On
    Ctrl-C or SIGTERM the documents finished are kept, and a re-run does the rest.

    \b
    embedkit embed-multi posts blog.csv --store
    embedkit embed-multi notes --files ~/notes '**/*.md' --store
    embedkit embed-multi posts --sql 'select id, title, body from posts' --attach blog blog.db
    embedkit embed-multi papers --pdf https://arxiv.org/pdf/2402.17764 --pdf 'pdfs/*.pdf' --store
    embedkit embed-multi docs --files site '**/*.{md,html,pdf}' --chunk-size 200 --store --sync
    embedkit embed-multi posts blog.csv --store --cluster tcp://10.0.0.5:8786
    embedkit embed-multi papers --pdf 'pdfs/*.pdf' --chunk-size 128 --late --store
    """
    from ..sources.files import file_inputs

    if not (inputs or files or sql or pdf):
        raise EmbedkitError("give something to embed: INPUT, --files DIR GLOB, --pdf PATH|URL or --sql QUERY")
    if workers and cluster:
        raise EmbedkitError("give --workers for a local cluster or --cluster for an existing one, not both")
    if workers or cluster:
        extras.check("dask.distributed", "cluster", "embedding on a cluster")
    check_writable(database)
    if attach and not sql:
        raise EmbedkitError("--attach is for --sql")
    _check_shell_expansion(files, inputs)
    mapping = RowMapping(id_column, list(content_column), list(metadata_column), prefix)
    # Read and check all input tables before writing anything: bad input leaves the database
    # as it was (and creates none). PDFs are read later, each failing on its own.
    pdf_inputs = [path for path in inputs if _is_pdf(path)]
    tables = [path for path in inputs if path not in pdf_inputs]
    items = [mapping.item(row, where) for row, where in _rows(tables, input_format, database, sql, attach)]
    items += [PdfSource(location, id_prefix=prefix) for location in pdf_inputs + _expand(pdf)]
    items += [item for directory, pattern in files for item in file_inputs(directory, pattern, encoding, prefix)]
    if any(isinstance(item, PdfSource) for item in items):
        extras.check("pypdf", "pdf", "reading PDFs")
    check_unique_ids(Item(input_name(i), None) for i in items)  # before a collection is made for them
    target_model = _check_target(collection, model, database)
    if windows:
        if not store:
            raise EmbedkitError("--windows cuts windows from the stored text: add --store")
        check_windows(target_model)
    # Checked before a database or collection is made for it.
    split, change = _chunking(collection, model, database, document_prefix, chunker, chunk_size, chunk_overlap, late)
    db = open_database(database, create=True)
    target = db.get_or_create_collection(
        collection, model, dimensions, query_prefix=query_prefix, document_prefix=document_prefix
    )
    if change:
        click.echo(change, err=True)

    with _embedding_model(target, workers, cluster) as embedder, Progress() as progress, \
            interruptible() as signals:
        try:
            stats = target.embed_multi(
                items, store=store, batch_size=batch_size, chunker=split, sync=sync, windows=windows,
                progress=progress.embedding, read_progress=progress.reading, document_progress=progress.documents,
                model=embedder,
                window_progress=progress.windowing,
            )
        except Interrupted as ex:
            progress.close()
            click.echo(f"interrupted: {ex.kept()} kept; re-run to continue", err=True)
            sys.exit(128 + (signals.received or signal.SIGINT))
    for id, reason in stats.failures:
        click.echo(f"Failed: {id}: {reason}", err=True)
    if stats.truncated and not target.windows:  # with windows, the rest of each text is read too
        model = target.model
        click.echo(
            f"Warning: {stats.truncated} text{'s are' if stats.truncated > 1 else ' is'} longer than the "
            f"{model.max_tokens} tokens {model.model_id} reads; only the beginning was embedded. "
            "Split them to fit with --chunker tokens",
            err=True,
        )
    click.echo(stats.summary(), err=True)
    if stats.failed:
        sys.exit(1)


@contextlib.contextmanager
def _embedding_model(target, workers, address):
    """None (the collection's own model, in this process), or the model on a Dask cluster's
    workers: a local one of `workers` processes, or the one at address."""
    if not (workers or address):
        yield None
        return
    from ..models import distributed

    client = distributed.connect(address, workers)
    try:
        yield distributed.DistributedModel(target.model, client)
    finally:
        client.close()


def _chunking(collection, model, database, document_prefix, method, size, overlap, late):
    """(the Chunker that --chunker, --chunk-size, --chunk-overlap and --late ask for, or None
    without them; what that changes for an existing collection, in words, or None)."""
    if method is None and size is None and overlap is None and late is None:
        return None, None
    if size is not None and overlap is not None:
        Chunker("chars", size, overlap)  # checked before loading a model to count tokens
    if os.path.isfile(database):
        with open_database(database) as db:
            if db.has_collection(collection):
                target = db.collection(collection)
                split = target.chunker(method, size, overlap, late)
                return split, _chunking_change(collection, target.chunking, split)
    return for_model(get_model(model), document_prefix, None, method, size, overlap, late), None


def _chunking_change(collection, recorded, split):
    settings = {key: value for key, value in (recorded or {}).items() if key != "texts"}
    if recorded is None or (split.settings == settings and recorded["texts"]):
        return None
    texts = "" if recorded["texts"] else " Rows and text files are split too from now on."
    return (
        f"Chunking of {collection!r} changes from {describe(recorded)} to {describe(split.settings)}: documents "
        f"are split again and chunks that change are embedded.{texts}"
    )


def _check_shell_expansion(files, inputs):
    """Refuse `--files DIR *.md` unquoted: the shell passes `--files DIR a.md b.md c.md`, and
    b.md and c.md would be read as tables of items."""
    for directory, pattern in files:
        suffix = os.path.splitext(pattern)[1]
        if glob.has_magic(pattern) or "{" in pattern or not suffix:
            continue
        extra = [path for path in inputs if os.path.splitext(path)[1] == suffix]
        if extra:
            wanted = ("**/*" if "/" in pattern else "*") + suffix
            raise EmbedkitError(
                f"--files {directory} {pattern}: {', '.join(extra[:3])}{' …' if len(extra) > 3 else ''} came as "
                f"INPUT too: did your shell expand an unquoted glob? Quote it: --files {directory} '{wanted}'"
            )


def _is_pdf(location) -> bool:
    """PDF inputs: URLs, .pdf paths and files that start like a PDF."""
    if is_url(location) or location.lower().endswith(".pdf"):
        return True
    if location == "-" or not os.path.isfile(location):
        return False
    with open(location, "rb") as fp:
        return looks_like_pdf(fp.read(1024))


def _rows(tables, input_format, database, sql, attach):
    from ..sources.sql import sql_rows
    from ..sources.tabular import decode_text, parse_rows, read_input

    for path in tables:
        name = "stdin" if path == "-" else path
        yield from parse_rows(decode_text(read_input(path), name), name, input_format)
    if sql:
        yield from sql_rows(database, sql, attach)


def _expand(patterns):
    """--pdf values with globs expanded (for shells that did not)."""
    locations = []
    for pattern in patterns:
        if is_url(pattern) or not glob.has_magic(pattern):
            locations.append(pattern)
            continue
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise EmbedkitError(f"--pdf {pattern}: no files match")
        locations += matches
    return locations
