"""The model base class: what every embedding model (built in, configured, from a plugin) is."""

import numpy as np

from .. import extras
from ..errors import EmbedkitError
from ..vectors import normalize_rows


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
    dimensions: int | None = None
    aliases: tuple = ()
    source = "built-in"
    # How many texts embed_multi hands to one embed() call unless told otherwise; a remote
    # model raises it so that it can keep several requests in flight.
    texts_per_call = 100
    # (module, extra) of the optional packages the model needs to run: checked before work starts.
    requirements: tuple = ()
    # True for a model that calls a service, which may charge for each call: a public Datasette
    # lets visitors make it work only where its owner allows (a plugin's service model sets it).
    remote = False

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

    def check_available(self):
        """Raise extras.MissingExtra, in one line, unless what the model needs is installed;
        nothing is loaded."""
        for module, extra in self.requirements:
            extras.check(module, extra, f"model {self.model_id}")

    # The most tokens of a text the model reads, or None when unknown (a model without a
    # tokenizer embedkit can use): anything past it is silently cut off.
    max_tokens: int | None = None

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
        self.remote = base.remote

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

    def check_available(self):
        self.base.check_available()
