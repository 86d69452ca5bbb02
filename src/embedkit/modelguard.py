"""Model calls made for strangers: SQL and searches on a public Datasette.

A ModelGuard runs each call on its own daemon worker threads and waits at most a time limit
for it, so a stalled service never holds the caller's thread (one of Datasette's few SQL
threads) for longer; a model that has left a call unanswered past the limit is not asked
again until that call ends, so it cannot tie up every worker. It keeps recent query vectors,
so a text asked for again (every row of a query, every visitor searching the same words)
costs no second call. allowed() says which models strangers may make work at all.
"""

import atexit
import collections
import concurrent.futures
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np

from .errors import EmbedkitError
from .models import EmbeddingModel

CACHE_SIZE = 1024  # query vectors kept: about 1.5 MB at 384 dimensions
WORKERS = 8  # threads waiting on models at once; waiting on a service costs no CPU
EXIT_WAIT = 60.0  # seconds a stopping process waits for local model calls still running

# Calls to local models still running. A process that exits while one of its daemon threads is
# inside torch or ONNX Runtime aborts ("terminate called without an active exception"), so
# exiting waits for them; calls to services are only waiting on a socket and are left behind.
_local_calls: set = set()


@atexit.register
def _wait_for_local_calls():
    concurrent.futures.wait(list(_local_calls), timeout=EXIT_WAIT)


class NotAllowed(EmbedkitError):
    """A model strangers may not make work here."""


def check_allowed(model: EmbeddingModel, allowed_models, local_models) -> None:
    """Raise unless strangers may make model work: one that calls a service only when its id
    is in allowed_models; a local one when it is in allowed_models or local_models (the models
    of the collections served). Model directories are refused before this, by get_model."""
    if model.model_id in allowed_models or (not model.remote and model.model_id in local_models):
        return
    if model.remote:
        raise NotAllowed(
            f"model {model.model_id} calls a service, which may charge for it; this server's owner "
            "has not allowed it here"
        )
    raise NotAllowed(f"model {model.model_id} is not used by a collection here, nor allowed by this server's owner")


class ModelGuard:
    def __init__(self, workers: int = WORKERS, cache_size: int = CACHE_SIZE):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = workers
        self._started = 0
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cache_size = cache_size
        self._unanswered: dict[str, Future] = {}  # model id -> a call left running past its limit

    def cached(self, model: EmbeddingModel, text: str) -> np.ndarray | None:
        key = (model.model_id, model.dimensions, text)
        with self._lock:
            vector = self._cache.get(key)
            if vector is not None:
                self._cache.move_to_end(key)
            return vector

    def vector(self, model: EmbeddingModel, text: str, timeout: float, before_call=None) -> np.ndarray:
        """model's vector for text, from the cache or from one call that may take at most
        timeout seconds; before_call() is called just before a call (a budget may raise)."""
        started = self.start(model, text, before_call)
        if not isinstance(started, Future):
            return started
        try:
            return self.finish(model, text, started.result(timeout))
        except FutureTimeout:
            raise self.late(model, text, started, timeout) from None

    def start(self, model, text, before_call=None):
        """The cached vector, or the Future of a new call (for a caller that waits its own way,
        then calls finish() or late())."""
        vector = self.cached(model, text)
        if vector is not None:
            return vector
        with self._lock:
            stalled = self._unanswered.get(model.model_id)
            if stalled is not None and stalled.done():
                del self._unanswered[model.model_id]
                stalled = None
        if stalled is not None:
            raise EmbedkitError(f"model {model.model_id} has not answered an earlier request yet; try again later")
        if before_call is not None:
            before_call()
        future = self._submit(model.embed, [text])
        if not model.remote:
            _local_calls.add(future)
            future.add_done_callback(_local_calls.discard)
        return future

    def finish(self, model, text, vectors) -> np.ndarray:
        with self._lock:
            self._cache[(model.model_id, model.dimensions, text)] = vectors[0]
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vectors[0]

    def late(self, model, text, future, timeout) -> EmbedkitError:
        """The error for a call not answered in time; its answer is kept when it comes."""
        with self._lock:
            self._unanswered[model.model_id] = future

        def keep(future):  # an answer that comes late is kept: asking again costs nothing
            if future.exception() is None:
                self.finish(model, text, future.result())

        future.add_done_callback(keep)
        return EmbedkitError(f"model {model.model_id} gave no answer within {timeout * 1000:,.0f} ms")

    def _submit(self, fn, *args) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args))
        with self._lock:
            if self._started < self._workers:
                self._started += 1
                # Daemon threads: a process that is stopping does not wait for a stalled service.
                threading.Thread(target=self._work, name="embedkit-model", daemon=True).start()
        return future

    def _work(self):
        while True:
            future, fn, args = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as ex:  # noqa: BLE001 - handed to the caller through the future
                future.set_exception(ex)
