"""related, export-related and widget: related items for static sites."""

import os
import shutil
from importlib import resources

import click

from ..filters import parse_filter
from .base import Progress, cli, database_option, open_database


@cli.command(short_help="Compute every item's most similar items into a table.")
@click.argument("collection")
@click.option("-n", "--number", type=click.IntRange(min=1), default=10, show_default=True, help="Related items per item")
@click.option("--min-score", type=float, help="Leave out items less similar than this cosine similarity")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Relate only items whose metadata has KEY=VALUE (all of them, if repeated)")
@click.option("--same", metavar="KEY", help="Relate an item only to items with the same value of this metadata key (e.g. section)")
@database_option
def related(collection, number, min_score, filters, same, database):
    """Store the NUMBER items most similar to each item of COLLECTION (never itself) in the
    table COLLECTION_related: (id, other_id, rank, score), rank 1 the most similar.

    A re-run recomputes only the lists that added, changed or deleted items can affect;
    other settings recompute everything.

    \b
    embedkit related posts -n 5
    embedkit related posts -n 5 --min-score 0.3 --same section
    sqlite3 embeddings.db "select * from posts_related where id = 'my-post'"
    """
    target = open_database(database, write=True).collection(collection)
    with Progress() as progress:
        stats = target.compute_related(
            number, min_score, dict(parse_filter(f) for f in filters) or None, same, progress=progress.relating
        )
    click.echo(stats.summary(), err=True)


@cli.command("export-related", short_help="Write the related items as JSON files for a static site.")
@click.argument("collection")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("-f", "--field", "fields", multiple=True, metavar="KEY", help="Metadata of each related item to include (e.g. title, url); all of it if not given")
@click.option("--combined", is_flag=True, help="One related.json of every list instead of a file per item")
@database_option
def export_related(collection, directory, fields, combined, database):
    """Write the related lists of COLLECTION (from `embedkit related`) to DIRECTORY as JSON:
    NAME.json per item, {"id", "related": [{"id", "score", ...metadata}]}, and an
    index.json mapping each id to its file; or, with --combined, one related.json.

    NAME is the id with every character other than a-z, 0-9, _ and - written as ~XX (the
    hex of its UTF-8 bytes), so any id is a safe file name. Files whose content would not
    change are not rewritten, and files of items no longer listed are removed.

    \b
    embedkit export-related posts site/related -f title -f url
    """
    target = open_database(database).collection(collection)
    stats = target.export_related(directory, list(fields) or None, combined)
    click.echo(f"{stats.summary()} in {directory}", err=True)


@cli.command(short_help="Write related.js, the widget that shows related items in a page.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
def widget(directory):
    """Write related.js to DIRECTORY: a dependency-free script that shows an item's related
    items, from the files export-related wrote, in any element like

    \b
    <div data-embedkit-related="my-post" data-src="/related/"></div>
    <script src="/assets/related.js" defer></script>
    """
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "related.js")
    with resources.as_file(resources.files("embedkit") / "static" / "related.js") as source:
        shutil.copyfile(source, target)
    click.echo(target)
