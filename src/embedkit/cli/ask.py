"""ask: answer a question from a collection's passages, with numbered sources."""


import click

from .. import ask as asking
from .. import jsondata
from ..errors import EmbedkitError
from ..filters import parse_filter
from .base import cli, database_option, open_database
from .chat_options import chat_model, chat_options
from .search_options import ranking_options, search_kwargs


@cli.command(short_help="Answer a question from a collection's passages, citing them.")
@click.argument("collection")
@click.argument("question")
@click.option("-m", "--model", "model_name", envvar="EMBEDKIT_CHAT_MODEL", show_envvar=True,
              help="Chat model: openai/NAME or ollama/NAME")
@click.option("-n", "--number", type=click.IntRange(min=1), default=asking.PASSAGES, show_default=True, help="Passages to give the model")
@click.option("--dense", "mode", flag_value="dense", help="Find passages by vector only")
@click.option("--keyword", "mode", flag_value="keyword", help="Find passages by BM25 only")
@click.option("--hybrid", "mode", flag_value="hybrid", default=True, help="Fuse vector and BM25 rankings  [default]")
@click.option("--unique", metavar="KEY", help="At most one passage per value of this metadata key (e.g. source)")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE", help="Only passages whose metadata has KEY=VALUE")
@click.option("--where", metavar="SQL", help="Only passages for which this SQL condition holds")
@click.option("--min-score", type=float, help="Ask nothing when no passage scores this much; say so instead")
@click.option("--context-only", is_flag=True, help="Print the numbered passages (the prompt's context) and ask no model")
@click.option("--json", "as_json", is_flag=True, help="JSON output: the question, the passages and (unless --context-only) the answer")
@ranking_options
@chat_options
@database_option
def ask(collection, question, model_name, number, mode, unique, filters, where, min_score, context_only, as_json,
        database, **options):
    """Answer QUESTION from the passages of COLLECTION that match it best.

    The passages are numbered and given to a chat model (an OpenAI-compatible server or
    Ollama) with the instruction to answer from them alone and cite them as [1], [2]...
    The answer streams to the terminal, then the sources: title or file, page and score.

    --context-only prints the numbered passages instead, ready to pipe into another tool
    (such as `llm`); with --json, a JSON object of the question and the passages.

    \b
    embedkit ask papers "which tokens can skip a layer?" -m ollama/llama3.2
    embedkit ask papers "what is BitNet?" --unique source --context-only | llm -s "Answer from these passages"
    """
    target = open_database(database).collection(collection)
    passages = asking.retrieve(
        target, question, number, mode=mode, min_score=min_score, unique=unique,
        metadata=dict(parse_filter(f) for f in filters), where=where, **search_kwargs(options),
    )
    if context_only:
        if as_json:
            click.echo(jsondata.dumps(asking.context_json(question, passages), "the passages", ensure_ascii=False))
        else:
            click.echo(asking.context(passages))
        return
    if not model_name:
        raise EmbedkitError("give a chat model with -m openai/NAME or -m ollama/NAME (or set EMBEDKIT_CHAT_MODEL)")
    model = chat_model(model_name, options)
    if as_json:
        text = "".join(asking.answer(model, question, passages))
        click.echo(jsondata.dumps({**asking.context_json(question, passages), "answer": text}, "the answer",
                                  ensure_ascii=False))
        return
    text = ""
    for piece in asking.answer(model, question, passages):
        text += piece
        click.echo(piece, nl=False)
    click.echo("" if text.endswith("\n") else "\n", nl=False)
    click.echo("\nSources:")
    click.echo(asking.sources(passages))
