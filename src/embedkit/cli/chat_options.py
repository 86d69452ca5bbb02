"""The options that say how to reach a chat model, shared by ask and cluster --summarize."""

import functools

import click

from ..chat import get_chat_model

NAMES = ("base_url", "key_env", "timeout")


def chat_options(fn):
    """Add --base-url, --key-env and --timeout."""
    options = [
        click.option("--base-url", help="The chat server's URL (default: OPENAI_BASE_URL or OLLAMA_HOST)"),
        click.option("--key-env", metavar="VARIABLE", help="Environment variable holding the chat server's API key"),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds to wait for the server"),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), fn)


def chat_model(name, values: dict):
    """The chat model called name, reached as the options' values (removed from values) say."""
    return get_chat_model(name, **{option: values.pop(option) for option in NAMES})
