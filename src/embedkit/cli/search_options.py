"""The ranking options that similar, ask and eval share (see docs/ranking.md)."""

import functools

import click

from .. import retrieval
from ..errors import EmbedkitError

NAMES = ("expand", "feedback", "fusion", "alpha", "keep_stop_words", "rerank", "rerank_url", "rerank_depth")


def ranking_options(fn):
    """Add --expand, --feedback, --fusion, --alpha, --keep-stop-words and --rerank/--rerank-url/--rerank-depth."""
    options = [
        click.option("--expand", is_flag=True, help="RM3: expand the keyword query with words of its top results"),
        click.option("--feedback", type=click.IntRange(min=0), metavar="K",
                     help="Rocchio: move the query vector toward the top K results and search again; 0 is off  [default: 3 with --hybrid, else 0]"),
        click.option("--fusion", type=click.Choice(retrieval.FUSIONS), default="rrf", show_default=True,
                     help="How --hybrid fuses: reciprocal rank, or a convex combination of normalised scores"),
        click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                     help="With --fusion convex: the weight of the vector scores"),
        click.option("--keep-stop-words", is_flag=True, help="Keep English stop words in keyword queries"),
        click.option("--rerank", metavar="MODEL",
                     help="Re-order the top results: a cross-encoder (directory or cached name), cohere/NAME, jina/NAME or tei"),
        click.option("--rerank-url", metavar="URL", help="The rerank API's base URL (cohere, jina, tei)"),
        click.option("--rerank-depth", type=click.IntRange(min=1), metavar="N", help="How many top results to rerank  [default: 50]"),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), fn)


def search_kwargs(values: dict) -> dict:
    """Collection.similar's keyword arguments from the options' values (removed from values)."""
    given = {name: values.pop(name) for name in NAMES}
    kwargs = {"expand": given["expand"], "feedback": given["feedback"], "fusion": given["fusion"],
              "alpha": given["alpha"], "stop_words": not given["keep_stop_words"]}
    if given["rerank"]:
        from ..rerank import get_reranker  # here: its HTTP clients cost every search's start-up

        kwargs["rerank"] = get_reranker(given["rerank"], url=given["rerank_url"])
        kwargs["rerank_depth"] = given["rerank_depth"]
    elif given["rerank_url"] or given["rerank_depth"]:
        raise EmbedkitError("--rerank-url and --rerank-depth go with --rerank MODEL")
    return kwargs
