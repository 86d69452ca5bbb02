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
        """Late chunking: one vector per (start, end) character span of text, each the mean of
        the vectors of the tokens inside it, from passes of the model over the whole text.

        A chunk's vector is then made with the text around it in view: the title, the
        sentence before, what "it" refers to. A text longer than the model reads is read in
        passes of max_tokens that overlap by half, and each token's vector comes from the pass
        it is nearest the middle of, so every token has a quarter of a window of context on
        each side (jina-ai's "long late chunking"). A span holding no whole token is embedded
        on its own. Only models that expose their token vectors can do this (check_late_chunking).
        """
        return self.embed_late_many([(text, spans)])[0]

    def embed_late_many(self, texts_and_spans) -> list:
        """embed_late for many (text, spans) pairs; the model runs all their passes in one call."""
        self.check_late_chunking()
        plans: list[_LatePlan] = []
        passes: list[list[int]] = []
        for text, spans in texts_and_spans:
            ids, offsets, special = self._encode_tokens(text)
            plan = _LatePlan(text, list(spans), ids, offsets, special, self.max_tokens)
            plan.first = len(passes)
            passes += plan.passes()
            plans.append(plan)
        states = self._token_vectors(passes) if passes else []
        results: list[list] = []
        alone = []
        for plan in plans:
            vectors = plan.pool(states[plan.first : plan.first + plan.count])
            for position, vector in enumerate(vectors):
                if vector is None:
                    alone.append((len(results), position, plan.text[slice(*plan.spans[position])]))
            results.append(vectors)
        if alone:
            for (result, position, _), vector in zip(alone, self.embed([text for _, _, text in alone])):
                results[result][position] = vector
        self.calls += 1
        out = []
        for vectors in results:
            matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, self.dimensions or 0), np.float32)
            out.append(normalize_rows(matrix) if self._normalizes() else matrix)
        return out

    def check_late_chunking(self) -> None:
        """Raise, in one line, unless this model can late-chunk (see embed_late)."""
        raise EmbedkitError(
            f"model {self.model_id} cannot do late chunking: it needs a model whose token vectors embedkit "
            "can read (all-MiniLM-L6-v2-int8, or a local sentence-transformers model that pools by the mean)"
        )

    def _encode_tokens(self, text: str):
        """(token ids, (start, end) character offsets, special-token flags) of the whole text,
        special tokens included, nothing cut off."""
        raise NotImplementedError

    def _token_vectors(self, passes) -> list:
        """The last hidden state (tokens x dimensions) of the model over each list of token ids."""
        raise NotImplementedError

    def _normalizes(self) -> bool:
        """Whether the model's own vectors are scaled to unit length (late chunks are then too)."""
        return True

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

    def check_late_chunking(self) -> None:
        self.base.check_late_chunking()

    def embed_late_many(self, texts_and_spans) -> list:
        return [self._keep(vectors) for vectors in self.base.embed_late_many(texts_and_spans)]

    @property
    def loaded(self) -> bool:
        return self.base.loaded

    def check_available(self):
        self.base.check_available()


class _LatePlan:
    """How embed_late reads one text: the passes over its tokens, and which tokens each span pools."""

    def __init__(self, text, spans, ids, offsets, special, max_tokens):
        self.text, self.spans = text, spans
        # Special tokens ([CLS], [SEP]) open and close every pass; the text's own tokens go between.
        lead = 0
        while lead < len(ids) and special[lead]:
            lead += 1
        trail = len(ids)
        while trail > lead and special[trail - 1]:
            trail -= 1
        self.prefix, self.suffix = list(ids[:lead]), list(ids[trail:])
        self.content = list(ids[lead:trail])
        self.offsets = np.array(offsets[lead:trail], dtype=np.int64).reshape(-1, 2)
        self.window = max(1, (max_tokens or len(ids)) - lead - (len(ids) - trail))
        self.starts = self._starts()
        self.count = len(self.starts)
        self.first = 0  # where its passes start among those of one embed_late_many call

    def _starts(self):
        n, window = len(self.content), self.window
        if n <= window:
            return [0]
        step, starts = max(1, window // 2), [0]
        while starts[-1] + window < n:
            starts.append(min(starts[-1] + step, n - window))
        return starts

    def passes(self):
        return [self.prefix + self.content[start : start + self.window] + self.suffix for start in self.starts]

    def pool(self, states):
        """One vector (or None: embed it alone) per span, from the passes' hidden states."""
        n = len(self.content)
        tokens = None
        if n:
            # Each token's vector from the pass whose middle it is nearest.
            middles = np.array(self.starts) + min(self.window, n) / 2
            nearest = np.abs(np.arange(n)[:, None] + 0.5 - middles[None, :]).argmin(axis=1)
            tokens = np.empty((n, states[0].shape[1]), dtype=np.float32)
            for p, start in enumerate(self.starts):
                rows = np.flatnonzero(nearest == p)
                tokens[rows] = states[p][len(self.prefix) + rows - start]
        vectors = []
        begins, ends = (self.offsets[:, 0], self.offsets[:, 1]) if n else (None, None)
        for start, end in self.spans:
            if tokens is None:
                vectors.append(None)
                continue
            inside = (begins >= start) & (ends <= end) & (ends > begins)
            vectors.append(tokens[inside].mean(axis=0) if inside.any() else None)
        return vectors
