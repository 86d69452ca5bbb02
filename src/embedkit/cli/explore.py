"""cluster, map, heatmap and classify: looking at a collection as a whole."""


import click

from .. import jsondata
from ..errors import EmbedkitError
from ..filters import parse_filter
from .base import Progress, cli, database_option, open_database, print_table
from .chat_options import chat_model, chat_options


def filter_options(fn):
    fn = click.option("--where", metavar="SQL", help="Only items for which this SQL condition on the table's columns holds")(fn)
    return click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
                        help="Only items whose metadata has KEY=VALUE (all of them, if repeated)")(fn)


def _k(value):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number or 'auto'", param_hint="-k") from None


@cli.command(short_help="Group the items into clusters, each named by its distinctive terms.")
@click.argument("collection")
@click.option("-k", "k", default="8", show_default=True, metavar="N|auto", help="How many clusters; auto picks the k with the best silhouette")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of k-means: the same seed, settings and items give the same clusters")
@filter_options
@click.option("--assign", is_flag=True, help="Put new and changed items in the nearest existing cluster instead of clustering again")
@click.option("--summarize", metavar="MODEL", help="Have this chat model (openai/NAME or ollama/NAME) name each cluster and sum it up in a sentence")
@chat_options
@click.option("--plain", is_flag=True, help="A readable table instead of JSON lines")
@database_option
def cluster(collection, k, seed, filters, where, assign, summarize, plain, database, **options):
    """Cluster the items of COLLECTION with seeded k-means over their unit vectors (cosine
    similarity) and name each cluster by the terms of its stored text most distinctive of it
    (class-based TF-IDF) and its most central items.

    Writes the tables COLLECTION_clusters (id, cluster, distance: cosine distance to the
    cluster's centre) and COLLECTION_cluster_info (cluster, size, name, terms, central,
    summary, centroid), and prints one JSON line per cluster, largest first. A re-run with the
    same settings on unchanged items changes nothing; --assign keeps the clusters and places
    items added since in the nearest one.

    \b
    embedkit cluster posts -k 10
    embedkit cluster posts -k auto --filter lang=en --plain
    embedkit cluster posts --assign
    embedkit cluster posts -k 10 --summarize ollama/llama3.2
    sqlite3 embeddings.db "select cluster, size, name from posts_cluster_info"

    --summarize asks a chat model for each cluster's name and a one-sentence summary, showing
    it the cluster's distinctive terms and the text of its five most central items. The
    clusters are stored before it is asked: if it fails, they keep their TF-IDF names, and
    running the command again with the same model asks only about the clusters that have no
    summary yet. An answer that is not a JSON object with a one-line name and summary leaves
    its cluster the TF-IDF name, with a warning.
    """
    target = open_database(database, write=True).collection(collection)
    if assign:
        if filters or where or k != "8" or summarize:
            raise EmbedkitError("--assign uses the clusters' own settings: give no -k, --filter, --where or --summarize")
        result = target.assign_clusters()
    else:
        if not summarize and any(value is not None for value in options.values()):
            raise EmbedkitError("--base-url, --key-env and --timeout go with --summarize MODEL")
        model = chat_model(summarize, options) if summarize else None
        with Progress() as progress:
            result = target.cluster(_k(k), seed, dict(parse_filter(f) for f in filters) or None, where,
                                    progress=progress.clustering, summarize=model)
    if plain:
        summaries = any(c.summary for c in result.clusters)
        print_table([(c.cluster, c.size, c.name) + ((c.summary or "",) if summaries else ()) for c in result.clusters],
                    ["cluster", "size", "name"] + (["summary"] if summaries else []))
    else:
        for c in result.clusters:
            click.echo(jsondata.dumps(c.to_dict(), f"cluster {c.cluster}", ensure_ascii=False))
    if result.warning():
        click.echo(f"Warning: {result.warning()}", err=True)
    click.echo(result.summary(), err=True)


@cli.command("map", short_help="Draw every item on a 2-D map: an HTML page or a PNG.")
@click.argument("collection")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="map.html (interactive, offline) or map.png")
@click.option("--color-by", metavar="cluster|KEY", help="Color by cluster (the default once clustered) or by a metadata key")
@click.option("--title-key", default="title", show_default=True, metavar="KEY", help="Metadata key shown as each item's title")
@click.option("--link", metavar="URL", help="Clicking an item opens this URL, {id} replaced by the item's id")
@click.option("--max-points", type=click.IntRange(min=1), default=10_000, show_default=True, help="Show at most this many items (a sample, always the same)")
@filter_options
@database_option
def map_(collection, output, color_by, title_key, link, max_points, filters, where, database):
    """Draw the items of COLLECTION on a map: their vectors projected on their two principal
    axes (PCA), so that similar items are near each other, colored by cluster or by a
    metadata value.

    The HTML page is one file that works offline: scroll to zoom, drag to move, hover over
    an item to see its id, title and text, click to open its --link. A collection of more
    than --max-points items is sampled: the items whose ids have the smallest SHA-256, the
    same ones every run.

    \b
    embedkit map posts -o map.html --link 'https://example.com/posts/{id}'
    embedkit map posts -o map.png --color-by section
    """
    target = open_database(database).collection(collection)
    result = target.map(output, color_by, title_key, link, max_points, dict(parse_filter(f) for f in filters) or None,
                        where)
    shown = len(result.ids)
    click.echo(f"{shown} of {result.total} items" if shown < result.total else f"{shown} items", err=True, nl=False)
    click.echo(f" in {output}", err=True)


@cli.command(short_help="Pairwise similarities of a few items or texts, as a picture or JSON.")
@click.argument("collection")
@click.argument("ids", nargs=-1)
@click.option("-c", "--content", "texts", multiple=True, metavar="TEXT", help="A text to compare (repeatable), embedded with the collection's model")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="heatmap.png, heatmap.html or heatmap.json; JSON on stdout if not given")
@database_option
def heatmap(collection, ids, texts, output, database):
    """The cosine similarity of every pair of the stored items IDS and the texts given with
    -c, at most 50 in all: a PNG, an HTML table or JSON {"labels", "ids", "matrix"}.

    \b
    embedkit heatmap posts 1 2 3 4
    embedkit heatmap posts -c 'rye bread' -c 'sourdough' -c 'SQLite' -o heatmap.png
    """
    target = open_database(database).collection(collection)
    result = target.heatmap(ids, texts, output)
    if output is None:
        click.echo(jsondata.dumps(result.to_dict(), "the heatmap", ensure_ascii=False))
    else:
        click.echo(f"{len(result.labels)} x {len(result.labels)} in {output}", err=True)


@cli.command(short_help="Label every item by its similarity to labelled examples.")
@click.argument("collection")
@click.option("--examples", required=True, type=click.Path(dir_okay=False, allow_dash=True), help="CSV with a header: label and id (stored items) or text")
@click.option("--min-score", type=float, help="Leave items less similar than this to every label unlabelled")
@filter_options
@database_option
def classify(collection, examples, min_score, filters, where, database):
    """Label every item of COLLECTION with the label whose examples it is most similar to:
    each label's centroid (the mean of its examples' vectors, by the SQL aggregate
    embedkit_centroid) is compared with each item by cosine similarity.

    Writes the table COLLECTION_labels (id, label, score, margin): score is the similarity to
    the best label's centroid, margin how much more that is than the second best; label is
    empty (NULL) for items scoring under --min-score. Prints one JSON line per label with its
    number of items.

    \b
    embedkit classify posts --examples labels.csv --min-score 0.3
    sqlite3 embeddings.db "select label, count(*) from posts_labels group by label"
    """
    from ..explore.classify import read_examples
    from ..sources.tabular import read_input

    target = open_database(database, write=True).collection(collection)
    name = "stdin" if examples == "-" else examples
    result = target.classify(read_examples(read_input(examples), name), min_score,
                             dict(parse_filter(f) for f in filters) or None, where)
    for label, count in [*result.counts.items(), (None, result.items - result.labelled)]:
        click.echo(jsondata.dumps({"label": label, "items": count}, "the counts", ensure_ascii=False))
    click.echo(result.summary(), err=True)
