"""Embedding models: the registry `embedkit models` lists (the base class is in base.py)."""

import json
import os

from .. import config
from ..errors import EmbedkitError
from .base import EmbeddingModel, PartialEmbedding, Truncated

__all__ = ["EmbeddingModel", "PartialEmbedding", "Truncated", "get_model", "register"]

# New collections (and `embed -c`, `embedkit_embed(text)`) use it unless told otherwise: it answers
# a question from a cold process in well under a second, where the torch backend takes 10 s and more
# importing torch (benchmarks/cold.py). A collection keeps the model it recorded.
DEFAULT_MODEL = "all-MiniLM-L6-v2-int8"


_registry: dict[str, EmbeddingModel] = {}
# Models made when first named, not listed by name: configured ones (keyed by their settings
# too, so an edit takes effect), services and local directories.
_made: dict = {}
PLUGIN_GROUP = "embedkit.models"
_plugins_loaded = False
plugin_errors: list[str] = []


def register(model: EmbeddingModel, aliases=()):
    """Make a model available by its id and aliases (built-ins and plugins register this way too)."""
    if aliases:
        model.aliases = (*model.aliases, *aliases)
    for name in (model.model_id, *model.aliases):
        _registry[name] = model
    return model


def load_plugins():
    """Let every installed package with an `embedkit.models` entry point register its models.

    The entry point names a function taking `register`. Done once, and only when a model is
    looked up that is not built in, so plugins cost nothing to commands that never need them.
    A plugin that fails is reported by `embedkit models`, and the others still load.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=PLUGIN_GROUP):
        package = entry_point.dist.name if entry_point.dist else entry_point.value

        def register_from_plugin(model, aliases=(), package=package):
            if model.source == EmbeddingModel.source:
                model.source = f"plugin {package}"
            return register(model, aliases)

        try:
            entry_point.load()(register_from_plugin)
        except Exception as ex:  # a broken plugin must not take embedkit down with it
            plugin_errors.append(f"plugin {package} ({entry_point.value}) failed to load: {ex}")


def aliases() -> dict:
    """The user's aliases from models.json: alias -> model id."""
    return _mapping(config.read(config.MODELS), "aliases")


def configured() -> dict:
    """The models defined in the user's models.json: id -> settings."""
    return _mapping(config.read(config.MODELS), "models")


def _mapping(settings, key) -> dict:
    value = settings.get(key, {})
    if not isinstance(value, dict):
        raise EmbedkitError(f"{config.path(config.MODELS)}: {key!r} should be a JSON object")
    return value


def get_model(name=None, local_paths: bool = True) -> EmbeddingModel:
    """A model by id or alias: built in, from a plugin, configured in models.json, an
    `openai/NAME` or `ollama/NAME` service, a sentence-transformers model by local path (unless
    local_paths is False, as for SQL from strangers), or one by Hugging Face hub name from the
    local Hugging Face cache."""
    name = name or DEFAULT_MODEL
    if name in _registry:
        return _registry[name]
    stored = config.read(config.MODELS)  # read once: an HTTP model is looked up for every batch
    user_aliases = _mapping(stored, "aliases")
    if name in user_aliases:
        # One step only: aliases of aliases (and loops) are refused.
        target = user_aliases[name]
        return get_model(target, local_paths) if target not in user_aliases else _unknown(name)
    load_plugins()
    if name in _registry:
        return _registry[name]
    settings = _mapping(stored, "models").get(name)
    if settings is not None:
        return _made_once((name, json.dumps(settings, sort_keys=True)), lambda: _from_settings(name, settings))
    from . import http

    service = _made.get(name) or http.from_prefix(name)
    if service is not None:
        return _made.setdefault(name, service)
    if local_paths and os.path.isdir(name):  # strangers are not even told whether it exists
        from .sentence_transformers import SentenceTransformerModel

        model_id = os.path.abspath(name)
        return _made_once(model_id, lambda: SentenceTransformerModel(model_id, model_id, source="local path"))
    from . import hub

    cached = hub.find(name)
    if cached is not None:
        from .sentence_transformers import SentenceTransformerModel

        hub_id, snapshot = cached
        return _made_once(cached, lambda: SentenceTransformerModel(hub_id, snapshot, source=f"Hugging Face cache, {snapshot}"))
    return _unknown(name)


def _made_once(key, make):
    if key not in _made:
        _made[key] = make()
    return _made[key]


def _unknown(name):
    raise EmbedkitError(
        f"unknown model {name!r}: use a name from 'embedkit models', a local "
        "sentence-transformers model directory, a Hugging Face name such as BAAI/bge-small-en-v1.5, "
        "openai/NAME or ollama/NAME"
    )


def check_settings(model_id, settings: dict) -> dict:
    """settings for a model in models.json, checked, with defaults filled in."""
    api = settings.get("api")
    if api == "sentence-transformers":
        from .sentence_transformers import check_settings as check
    elif api in ("openai", "ollama"):
        from .http import check_settings as check
    else:
        raise EmbedkitError(
            f"model {model_id}: api should be 'sentence-transformers', 'openai' or 'ollama', not {api!r}"
        )
    return check(model_id, settings)


def _from_settings(model_id, settings) -> EmbeddingModel:
    settings = check_settings(model_id, settings)
    if settings["api"] == "sentence-transformers":
        from . import sentence_transformers as api
    else:
        from . import http as api  # type: ignore[no-redef]
    return api.from_settings(model_id, settings)


def add(name, settings: dict):
    """Add (or replace) model name in models.json, after checking its settings."""
    load_plugins()
    if not name.strip() or name in _registry:
        raise EmbedkitError(f"{name!r} is already the name of a built-in or plugin model; choose another")
    check_settings(name, settings)
    _update(lambda stored: _section(stored, "models").__setitem__(name, settings))


def remove(name):
    """Remove model name from models.json, with the aliases naming it."""

    def drop(stored):
        _pop(stored, "models", name, "model")
        stored["aliases"] = {alias: target for alias, target in _section(stored, "aliases").items() if target != name}

    _update(drop)


def set_alias(alias, model):
    """Make alias another name for model (recorded as the model's own id)."""
    target = get_model(model).model_id
    if alias in _registry or alias in configured():
        raise EmbedkitError(f"{alias!r} is already the name of a model")
    _update(lambda stored: _section(stored, "aliases").__setitem__(alias, target))


def remove_alias(alias):
    _update(lambda stored: _pop(stored, "aliases", alias, "alias"))


def _update(change):
    stored = config.read(config.MODELS)
    change(stored)
    config.write(config.MODELS, stored)


def _section(stored, key) -> dict:
    return stored.setdefault(key, _mapping(stored, key))


def _pop(stored, key, name, what):
    if name not in _mapping(stored, key):
        raise EmbedkitError(f"no {what} {name!r} in {config.path(config.MODELS)}")
    del stored[key][name]


def canonical_id(name=None) -> str:
    """The id a collection records for name, without loading the model."""
    return get_model(name).model_id


def list_models():
    """Every model embedkit knows by name: built in, from plugins, then configured ones."""
    load_plugins()
    seen = []
    for model in _registry.values():
        if model not in seen:
            seen.append(model)
    for name in configured():
        model = get_model(name)
        if model not in seen:
            seen.append(model)
    user_aliases = aliases()
    return [(model, [a for a, target in user_aliases.items() if target == model.model_id]) for model in seen]


def _register_builtins():
    from .onnx_int8 import int8_model
    from .sentence_transformers import default_model

    register(default_model())
    register(int8_model())


_register_builtins()
