"""index: build, drop or show a collection's quantised index."""

import click

from .. import fulltext, jsondata, quantized
from ..errors import EmbedkitError
from .base import Progress, cli, database_option, open_database


class _Progress(Progress):
    def indexing(self, n, total):
        self._update("Indexing", n, total)


@cli.command(short_help="Build, drop or show a collection's quantised index.")
@click.argument("collection")
@click.option("--quantize", type=click.Choice(quantized.MODES), help="Build (or rebuild) an index of int8 or 1-bit codes")
@click.option("--oversample", type=click.IntRange(min=1), help="With --quantize: candidates per result searches take from the index (default: 4 for int8, 10 for bit)")
@click.option("--drop", is_flag=True, help="Drop the index")
@click.option("--stemming", type=click.Choice(fulltext.STEMMING), help="Rebuild the keyword (BM25) index with or without the Porter stemmer")
@database_option
def index(collection, quantize, oversample, drop, stemming, database):
    """Build, drop or show the quantised index of COLLECTION.

    An index holds int8 or 1-bit codes of the vectors in a sqlite-vec table. Searches pick
    candidates from it, then score those exactly, so scores stay exact cosine similarities.
    It follows every change to the collection, whoever writes it. Without an option, print
    the index's status as JSON.

    \b
    embedkit index papers --quantize int8
    embedkit index papers
    embedkit index papers --drop
    embedkit index papers --stemming porter

    --stemming sets how the keyword index reads words, and rebuilds it from the stored
    text: "porter" (the default of new collections) makes "flows", "flowing" and "flow"
    one word; "none" matches words as written (collections made before embedkit 0.2).
    """
    if stemming:
        if quantize or drop:
            raise EmbedkitError("--stemming rebuilds the keyword index: give it on its own")
        target = open_database(database, write=True).collection(collection)
        fulltext.rebuild(target, stemming)
        click.echo(f"Rebuilt the keyword index of {collection} with stemming {stemming}", err=True)
        return
    if quantize and drop:
        raise EmbedkitError("give --quantize to build an index or --drop to drop it, not both")
    if oversample is not None and not quantize:
        raise EmbedkitError("--oversample is recorded when building: use it with --quantize")
    target = open_database(database, write=bool(quantize or drop)).collection(collection)
    if drop:
        if not quantized.drop(target):
            raise EmbedkitError(f"collection {collection!r} has no quantised index")
        click.echo(f"Dropped the index of {collection}", err=True)
        return
    if quantize:
        with _Progress() as progress:
            result = quantized.build(target, quantize, oversample, progress=progress.indexing)
    else:
        result = quantized.status(target)
    click.echo(jsondata.dumps(result, "the index status"))
