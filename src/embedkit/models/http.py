"""Embedding services over HTTP: OpenAI-compatible `/v1/embeddings` and Ollama's `/api/embed`.

One embed() call is split into requests of batch_size texts, and up to concurrency of them
are in flight at once (worker threads sharing one httpx client, so connections are reused).
Keys, timeouts and retries follow the rules every HTTP service shares (embedkit.service:
throttling, server errors, timeouts and dropped connections are retried with backoff; 400,
404 and refused keys are not). Once a request has failed for good no new one starts; the vectors of the requests
that did succeed are handed back in a PartialEmbedding, so embed_multi stores them and a
re-run embeds only the rest.

httpx is imported only when a request is made: looking a model up, listing models, or
searching by id cost nothing.
"""

import copy
import queue
import threading

import numpy as np

from .. import service as http_service
from ..errors import EmbedkitError, first_line
from ..service import Failure as _Failure
from ..service import Malformed as _Malformed
from ..service import Stopped as _Stopped
from ..service import shown as _shown
from ..service import snippet as _snippet
from ..vectors import normalize_rows
from .base import EmbeddingModel, PartialEmbedding

APIS = ("openai", "ollama")

# What models.json may say of an HTTP model: the settings of every HTTP service (see
# embedkit.service.COMMON) and these. None means the API's default (API_DEFAULTS).
SETTINGS = {
    **http_service.COMMON,
    "api": "openai",  # "openai" (any OpenAI-compatible server) or "ollama"
    "dimensions": None,  # OpenAI: sent as `dimensions`; Ollama: vectors cut to this many and renormalised
    "batch_size": None,  # texts per request
    "concurrency": None,  # requests in flight at once
}

API_DEFAULTS = {
    "openai": {"batch_size": 100, "concurrency": 4, "timeout": 60.0},
    # Ollama usually runs one model on the local machine: parallel requests only queue there,
    # and each waiting one's timeout runs meanwhile.
    "ollama": {"batch_size": 32, "concurrency": 1, "timeout": 120.0},
}

BASE_URLS = http_service.BASE_URLS
OPENAI_KEY = http_service.OPENAI_KEY  # key_name, key_env of openai/NAME models


# Settings


def check_settings(model_id, settings: dict) -> dict:
    """settings for an HTTP model, checked, normalised, with every default filled in.

    Raises EmbedkitError naming the model and the setting at fault.
    """
    if isinstance(settings, dict) and set(settings) - set(SETTINGS):
        unknown = sorted(set(settings) - set(SETTINGS))[0]
        raise EmbedkitError(
            f"model {model_id}: unknown setting {unknown!r} for an HTTP model (known: {', '.join(SETTINGS)})"
        )
    checked = http_service.check(f"model {model_id}", settings, SETTINGS, API_DEFAULTS, ("/embeddings", "/api/embed"))
    for field in ("dimensions", "batch_size", "concurrency"):
        value = checked[field]
        if value is not None and not http_service.whole(value, 1):
            raise EmbedkitError(f"model {model_id}: {field} should be a positive whole number, not {value!r}")
    return checked


def from_settings(model_id, settings: dict) -> EmbeddingModel:
    """The model that settings (as in models.json) describe."""
    settings = check_settings(model_id, settings)
    cls = OpenAIModel if settings["api"] == "openai" else OllamaModel
    return cls(model_id, settings)


def from_prefix(name):
    """openai/NAME and ollama/NAME as models (base URLs from OPENAI_BASE_URL and OLLAMA_HOST);
    None for any other name."""
    if not isinstance(name, str):
        return None
    api, slash, model_name = name.partition("/")
    if not slash or api not in APIS:
        return None
    if not model_name.strip():
        raise EmbedkitError(f"model {name!r}: give the model's name after {api}/, e.g. {_EXAMPLES[api]}")
    settings = {"api": api, "model_name": model_name}
    if api == "openai":
        settings["key_name"], settings["key_env"] = OPENAI_KEY
    return from_settings(name, settings)


_EXAMPLES = {"openai": "openai/text-embedding-3-small", "ollama": "ollama/nomic-embed-text"}


# Models


class HTTPModel(EmbeddingModel):
    """A model served over HTTP; OpenAIModel and OllamaModel say how to ask and how to read answers."""

    api: str
    path: str  # of the endpoint, after the base URL
    service: str  # for source: "<service> at <base URL>"
    remote = True

    def __init__(self, model_id, settings=None, **kwargs):
        super().__init__()
        settings = check_settings(model_id, {**(settings or {}), **kwargs, "api": self.api})
        self.model_id = model_id
        self.settings = settings
        self.base_url = settings["base_url"]
        self.url = self.base_url + self.path
        self.model_name = settings["model_name"]
        self.dimensions = settings["dimensions"]
        self.batch_size = settings["batch_size"]
        self.concurrency = settings["concurrency"]
        self.timeout = settings["timeout"]
        self.retries = settings["retries"]
        self.backoff = settings["backoff"]
        self.texts_per_call = self.batch_size * self.concurrency
        self.source = f"{self.service} at {_shown(self.base_url)}"
        # Shared by the copies of this model (truncated ones): one client, one "reached".
        self._service = http_service.Service(f"model {model_id}", settings, self.concurrency)

    def __repr__(self):
        return f"<{type(self).__name__} {self.model_id} {self.model_name} at {_shown(self.base_url)}>"

    # What each API does differently

    def _payload(self, texts) -> dict:
        raise NotImplementedError

    def _vectors(self, body, count) -> list:
        """The count vectors in a response body (parsed JSON), in input order."""
        raise NotImplementedError

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        return vectors

    # Embedding

    def _embed(self, texts):
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        key = self._service.key()
        batches = [range(start, min(start + self.batch_size, len(texts))) for start in range(0, len(texts), self.batch_size)]
        stop = threading.Event()

        def work(batch):
            return self._request([texts[i] for i in batch], key, stop)

        vectors, failure = {}, None
        width = self.dimensions
        try:
            for batch, result, error in _run(work, batches, min(self.concurrency, len(batches)), stop):
                if error is None and width is not None and result.shape[1] != width:
                    error = _Failure(
                        f"{_shown(self.url)} returned vectors of {result.shape[1]} dimensions, not {width}", attempts=1
                    )
                if error is not None:
                    stop.set()  # start no new request; those in flight are kept when they succeed
                    if not isinstance(error, _Stopped) and (failure is None or failure.transient and not error.transient):
                        failure = error  # the one that re-running will not cure, if there is one
                    continue
                width = result.shape[1]
                vectors.update(zip(batch, result))
        except BaseException:
            stop.set()  # Ctrl-C: workers stop before their next request (they are daemon threads)
            raise
        if failure is None:
            return np.stack([vectors[i] for i in range(len(texts))])
        message = self._message(failure, key)
        if not vectors:
            raise EmbedkitError(message)
        raise PartialEmbedding(message, vectors)

    def _message(self, failure, key) -> str:
        return self._service.message(failure, key, "re-running embeds what is missing")

    def _request(self, texts, key, stop) -> np.ndarray:
        """The vectors for texts from one request, retried as needed; raises _Failure."""
        response = self._service.post(self.url, self._payload(texts), key, stop)
        body = http_service.json_body(response)
        url = _shown(self.url)
        try:
            rows = self._vectors(body, len(texts))
        except _Malformed as ex:
            raise _Failure(f"{url} sent a malformed answer: {ex}", 1) from None
        try:
            vectors = np.array(rows)
        except ValueError:
            vectors = None
        if vectors is None or vectors.ndim != 2 or vectors.dtype.kind not in "fiu" or vectors.shape[1] == 0:
            raise _Failure(f"{url} sent a malformed answer: the vectors are not lists of numbers of one length", 1)
        if not np.isfinite(vectors).all():
            raise _Failure(f"{url} sent a malformed answer: a vector holds NaN or infinity", 1)
        return self._finish(vectors.astype(np.float32))


class OpenAIModel(HTTPModel):
    """A model behind an OpenAI-compatible POST {base_url}/embeddings (OpenAI, Azure-style
    proxies, vLLM, llama.cpp's server, LM Studio, LiteLLM, ...)."""

    api = "openai"
    path = "/embeddings"
    service = "OpenAI-compatible API"

    def _payload(self, texts):
        payload = {"model": self.model_name, "input": texts}
        if self.settings["dimensions"] is not None:
            payload["dimensions"] = self.settings["dimensions"]
        return payload

    def _vectors(self, body, count):
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise _Malformed("no 'data' list")
        if len(data) != count:
            raise _Malformed(f"{len(data)} embeddings for {count} texts")
        if not all(isinstance(entry, dict) and "embedding" in entry for entry in data):
            raise _Malformed("an entry of 'data' has no 'embedding'")
        if any("index" in entry for entry in data):
            # The order of data is not promised: each entry says which input it is for.
            indexes = [entry.get("index") for entry in data]
            if sorted(i for i in indexes if http_service.whole(i, 0)) != list(range(count)):
                raise _Malformed(f"the indexes {_snippet(str(indexes))} are not 0 to {count - 1}, each once")
            data = sorted(data, key=lambda entry: entry["index"])
        return [entry["embedding"] for entry in data]

    def _truncate(self, dimensions) -> "OpenAIModel":
        """This model asking the service for `dimensions` dimensions (text-embedding-3 and other
        Matryoshka models shorten and renormalise the vector themselves)."""
        if dimensions == self.settings["dimensions"]:
            return self
        model = copy.copy(self)  # shares the HTTP client
        model.settings = {**self.settings, "dimensions": dimensions}
        model.dimensions = dimensions
        model.calls = 0
        model.__dict__.pop("_truncations", None)
        return model


class OllamaModel(HTTPModel):
    """A model served by Ollama's POST {base_url}/api/embed."""

    api = "ollama"
    path = "/api/embed"
    service = "Ollama"

    def _payload(self, texts):
        return {"model": self.model_name, "input": texts}

    def _vectors(self, body, count):
        embeddings = body.get("embeddings") if isinstance(body, dict) else None
        if not isinstance(embeddings, list):
            raise _Malformed("no 'embeddings' list")
        if len(embeddings) != count:
            raise _Malformed(f"{len(embeddings)} embeddings for {count} texts")
        return embeddings

    def _finish(self, vectors):
        # Older Ollama servers ignore a `dimensions` request field, so cut the vectors here.
        wanted = self.settings["dimensions"]
        if wanted is None:
            return vectors
        if vectors.shape[1] < wanted:
            raise _Failure(
                f"{_shown(self.url)} returned vectors of {vectors.shape[1]} dimensions; cannot keep {wanted}", 1
            )
        return normalize_rows(np.array(vectors[:, :wanted], dtype=np.float32))


# Running requests


_DONE = object()


def _run(work, batches, workers, stop):
    """(batch, result, None) or (batch, None, exception) for each batch as it finishes.

    Daemon threads, so that an interrupted process exits without waiting for requests in
    flight; a stopped worker takes no further batch.
    """
    jobs, results = queue.SimpleQueue(), queue.SimpleQueue()
    for batch in batches:
        jobs.put(batch)

    def worker():
        try:
            while not stop.is_set():
                try:
                    batch = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    results.put((batch, work(batch), None))
                except Exception as ex:  # noqa: BLE001 - handed to the caller
                    stop.set()  # here, so that no worker takes another batch meanwhile
                    results.put((batch, None, ex))
        finally:
            results.put(_DONE)

    for _ in range(workers):
        threading.Thread(target=worker, name="embedkit-http", daemon=True).start()
    running = workers
    while running:
        item = results.get()
        if item is _DONE:
            running -= 1
        else:
            batch, result, error = item
            if error is not None and not isinstance(error, (_Failure, _Stopped)):
                # A bug or something unforeseen: report it as this batch's failure, in one line.
                error = _Failure(f"{type(error).__name__}: {first_line(error)}", 1)
            yield batch, result, error
