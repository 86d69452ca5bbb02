"""Embedding services over HTTP: OpenAI-compatible `/v1/embeddings` and Ollama's `/api/embed`.

One embed() call is split into requests of batch_size texts, and up to concurrency of them
are in flight at once (worker threads sharing one httpx client, so connections are reused).
A request is retried, with exponential backoff and jitter, on 408/429/500/502/503/504,
timeouts and connections dropped without an answer; Retry-After is honoured (capped at
MAX_WAIT). Other errors (400 input too long, 404 unknown model, 401/403 key refused) are not
retried. Once a request has failed for good no new one starts; the vectors of the requests
that did succeed are handed back in a PartialEmbedding, so embed_multi stores them and a
re-run embeds only the rest.

httpx is imported only when a request is made: looking a model up, listing models, or
searching by id cost nothing.
"""

import copy
import email.utils
import math
import os
import queue
import random
import re
import threading
import time

import numpy as np

from .. import config
from ..errors import EmbedkitError, first_line
from ..vectors import normalize_rows
from ..version import USER_AGENT
from .base import EmbeddingModel, PartialEmbedding

APIS = ("openai", "ollama")

# What models.json may say of an HTTP model. None means the API's default (API_DEFAULTS,
# BASE_URLS); keys are optional: without key_name and key_env no Authorization header is sent
# (local servers), except to api.openai.com, which gets key "openai" / OPENAI_API_KEY.
SETTINGS = {
    "api": "openai",  # "openai" (any OpenAI-compatible server) or "ollama"
    "base_url": None,  # e.g. https://api.openai.com/v1 or http://127.0.0.1:11434
    "model_name": None,  # the model's name on the server, e.g. text-embedding-3-small
    "key_name": None,  # the key's name in keys.json ('embedkit keys set NAME')
    "key_env": None,  # an environment variable holding the key; it wins over keys.json
    "dimensions": None,  # OpenAI: sent as `dimensions`; Ollama: vectors cut to this many and renormalised
    "batch_size": None,  # texts per request
    "concurrency": None,  # requests in flight at once
    "timeout": None,  # seconds to wait for each answer
    "retries": 6,  # attempts after the first, on throttling, server errors, timeouts, resets
    "backoff": 1.0,  # seconds before the first retry; doubled for each later one (with jitter)
}

API_DEFAULTS = {
    "openai": {"batch_size": 100, "concurrency": 4, "timeout": 60.0},
    # Ollama usually runs one model on the local machine: parallel requests only queue there,
    # and each waiting one's timeout runs meanwhile.
    "ollama": {"batch_size": 32, "concurrency": 1, "timeout": 120.0},
}

# (environment variable, default) for each API's base URL.
BASE_URLS = {
    "openai": ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "ollama": ("OLLAMA_HOST", "http://127.0.0.1:11434"),
}

OPENAI_KEY = ("openai", "OPENAI_API_KEY")  # key_name, key_env of openai/NAME models

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
# The longest wait before one retry, whatever the backoff or a Retry-After header says.
MAX_WAIT = 60.0


# Settings


def check_settings(model_id, settings: dict) -> dict:
    """settings for an HTTP model, checked, normalised, with every default filled in.

    Raises EmbedkitError naming the model and the setting at fault.
    """
    if not isinstance(settings, dict):
        raise EmbedkitError(f"model {model_id}: settings should be a JSON object")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise EmbedkitError(
            f"model {model_id}: unknown setting {unknown[0]!r} for an HTTP model "
            f"(known: {', '.join(SETTINGS)})"
        )
    checked: dict = {name: default if settings.get(name) is None else settings[name] for name, default in SETTINGS.items()}
    api = checked["api"]
    if api not in APIS:
        raise EmbedkitError(f"model {model_id}: api should be 'openai' or 'ollama', not {api!r}")
    for name, default in API_DEFAULTS[api].items():
        if checked[name] is None:
            checked[name] = default

    label = "base_url"
    if checked["base_url"] is None:
        variable, url = BASE_URLS[api]
        checked["base_url"] = os.environ.get(variable) or url
        label = variable if os.environ.get(variable) else label
    checked["base_url"] = _base_url(model_id, api, checked["base_url"], label)

    name = checked["model_name"]
    if not isinstance(name, str) or not name.strip():
        raise EmbedkitError(f"model {model_id}: model_name should be the model's name on the server, not {name!r}")
    checked["model_name"] = name.strip()

    for field in ("key_name", "key_env"):
        value = checked[field]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise EmbedkitError(f"model {model_id}: {field} should be a name, not {value!r}")
    if checked["key_env"] is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", checked["key_env"]):
        raise EmbedkitError(
            f"model {model_id}: key_env should be the name of an environment variable, not {checked['key_env']!r}"
        )
    if checked["key_name"] is None and checked["key_env"] is None and _is_openai(checked["base_url"]):
        checked["key_name"], checked["key_env"] = OPENAI_KEY

    for field in ("dimensions", "batch_size", "concurrency"):
        value = checked[field]
        if value is not None and not _whole(value, 1):
            raise EmbedkitError(f"model {model_id}: {field} should be a positive whole number, not {value!r}")
    if not _whole(checked["retries"], 0):
        raise EmbedkitError(f"model {model_id}: retries should be a whole number (0 or more), not {checked['retries']!r}")
    if not _number(checked["timeout"]) or checked["timeout"] <= 0:
        raise EmbedkitError(f"model {model_id}: timeout should be a number of seconds above 0, not {checked['timeout']!r}")
    if not _number(checked["backoff"]) or checked["backoff"] < 0:
        raise EmbedkitError(f"model {model_id}: backoff should be a number of seconds (0 or more), not {checked['backoff']!r}")
    checked["timeout"], checked["backoff"] = float(checked["timeout"]), float(checked["backoff"])
    return checked


def _whole(value, least) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _base_url(model_id, api, url, label="base_url") -> str:
    """url normalised; label names where it came from (the setting or an environment variable)."""
    if not isinstance(url, str) or not url.strip():
        raise EmbedkitError(f"model {model_id}: {label} should be a URL, not {url!r}")
    url = url.strip().rstrip("/")
    if api == "ollama" and "://" not in url:
        # OLLAMA_HOST may be host, host:port or a URL, as the ollama command accepts.
        url = "http://" + url
        if not re.search(r":\d+$", url.split("://", 1)[1]):
            url += ":11434"
    if not re.fullmatch(r"https?://[^/\s?#]+(/\S*)?", url, re.IGNORECASE):
        raise EmbedkitError(f"model {model_id}: {label} should start with http:// or https://, not {url!r}")
    # The endpoint itself is a common thing to paste.
    for endpoint in ("/embeddings", "/api/embed"):
        if url.endswith(endpoint):
            url = url[: -len(endpoint)]
    return url


def _is_openai(url) -> bool:
    return re.match(r"https://api\.openai\.com(:443)?(/|$)", url, re.IGNORECASE) is not None


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


class _Shared:
    """What copies of a model (truncated ones) share: the HTTP client and whether the server
    was ever reached (a refused connection is retried only after that)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.client = None
        self.reached = False


class HTTPModel(EmbeddingModel):
    """A model served over HTTP; OpenAIModel and OllamaModel say how to ask and how to read answers."""

    api: str
    path: str  # of the endpoint, after the base URL
    service: str  # for source: "<service> at <base URL>"

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
        self._shared = _Shared()

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
        key = self._key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = self._client()
        batches = [range(start, min(start + self.batch_size, len(texts))) for start in range(0, len(texts), self.batch_size)]
        stop = threading.Event()

        def work(batch):
            return self._request(client, [texts[i] for i in batch], headers, key, stop)

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
        message = f"model {self.model_id}: {failure}"
        if isinstance(failure, _Failure) and failure.transient:
            message += "; re-running embeds what is missing"
        return _redact(message, key)

    def _key(self):
        name, variable = self.settings["key_name"], self.settings["key_env"]
        if name is None and variable is None:
            return None
        key = config.get_key(name, variable) if name is not None else os.environ.get(variable)
        key = key.strip() if key else None
        if not key:
            how = [f"set {variable}"] if variable else []
            how += [f"run 'embedkit keys set {name}'"] if name else []
            raise EmbedkitError(f"no API key for model {self.model_id}: {' or '.join(how)}")
        return key

    def _key_source(self) -> str:
        """Which key was sent, for a message saying it was refused."""
        variable, name = self.settings["key_env"], self.settings["key_name"]
        if variable and os.environ.get(variable):
            return f"the API key in {variable}"
        return f"the API key {name!r} in keys.json ('embedkit keys set {name}' replaces it)"

    def _client(self):
        shared = self._shared
        with shared.lock:
            if shared.client is None:
                import httpx

                shared.client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                    limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
                    headers={"User-Agent": USER_AGENT},
                )
            return shared.client

    def _request(self, client, texts, headers, key, stop) -> np.ndarray:
        """The vectors for texts from one request, retried as needed; raises _Failure."""
        import httpx

        url, attempts = _shown(self.url), self.retries + 1
        payload = self._payload(texts)
        for attempt in range(1, attempts + 1):
            if stop.is_set():
                raise _Stopped()
            wait = None
            try:
                response = client.post(self.url, json=payload, headers=headers)
            except httpx.TimeoutException:
                reason = f"no answer within {self.timeout:g} s"
            except httpx.ConnectError as ex:
                reason = f"cannot connect ({first_line(ex)})"
                if not self._shared.reached:  # a wrong URL or a server that is not running
                    raise _Failure(f"cannot connect to {url}: {first_line(ex)}", attempts=attempt) from None
            except (httpx.RemoteProtocolError, httpx.NetworkError):
                reason = "the connection was closed without an answer"
            except (httpx.HTTPError, httpx.InvalidURL) as ex:
                raise _Failure(f"POST {url} failed: {first_line(ex)}", attempts=attempt) from None
            else:
                self._shared.reached = True
                status = response.status_code
                if 200 <= status < 300:
                    return self._read(response, len(texts))
                phrase = f"{status} {response.reason_phrase}".rstrip()
                detail, code = _error_detail(response)
                if status in (401, 403):
                    if key is None:
                        raise _Failure(
                            f"{_shown(self.base_url)} wants an API key ({phrase}); give the model "
                            "key_name or key_env", attempts=attempt,
                        )
                    raise _Failure(
                        f"{self._key_source()} was refused by {_shown(self.base_url)} ({phrase})", attempts=attempt
                    )
                if status not in RETRY_STATUSES or code == "insufficient_quota":
                    if 300 <= status < 400 and response.headers.get("Location"):
                        detail = f"redirected to {response.headers['Location']}; use that as the base URL"
                    raise _Failure(
                        f"{url} refused the request ({phrase}{': ' + detail if detail else ''})", attempts=attempt
                    )
                reason = phrase + (f": {detail}" if detail else "")
                wait = _retry_after(response.headers)
            if attempt == attempts:
                break
            if wait is None:
                delay = self.backoff * 2 ** (attempt - 1)
                wait = delay / 2 + random.uniform(0, delay / 2)
            if stop.wait(min(wait, MAX_WAIT)):
                raise _Stopped()
        raise _Failure(
            f"POST {url} failed after {attempts} attempt{'s' if attempts > 1 else ''} ({reason})",
            attempts=attempts, transient=True,
        )

    def _read(self, response, count) -> np.ndarray:
        url = _shown(self.url)
        try:
            body = response.json()
        except ValueError:
            raise _Failure(f"{url} answered with something that is not JSON: {_snippet(response.text)!r}", 1) from None
        try:
            rows = self._vectors(body, count)
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
            if sorted(i for i in indexes if _whole(i, 0)) != list(range(count)):
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


class _Failure(Exception):
    """One request that failed for good; transient when more attempts might have succeeded."""

    def __init__(self, message, attempts, transient=False):
        super().__init__(message)
        self.attempts, self.transient = attempts, transient


class _Stopped(Exception):
    """A request given up before it was sent, because another one failed."""


class _Malformed(Exception):
    pass


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


# Reading responses


def _retry_after(headers):
    """Seconds the server asks us to wait (retry-after-ms or Retry-After), or None."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _error_detail(response):
    """The error message and code in an error response's body ('' and None when there is none)."""
    try:
        body = response.json()
    except ValueError:
        return _snippet(response.text), None
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail") or error.get("error")
        code = error.get("code") or error.get("type")
        return _snippet(str(message)) if message else "", code if isinstance(code, str) else None
    return _snippet(str(error)), None


def _snippet(text, limit=200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(url) -> str:
    """url without any user:password@ in it."""
    return re.sub(r"^(\w+://)[^/@]*@", r"\1", url)


def _redact(message, key) -> str:
    return message.replace(key, "***") if key else message
