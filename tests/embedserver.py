"""A fake embedding service on 127.0.0.1 for tests (stdlib and numpy only).

It answers OpenAI's POST /v1/embeddings and Ollama's POST /api/embed with vectors that are a
deterministic function of each text (its words hashed into buckets, rotated, normalised: `vector`),
so a test can tell which text a stored vector belongs to, and it can be told to fail:

    with EmbedServer() as server:
        server.fail(429, times=3, retry_after="0")    # the next 3 requests are throttled
        server.fail("reset", match="item-7")          # drop the connection of the request holding item-7
        ... point a model at server.openai_url (OpenAI) or server.url (Ollama) ...
        server.embedded    # Counter: text -> how many times it was answered with a vector
        server.max_in_flight

Faults, matched in the order given, each on the embedding requests it applies to:

- an HTTP status (int): that status with an error body in the API's shape (and Retry-After
  when retry_after is given);
- "reset": close the connection with a TCP reset, without answering; "close": close it cleanly;
- "stall": answer nothing for `seconds` (or until shutdown), then close;
- "malformed" (a body that is not JSON), "count" (one vector too few), "index" (OpenAI: an
  index repeated), "numbers" (a string inside a vector), "dims" (vectors one number longer):
  status 200 with a broken answer.

A fault hits `times` requests (math.inf: all of them) after letting `after` of those it
matches through; `match` limits it to requests with a text containing that string.
"""

import collections
import dataclasses
import json
import re
import socket
import struct
import threading
import time
import zlib

import numpy as np

from httpserver import Headers, Served, TrackedHandler

DIMENSIONS = 256  # of the vectors the fake models give (few hash collisions among test words)


# A fixed rotation makes the vectors dense, as real ones are (so any prefix of one, as
# `dimensions` keeps, still says something), and leaves every cosine similarity as it was.
_ROTATION = np.linalg.qr(np.random.default_rng(7).standard_normal((DIMENSIONS, DIMENSIONS)))[0]


def vector(text, dimensions=None) -> list:
    """The fake models' vector for text: its words counted in DIMENSIONS hashed buckets,
    rotated, cut to `dimensions` (as OpenAI's `dimensions` does) and scaled to length 1."""
    counts = np.zeros(DIMENSIONS)
    for word in re.findall(r"\w+", text.lower()):
        counts[zlib.crc32(word.encode()) % DIMENSIONS] += 1
    if not counts.any():
        counts[0] = 1.0
    kept = (_ROTATION @ counts)[:dimensions]
    return (kept / np.linalg.norm(kept)).tolist()


@dataclasses.dataclass
class Fault:
    kind: object  # an HTTP status, or one of the names above
    times: float = 1
    after: int = 0
    match: str = None
    retry_after: str = None
    message: str = None
    seconds: float = 30.0
    code: str = None  # the OpenAI error code (429s default to rate_limit_exceeded)

    def applies(self, texts) -> bool:
        return self.match is None or any(self.match in text for text in texts)


@dataclasses.dataclass
class Call:
    """One embedding request as the server saw it, and what it did."""

    api: str  # "openai" or "ollama"
    headers: Headers
    body: object  # parsed JSON (None when it was not JSON)
    texts: list
    started: float
    outcome: str = None  # "ok", a status such as "429", or a fault's name
    finished: float = None


class EmbedServer(Served):
    def __init__(self, keys=("sk-test",), latency=0.0, reverse=True):
        self.url = None
        self.keys = set(keys) if keys is not None else None  # accepted OpenAI keys; None: no check
        self.ollama_keys = None  # Ollama normally has no keys
        self.latency = latency  # seconds each request takes (while it counts as in flight)
        self.reverse = reverse  # OpenAI's data list in reverse order, each with its index
        self.models = None  # model names served; None: any
        self.faults = []
        self.calls = []
        self.embedded = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self._httpd = None
        self._thread = None

    # -- programming the server ------------------------------------------------------------

    def fail(self, kind, times=1, after=0, match=None, retry_after=None, message=None, seconds=30.0, code=None):
        fault = Fault(kind, times, after, match, retry_after, message, seconds, code)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self):
        """No more faults."""
        with self.lock:
            self.faults.clear()

    def reset_counts(self):
        with self.lock:
            self.calls.clear()
            self.embedded.clear()
            self.max_in_flight = 0

    @property
    def openai_url(self):
        return self.url + "/v1"

    def texts(self, outcome=None) -> list:
        """Every text of every request (with that outcome, e.g. "ok"), in arrival order."""
        return [text for call in self.calls if outcome in (None, call.outcome) for text in call.texts]

    def outcomes(self) -> list:
        return [call.outcome for call in self.calls]

    # -- deciding -----------------------------------------------------------------------------

    def _fault_for(self, texts):
        with self.lock:
            for fault in self.faults:
                if fault.times <= 0 or not fault.applies(texts):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.times -= 1
                return fault
        return None


class _Handler(TrackedHandler):

    def do_POST(self):
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.partition("?")[0]
        api = {"/v1/embeddings": "openai", "/api/embed": "ollama"}.get(path)
        if api is None:
            self.call = Call(None, None, None, [], time.monotonic())
            return self._error(None, 404, f"not found: {self.path}")
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        texts = request.get("input") if isinstance(request, dict) else None
        texts = [texts] if isinstance(texts, str) else texts if isinstance(texts, list) else []
        call = Call(api, Headers((k.lower(), v) for k, v in self.headers.items()), request, texts, time.monotonic())
        with owner.lock:
            owner.calls.append(call)
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        try:
            if owner.latency:
                self.server.closing.wait(owner.latency)
            self.call = call
            self._answer(owner, api, request, texts)
        finally:
            call.finished = time.monotonic()
            with owner.lock:
                owner.in_flight -= 1

    do_GET = do_POST

    def _answer(self, owner, api, request, texts):
        """Send the answer, recording what was done first (the client may be done as soon as
        it has read it)."""
        if self.command != "POST" or not isinstance(request, dict) or not texts:
            return self._error(api, 400, "a POST with a JSON body and an input is expected")
        keys = owner.keys if api == "openai" else owner.ollama_keys
        given = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if keys is not None and given not in keys:
            # Services echo (part of) the key they refuse; the client must never repeat it.
            return self._error(api, 401, f"Incorrect API key provided: {given}", code="invalid_api_key")
        model = request.get("model")
        if owner.models is not None and model not in owner.models:
            if api == "ollama":
                return self._error(api, 404, f'model "{model}" not found, try pulling it first')
            return self._error(api, 404, f"The model `{model}` does not exist", code="model_not_found")
        dimensions = request.get("dimensions") if api == "openai" else None
        if dimensions is not None and not (isinstance(dimensions, int) and 1 <= dimensions <= DIMENSIONS):
            return self._error(api, 400, f"dimensions should be from 1 to {DIMENSIONS}")

        fault = owner._fault_for(texts)
        kind = fault.kind if fault else None
        if isinstance(kind, int):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            code = fault.code or ("rate_limit_exceeded" if kind == 429 else None)
            return self._error(api, kind, fault.message or f"fault injected: {kind}", code=code, headers=headers)
        if kind in ("reset", "close", "stall"):
            self.call.outcome = kind
            if kind == "stall":
                self.server.closing.wait(fault.seconds)
            if kind == "reset":  # RST: the client reads "connection reset by peer"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.close_connection = True
            return None
        if kind == "malformed":
            self.call.outcome = kind
            return self._send_json_bytes(200, b'{"object": "list", "data": [{"embedding": [0.1, ')

        vectors = [vector(text, dimensions) for text in texts]
        if kind == "count":
            vectors = vectors[:-1]
        elif kind == "numbers":
            vectors[0] = ["0.5", *vectors[0][1:]]
        elif kind == "dims":
            vectors = [v + [0.0] for v in vectors]
        if api == "ollama":
            answer = {"model": model, "embeddings": vectors, "total_duration": 1000, "prompt_eval_count": len(texts)}
        else:
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
            if kind == "index" and len(data) > 1:
                data[1]["index"] = 0
            if owner.reverse:
                data.reverse()
            tokens = sum(len(text.split()) for text in texts)
            answer = {"object": "list", "data": data, "model": model,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        self.call.outcome = kind or "ok"
        if kind is None:
            with owner.lock:
                owner.embedded.update(texts)
        return self._json(200, answer)

    def _error(self, api, status, message, code=None, headers=None):
        self.call.outcome = str(status)
        if api == "ollama":
            body = {"error": message}
        else:
            body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        self._json(status, body, headers)




EmbedServer.handler_class = _Handler
