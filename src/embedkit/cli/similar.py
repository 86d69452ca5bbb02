import sys
import textwrap

import click

from .. import jsondata
from ..errors import EmbedkitError
from ..filters import parse_filter
from .base import cli, database_option, open_database, read_text
from .search_options import ranking_options, search_kwargs

NOTHING_TO_SEARCH = ("give a text to search for (-c TEXT, -i FILE or on standard input) "
                     "or the ID of a stored item to find items like it")


@cli.command(short_help="Find the items most similar to a text or to a stored item.")
@click.argument("collection")
@click.argument("id", required=False)
@click.option("-c", "--content", help="Text to search for")
@click.option("-i", "--input", "input_path", type=click.Path(dir_okay=False, allow_dash=True), help="File whose text to search for, or - for stdin")
@click.option("-n", "--number", type=click.IntRange(min=1), default=10, show_default=True, help="How many results")
@click.option("-m", "--model", help="Must match the collection's model if given")
@click.option("--unique", metavar="KEY", help="One result per distinct value of this metadata key (e.g. source: the best chunk of each document)")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Search only items whose metadata has KEY=VALUE (all of them, if repeated)")
@click.option("--where", metavar="SQL", help="Search only items for which this SQL condition on the table's columns holds")
@click.option("--min-score", type=float, help="Leave out results scoring less than this")
@click.option("--keyword", is_flag=True, help="Rank by BM25 over the stored text instead of by vector")
@click.option("--hybrid", is_flag=True, help="Fuse the vector and the BM25 rankings (reciprocal rank fusion)")
@click.option("--mmr", type=click.FloatRange(0, 1), metavar="LAMBDA", help="Diversify: maximal marginal relevance, 1 = plain ranking, 0 = most diverse (0.5 is a good start)")
@click.option("--exact", is_flag=True, help="Scan every vector even when the collection has a quantised or approximate index")
@ranking_options
@click.option("--plain", is_flag=True, help="Readable text instead of JSON lines")
@database_option
def similar(collection, id, content, input_path, number, model, unique, filters, where, min_score, keyword, hybrid,
            mmr, exact, plain, database, **ranking):
    """Items of COLLECTION most similar to a text or to the stored item ID.

    Prints one JSON object per line: {"id", "score", "content", "metadata"}, best
    first. score is the cosine similarity (higher is more similar); with --keyword it
    is the BM25 score, with --hybrid the fused score.

    \b
    embedkit similar notes -c 'sqlite backup tools'
    embedkit similar posts 42 -n 5 --plain
    embedkit similar papers -c 'ternary weights' --unique source
    embedkit similar posts -c 'bread' --filter tag=baking --min-score 0.3
    embedkit similar docs -c 'FTS5 bm25' --hybrid
    embedkit similar docs -c 'FTS5 bm25' --hybrid --expand --feedback 3
    embedkit similar papers -c 'ternary weights' --rerank tei --rerank-url http://127.0.0.1:8080
    """
    if keyword and hybrid:
        raise EmbedkitError("--keyword and --hybrid cannot be used together: --hybrid already includes the keyword ranking")
    mode = "keyword" if keyword else "hybrid" if hybrid else None
    no_text = content is None and input_path is None
    if id is None and no_text and sys.stdin.isatty():
        raise EmbedkitError(NOTHING_TO_SEARCH)
    searching = search_kwargs(ranking)
    target = open_database(database).collection(collection)
    target.check_model(model)
    options = {"unique": unique, "metadata": dict(parse_filter(f) for f in filters), "where": where,
               "min_score": min_score, "mmr": mmr, "exact": exact}
    if id is not None:
        if content is not None or input_path is not None:
            raise EmbedkitError("give ID or a text to search for (-c or -i), not both")
        if mode is not None:
            raise EmbedkitError(f"--{mode} searches for a text (-c or -i), not for the item ID")
        if any(value != default for value, default in zip(
                (searching["expand"], searching["feedback"] or 0, searching.get("rerank")), (False, 0, None))):
            raise EmbedkitError("--expand, --feedback and --rerank search for a text (-c or -i), not for the item ID")
        results = target.similar_by_id(id, number, **options)
    else:
        text = read_text(content, input_path, "text to search for")
        if no_text and not text.strip():  # nothing on standard input either
            raise EmbedkitError(NOTHING_TO_SEARCH)
        results = target.similar(text, number, mode=mode or "dense", **options, **searching)
    for entry in results:
        if plain:
            click.echo(f"{entry.id} ({entry.score:.4f})")
            if entry.part is not None:
                click.echo(f"  best part: characters {entry.part.start}-{entry.part.end} ({entry.part.score:.4f})")
            if entry.content:
                shown = entry.part.text if entry.part is not None and entry.part.text else entry.content
                click.echo(textwrap.indent(textwrap.shorten(shown, 300), "  "))
        else:
            try:
                click.echo(jsondata.dumps(entry.to_dict(), f"item {entry.id!r}", ensure_ascii=False))
            except EmbedkitError:
                raise jsondata.stored_error(target, entry.id) from None
