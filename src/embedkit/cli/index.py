"""index: build, drop or show a collection's quantised and approximate indexes."""

import click

from .. import ann, fulltext, jsondata, quantized
from ..errors import EmbedkitError
from .base import Progress, cli, database_option, open_database


class _Progress(Progress):
    def indexing(self, n, total):
        self._update("Indexing", n, total)


@cli.command(short_help="Build, drop or show a collection's indexes.")
@click.argument("collection")
@click.option("--quantize", type=click.Choice(quantized.MODES), help="Build (or rebuild) an index of int8 or 1-bit codes")
@click.option("--ann", "approximate", is_flag=True, help="Build (or rebuild) the approximate (HNSW) index, for millions of items; needs the 'ann' extra")
@click.option("--oversample", type=click.IntRange(min=1), help="With --quantize: candidates per result searches take from the index (default: 4 for int8, 10 for bit)")
@click.option("--drop", is_flag=True, help="Drop the quantised index (with --ann: the approximate index)")
@click.option("--stemming", type=click.Choice(fulltext.STEMMING), help="Rebuild the keyword (BM25) index with or without the Porter stemmer")
@database_option
def index(collection, quantize, approximate, oversample, drop, stemming, database):
    """Build, drop or show the indexes of COLLECTION.

    A quantised index holds int8 or 1-bit codes of the vectors in a sqlite-vec table; the
    approximate index (--ann) is an HNSW graph in a file beside the database. Searches pick
    candidates from an index, then score those exactly, so scores stay exact cosine
    similarities. Both follow every change to the collection, whoever writes it. Without an
    option, print the status of both as JSON.

    \b
    embedkit index papers --quantize int8
    embedkit index papers --ann
    embedkit index papers
    embedkit index papers --drop
    embedkit index papers --stemming porter

    --stemming sets how the keyword index reads words, and rebuilds it from the stored
    text: "porter" (the default of new collections) makes "flows", "flowing" and "flow"
    one word; "none" matches words as written (collections made before embedkit 0.2).
    """
    if stemming:
        if quantize or approximate or drop:
            raise EmbedkitError("--stemming rebuilds the keyword index: give it on its own")
        target = open_database(database, write=True).collection(collection)
        fulltext.rebuild(target, stemming)
        click.echo(f"Rebuilt the keyword index of {collection} with stemming {stemming}", err=True)
        return
    if quantize and approximate:
        raise EmbedkitError("give --quantize or --ann, one index at a time")
    if (quantize or oversample is not None) and drop:
        raise EmbedkitError("give --quantize to build an index or --drop to drop it, not both")
    if oversample is not None and not quantize:
        raise EmbedkitError("--oversample is recorded when building: use it with --quantize")
    target = open_database(database, write=bool(quantize or approximate or drop)).collection(collection)
    if drop:
        dropped = ann.drop(target) if approximate else quantized.drop(target)
        if not dropped:
            kind = "approximate" if approximate else "quantised"
            raise EmbedkitError(f"collection {collection!r} has no {kind} index")
        click.echo(f"Dropped the {'approximate ' if approximate else ''}index of {collection}", err=True)
        return
    if quantize or approximate:
        with _Progress() as progress:
            if quantize:
                result = quantized.build(target, quantize, oversample, progress=progress.indexing)
            else:
                result = ann.build(target, progress=progress.indexing)
    else:
        approximate_status = ann.status(target)
        result = {**quantized.status(target), "ann": approximate_status if approximate_status["library"] else None}
    click.echo(jsondata.dumps(result, "the index status"))
