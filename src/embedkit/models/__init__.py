"""Embedding models: a small base class and the registry `embedkit models` lists."""

import json
import os

import numpy as np

from .. import config
from ..errors import EmbedkitError
from ..vectors import normalize_rows

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class PartialEmbedding(EmbedkitError):
    """A model call that failed after some of its texts were embedded.

    vectors maps positions in the texts to their vectors: embed_multi stores those before
    reporting the error, so what was paid for is kept and a re-run embeds only the rest.
    """

    def __init__(self, message, vectors: dict):
        super().__init__(message)
        self.vectors = vectors


class EmbeddingModel:
    """Turns texts into vectors. Subclasses set model_id and implement _embed."""

    model_id: str
    # Known without loading the model, or None until the first embedding.
    dimensions = None
    aliases: tuple = ()
    source = "built-in"
    # How many texts embed_multi hands to one embed() call unless told otherwise; a remote
    # model raises it so that it can keep several requests in flight.
    texts_per_call = 100

    def __init__(self):
        # How many times the model was asked for vectors: the re-run tests count these.
        self.calls = 0

    def embed(self, texts) -> np.ndarray:
        """Vectors for texts, one float32 row each."""
        texts = list(texts)
        self.calls += 1
        vectors = np.asarray(self._embed(texts), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise EmbedkitError(
                f"model {self.model_id} returned {vectors.shape} for {len(texts)} texts"
            )
        if self.dimensions is None and len(texts):
            self.dimensions = vectors.shape[1]
        return vectors

    def _embed(self, texts):
        raise NotImplementedError

    # The most tokens of a text the model reads, or None when unknown (a model without a
    # tokenizer embedkit can use): anything past it is silently cut off.
    max_tokens = None

    def count_tokens(self, texts) -> list:
        """How many tokens the model sees in each text, counting the ones it adds itself."""
        raise EmbedkitError(f"model {self.model_id} has no tokenizer embedkit can use to count tokens")

    def embed_late(self, text: str, spans) -> np.ndarray:
        """Late chunking: one vector per (start, end) character span of text, each pooled from
        the token vectors of a single pass over the whole text, so that every chunk's vector
        is made with the rest of the text in view. Only models that expose their token
        vectors can do this."""
        raise EmbedkitError(
            f"model {self.model_id} cannot do late chunking: it needs a local sentence-transformers model"
        )

    def count_truncated(self, texts) -> int:
        """How many of texts are longer than the model reads (0 when that is unknown)."""
        limit = self.max_tokens
        return 0 if limit is None else sum(count > limit for count in self.count_tokens(texts))

    @property
    def loaded(self) -> bool:
        return True

    def truncated(self, dimensions) -> "EmbeddingModel":
        """This model giving the first `dimensions` of each vector, renormalised.

        Matryoshka-trained models keep most of their quality in a prefix of the vector;
        for others it is a lossy shortcut. Models whose service truncates by itself override _truncate.
        """
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise EmbedkitError(f"dimensions should be a positive whole number, not {dimensions!r}")
        if self.dimensions is not None and dimensions > self.dimensions:
            raise EmbedkitError(
                f"model {self.model_id} gives {self.dimensions} dimensions; cannot keep {dimensions}"
            )
        cache = self.__dict__.setdefault("_truncations", {})
        if dimensions not in cache:
            cache[dimensions] = self._truncate(dimensions)
        return cache[dimensions]

    def _truncate(self, dimensions) -> "EmbeddingModel":
        return Truncated(self, dimensions)


class Truncated(EmbeddingModel):
    """The first dimensions of another model's vectors, scaled back to unit length."""

    def __init__(self, base: EmbeddingModel, dimensions: int):
        super().__init__()
        self.base = base
        self.model_id, self.aliases, self.source = base.model_id, base.aliases, base.source
        self.dimensions = dimensions
        self.texts_per_call = base.texts_per_call

    def _embed(self, texts):
        try:
            return self._keep(self.base.embed(texts))
        except PartialEmbedding as ex:
            if not ex.vectors:
                raise
            kept = self._keep(np.array(list(ex.vectors.values()), dtype=np.float32).reshape(len(ex.vectors), -1))
            raise PartialEmbedding(str(ex), dict(zip(ex.vectors, kept))) from None

    def _keep(self, full):
        if full.shape[1] < self.dimensions:
            raise EmbedkitError(
                f"model {self.model_id} gives {full.shape[1]} dimensions; cannot keep {self.dimensions}"
            )
        return normalize_rows(np.array(full[:, : self.dimensions], dtype=np.float32))

    @property
    def max_tokens(self):
        return self.base.max_tokens

    def count_tokens(self, texts) -> list:
        return self.base.count_tokens(texts)

    @property
    def loaded(self) -> bool:
        return self.base.loaded


_registry = {}
# Models made when first named, not listed by name: configured ones (keyed by their settings
# too, so an edit takes effect), services and local directories.
_made = {}
PLUGIN_GROUP = "embedkit.models"
_plugins_loaded = False
plugin_errors = []


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


def get_model(name=None) -> EmbeddingModel:
    """A model by id or alias: built in, from a plugin, configured in models.json, an
    `openai/NAME` or `ollama/NAME` service, or a sentence-transformers model by local path."""
    name = name or DEFAULT_MODEL
    if name in _registry:
        return _registry[name]
    stored = config.read(config.MODELS)  # read once: an HTTP model is looked up for every batch
    user_aliases = _mapping(stored, "aliases")
    if name in user_aliases:
        # One step only: aliases of aliases (and loops) are refused.
        return get_model(user_aliases[name]) if user_aliases[name] not in user_aliases else _unknown(name)
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
    if os.path.isdir(name):
        from .sentence_transformers import SentenceTransformerModel

        model_id = os.path.abspath(name)
        return _made_once(model_id, lambda: SentenceTransformerModel(model_id, model_id, source="local path"))
    return _unknown(name)


def _made_once(key, make):
    if key not in _made:
        _made[key] = make()
    return _made[key]


def _unknown(name):
    raise EmbedkitError(
        f"unknown model {name!r}: use a name from 'embedkit models', a local "
        "sentence-transformers model directory, openai/NAME or ollama/NAME"
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
        from .sentence_transformers import from_settings
    else:
        from .http import from_settings
    return from_settings(model_id, settings)


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
