"""Embedding models: a small base class and the registry `embedkit models` lists."""

import os

import numpy as np

from ..errors import EmbedkitError

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class EmbeddingModel:
    """Turns texts into vectors. Subclasses set model_id and implement _embed."""

    model_id: str
    # Known without loading the model, or None until the first embedding.
    dimensions = None
    aliases: tuple = ()
    source = "built-in"

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
        if self.dimensions is None:
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

    def count_truncated(self, texts) -> int:
        """How many of texts are longer than the model reads (0 when that is unknown)."""
        limit = self.max_tokens
        return 0 if limit is None else sum(count > limit for count in self.count_tokens(texts))

    @property
    def loaded(self) -> bool:
        return True


_registry = {}


def register(model: EmbeddingModel):
    """Make a model available by its id and aliases (built-ins register this way too)."""
    for name in (model.model_id, *model.aliases):
        _registry[name] = model
    return model


def get_model(name=None) -> EmbeddingModel:
    """A registered model by id or alias, or a sentence-transformers model by local path."""
    name = name or DEFAULT_MODEL
    if name in _registry:
        return _registry[name]
    if os.path.isdir(name):
        from .sentence_transformers import SentenceTransformerModel

        model_id = os.path.abspath(name)
        if model_id not in _registry:
            _registry[model_id] = SentenceTransformerModel(model_id, model_id, source="local path")
        return _registry[model_id]
    raise EmbedkitError(
        f"unknown model {name!r}: use a name from 'embedkit models' or a local "
        "sentence-transformers model directory"
    )


def canonical_id(name=None) -> str:
    """The id a collection records for name, without loading the model."""
    return get_model(name).model_id


def list_models():
    seen = []
    for model in _registry.values():
        if model not in seen:
            seen.append(model)
    return seen


def _register_builtins():
    from .sentence_transformers import default_model

    register(default_model())


_register_builtins()
