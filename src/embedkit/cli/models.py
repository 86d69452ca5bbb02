"""Models, aliases and API keys: `embedkit models`, `embedkit aliases`, `embedkit keys`."""

import sys

import click

from .. import config, jsondata, models
from ..errors import EmbedkitError
from .base import ListGroup, cli, print_table


@cli.group(name="models", cls=ListGroup)
def models_group():
    """List the embedding models embedkit can use (the default), or configure more."""


@models_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Output a JSON array")
def list_models(as_json):
    """Model id, dimensions, aliases and where each model comes from.

    Built-in models first, then those of installed plugins, then the ones added with
    'embedkit models add'.
    """
    rows = [
        {"id": m.model_id, "dimensions": m.dimensions, "aliases": [*m.aliases, *user], "source": m.source}
        for m, user in models.list_models()
    ]
    for problem in models.plugin_errors:
        click.echo(f"Warning: {problem}", err=True)
    if as_json:
        click.echo(jsondata.dumps(rows, "the list", indent=2, ensure_ascii=False))
    else:
        print_table([[r["id"], r["dimensions"] or "?", ", ".join(r["aliases"]), r["source"]] for r in rows],
                    ["model", "dimensions", "aliases", "source"])


@models_group.command(name="add")
@click.argument("name")
@click.option("--api", type=click.Choice(["openai", "ollama", "sentence-transformers"]), required=True,
              help="How the model is reached: an OpenAI-compatible /v1/embeddings service, Ollama, or a local directory")
@click.option("--base-url", help="The service's URL, e.g. http://localhost:8080/v1 (openai, ollama)")
@click.option("--model-name", help="The model's name at the service (openai, ollama)  [default: NAME]")
@click.option("--key-name", help="Name of the API key in keys.json, see 'embedkit keys set' (openai, ollama)")
@click.option("--key-env", help="Environment variable holding the API key; used before keys.json (openai, ollama)")
@click.option("--path", help="The model's directory (sentence-transformers)")
@click.option("--device", help="Where to run it: cpu, cuda, mps... (sentence-transformers)  [default: the best there is]")
@click.option("--max-length", type=click.IntRange(min=1), help="Tokens of each text the model reads (sentence-transformers)")
@click.option("--normalize/--no-normalize", default=None, help="Scale vectors to unit length (sentence-transformers)")
@click.option("--batch-size", type=click.IntRange(min=1), help="Texts per request, or per forward pass for sentence-transformers")
@click.option("--concurrency", type=click.IntRange(min=1), help="Requests in flight at once (openai, ollama)")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds to wait for a response (openai, ollama)")
@click.option("--retries", type=click.IntRange(min=0), help="Attempts after the first on 429, 5xx, timeouts and dropped connections (openai, ollama)")
@click.option("--dimensions", type=click.IntRange(min=1), help="Ask the service for this many dimensions (openai), or cut vectors to them (ollama)")
def add_model(name, api, **options):
    """Add (or replace) model NAME in models.json, for use as -m NAME.

    \b
    embedkit models add tei --api openai --base-url http://localhost:8080/v1 --model-name bge-small-en
    embedkit models add nomic --api ollama --model-name nomic-embed-text
    embedkit models add e5 --api sentence-transformers --path ./multilingual-e5-small --max-length 512
    """
    settings = {"api": api, **{key: value for key, value in options.items() if value is not None}}
    if api != "sentence-transformers":
        settings.setdefault("model_name", name)
    models.add(name, settings)
    click.echo(f"Added model {name} to {config.path(config.MODELS)}", err=True)


@models_group.command(name="remove")
@click.argument("name")
def remove_model(name):
    """Remove model NAME from models.json, with the aliases naming it."""
    models.remove(name)


@cli.group(cls=ListGroup)
def aliases():
    """List aliases (the default): other names for models."""


@aliases.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Output a JSON object of alias: model")
def list_aliases(as_json):
    """Every alias set with 'embedkit aliases set' and the model it names."""
    rows = models.aliases()
    if as_json:
        click.echo(jsondata.dumps(rows, "the list", indent=2, ensure_ascii=False))
    elif rows:
        print_table(list(rows.items()), ["alias", "model"])


@aliases.command(name="set")
@click.argument("alias")
@click.argument("model")
def set_alias(alias, model):
    """Make ALIAS another name for MODEL.

    \b
    embedkit aliases set mini all-MiniLM-L6-v2
    """
    models.set_alias(alias, model)


@aliases.command(name="remove")
@click.argument("alias")
def remove_alias(alias):
    """Remove ALIAS."""
    models.remove_alias(alias)


@cli.group(cls=ListGroup)
def keys():
    """List the names of stored API keys (the default), or store one."""


@keys.command(name="list")
def list_keys():
    """The names of the keys in keys.json (never the keys)."""
    for name in config.read(config.KEYS):
        click.echo(name)


@keys.command(name="set")
@click.argument("name")
@click.option("--value", help="The key (default: asked for, or read from standard input)")
def set_key(name, value):
    """Store the API key NAME in keys.json, readable only by you.

    An environment variable named by the model (OPENAI_API_KEY for openai/...) is used
    before keys.json when it is set.

    \b
    embedkit keys set openai
    """
    if value is None:
        value = click.prompt("Key", hide_input=True) if sys.stdin.isatty() else sys.stdin.read()
    value = value.strip()
    if not value:
        raise EmbedkitError(f"the key {name!r} is empty")
    config.set_key(name, value)


@keys.command(name="path")
def keys_path():
    """Where keys.json is (models.json is beside it; set EMBEDKIT_USER_DIR to move both)."""
    click.echo(config.path(config.KEYS))
