import json
import textwrap

import click

from ..errors import EmbedkitError
from . import cli, database_option, open_database, read_text


@cli.command(short_help="Find the items most similar to a text or to a stored item.")
@click.argument("collection")
@click.argument("id", required=False)
@click.option("-c", "--content", help="Text to search for")
@click.option("-i", "--input", "input_path", type=click.Path(dir_okay=False, allow_dash=True), help="File whose text to search for, or - for stdin")
@click.option("-n", "--number", type=click.IntRange(min=1), default=10, show_default=True, help="How many results")
@click.option("-m", "--model", help="Must match the collection's model if given")
@click.option("--unique", metavar="KEY", help="One result per distinct value of this metadata key (e.g. source: the best chunk of each document)")
@click.option("--plain", is_flag=True, help="Readable text instead of JSON lines")
@database_option
def similar(collection, id, content, input_path, number, model, unique, plain, database):
    """Items of COLLECTION most similar to a text or to the stored item ID.

    Prints one JSON object per line: {"id", "score", "content", "metadata"}, where
    score is the cosine similarity (higher is more similar), best first.

    \b
    embedkit similar notes -c 'sqlite backup tools'
    embedkit similar posts 42 -n 5 --plain
    embedkit similar papers -c 'ternary weights' --unique source
    """
    target = open_database(database).collection(collection)
    target.check_model(model)
    if id is not None:
        if content is not None or input_path is not None:
            raise EmbedkitError("give ID or a text to search for (-c or -i), not both")
        results = target.similar_by_id(id, number, unique=unique)
    else:
        results = target.similar(read_text(content, input_path, "text to search for"), number, unique=unique)
    for entry in results:
        if plain:
            click.echo(f"{entry.id} ({entry.score:.4f})")
            if entry.content:
                click.echo(textwrap.indent(textwrap.shorten(entry.content, 300), "  "))
        else:
            click.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
