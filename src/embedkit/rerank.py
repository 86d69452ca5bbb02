"""Rerankers: re-order a search's top candidates by a model that reads the query and each
candidate together, which ranks better than comparing two vectors but costs a model call
per candidate.

- A sentence-transformers CrossEncoder: a local directory, or the name of a model already
  in the Hugging Face cache (nothing is downloaded).
- An HTTP rerank API: cohere/NAME (Cohere's POST /v2/rerank), jina/NAME (Jina's POST
  /v1/rerank) or tei (text-embeddings-inference's POST /rerank), with the base URL from
  --rerank-url or COHERE_BASE_URL / JINA_BASE_URL / TEI_URL, and keys from COHERE_API_KEY /
  JINA_API_KEY ('embedkit keys set cohere' / 'jina'); keys, timeouts and retries follow
  embedkit.service.
"""

import os
from dataclasses import replace

from . import service
from .errors import EmbedkitError, first_line

# How many of the first results a reranker re-orders when the caller does not say.
CANDIDATES = 50

HTTP_APIS = {
    # api: (base URL variable, default base URL, path, key name, key variable)
    "cohere": ("COHERE_BASE_URL", "https://api.cohere.com/v2", "/rerank", "cohere", "COHERE_API_KEY"),
    "jina": ("JINA_BASE_URL", "https://api.jina.ai/v1", "/rerank", "jina", "JINA_API_KEY"),
    "tei": ("TEI_URL", None, "/rerank", None, None),
}


class Reranker:
    name: str

    def scores(self, query: str, texts: list) -> list:
        """A relevance score for each text (higher is more relevant), in the order given."""
        raise NotImplementedError


class CrossEncoderReranker(Reranker):
    def __init__(self, name: str):
        self.name = name
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                from sentence_transformers import CrossEncoder
            except ImportError:
                raise EmbedkitError(
                    "a cross-encoder reranker needs sentence-transformers: pip install 'embedkit-sqlite[local]'"
                ) from None

            local = os.path.isdir(self.name)
            try:
                self._model = CrossEncoder(self.name, local_files_only=not local or None)
            except Exception as ex:  # noqa: BLE001 - any loading error, said in one line
                where = "the directory" if local else "a local directory or a model in the Hugging Face cache"
                raise EmbedkitError(f"cannot load cross-encoder {self.name!r} ({where}): {first_line(ex)}") from None
        return self._model

    def scores(self, query, texts):
        if not texts:
            return []
        return [float(score) for score in self._load().predict([(query, text) for text in texts], show_progress_bar=False)]


class HTTPReranker(Reranker):
    def __init__(self, api: str, model_name, base_url=None, key_env=None, timeout=None, retries=None):
        variable, default, path, key_name, default_env = HTTP_APIS[api]
        base = base_url or os.environ.get(variable) or default
        if base is None:
            raise EmbedkitError(f"reranker {api}: give the server's URL with --rerank-url or {variable}")
        self.name = f"{api}/{model_name}" if model_name else api
        settings = {
            "api": "openai", "base_url": base, "model_name": model_name or api,
            "key_name": None if key_env else key_name, "key_env": key_env or default_env,
            "timeout": timeout, "retries": retries,
        }
        known = {**service.COMMON}
        checked = service.check(f"reranker {self.name}", settings, known, {"openai": {"timeout": 60.0}}, (path,))
        self.api, self.model_name = api, model_name
        self.url = checked["base_url"] + path
        self._service = service.Service(f"reranker {self.name}", checked)

    def scores(self, query, texts):
        if not texts:
            return []
        if self.api == "tei":
            payload = {"query": query, "texts": texts}
        else:
            payload = {"model": self.model_name, "query": query, "documents": texts}
        key = self._service.key()
        try:
            body = service.json_body(self._service.post(self.url, payload, key))
        except service.Failure as failure:
            raise EmbedkitError(self._service.message(failure, key)) from None
        # Cohere and Jina: {"results": [{"index", "relevance_score"}]}; TEI: [{"index", "score"}].
        results = body.get("results") if isinstance(body, dict) else body
        scores = [None] * len(texts)
        try:
            for result in results:
                scores[result["index"]] = float(result.get("relevance_score", result.get("score")))
        except (TypeError, KeyError, IndexError, ValueError):
            raise EmbedkitError(f"reranker {self.name}: {service.shown(self.url)} sent a malformed answer: "
                                f"{service.snippet(body)}") from None
        if None in scores:
            raise EmbedkitError(f"reranker {self.name}: {service.shown(self.url)} scored {len(texts) - scores.count(None)} "
                                f"of {len(texts)} texts")
        return scores


def get_reranker(spec: str, url=None, key_env=None, timeout=None) -> Reranker:
    """cohere/NAME, jina/NAME, tei: an HTTP rerank API; anything else: a CrossEncoder."""
    if not spec or not str(spec).strip():
        raise EmbedkitError("give a reranker: a cross-encoder's directory or name, cohere/NAME, jina/NAME or tei")
    api, _, name = spec.partition("/")
    if api in HTTP_APIS and not os.path.isdir(spec):
        return HTTPReranker(api, name or None, url, key_env, timeout)
    if url:
        raise EmbedkitError(f"--rerank-url is for cohere/NAME, jina/NAME or tei, not the cross-encoder {spec!r}")
    return CrossEncoderReranker(spec)


def rerank(reranker: Reranker, query: str, entries: list, n=None) -> list:
    """entries re-ordered by the reranker's scores (which become their scores), best first,
    ties keeping their order; the first n. Entries without stored text cannot be read and
    are an error."""
    missing = [entry.id for entry in entries if not entry.content]
    if missing:
        raise EmbedkitError(f"reranking reads the stored text, and item {missing[0]!r} has none: embed with --store")
    scores = reranker.scores(query, [entry.content for entry in entries])
    order = sorted(range(len(entries)), key=lambda i: -scores[i])
    return [replace(entries[i], score=scores[i]) for i in order][:n]
