"""embedkit_* SQL functions for any sqlite3, pysqlite3 or sqlite-utils connection.

Python's sqlite3 replaces an exception raised in a function with a fixed message
("user-defined function raised exception"), so the clear message is also kept per
thread: explain() turns the generic error back into it.

Registered with Limits (as Datasette does, for SQL from strangers), the functions refuse
long texts and large vectors, call only the models allowed, each at most once per distinct
text and a few times per statement, off the connection's thread with a time limit.
"""

import dataclasses
import functools
import threading
from collections.abc import Callable

import numpy as np

from . import llmdb, storage, vectors
from .errors import EmbedkitError
from .modelguard import ModelGuard, check_allowed
from .models import EmbeddingModel, get_model

_last = threading.local()
GENERIC_MESSAGES = ("user-defined function raised exception", "user-defined aggregate's")


def _reported(name, fn, on_error=None):
    def wrapper(*args):
        _last.message = None  # a message is only ever about the latest failure
        try:
            return fn(*args)
        except Exception as ex:
            _last.message = f"{name}: {ex}"
            if on_error is not None:
                on_error(_last.message)
            raise

    return wrapper


def explain(ex: Exception) -> str:
    """The message of an SQL error, with an embedkit function's own reason when it has one."""
    message = str(ex)
    reason, _last.message = getattr(_last, "message", None), None
    return reason if reason and message.startswith(GENERIC_MESSAGES) else message


@dataclasses.dataclass(frozen=True)
class Limits:
    """What SQL from strangers may ask of the functions.

    models: ids of models that may be used beyond the local models of the database's own
    collections (a model that calls a service is used only when listed here); model
    directories are never loaded. calls: model calls one statement may make (texts already
    embedded are free). timeout: seconds one call may take, on guard's threads.
    before_remote_call() runs before each call to a service (a budget may refuse it).
    """

    max_chars: int | None = 2000
    max_dimensions: int | None = 8192
    models: frozenset = frozenset()
    calls: int = 10
    timeout: float = 1.0
    guard: ModelGuard = dataclasses.field(default_factory=ModelGuard)
    before_remote_call: Callable[[], None] | None = None
    # Told each function error's reason: SQL shows strangers only sqlite3's fixed message.
    on_error: Callable[[str], None] | None = None


def _vector(blob, max_dimensions=None) -> np.ndarray:
    # Checked on the length alone, before anything is read or copied.
    if max_dimensions is not None and isinstance(blob, (bytes, bytearray, memoryview)) and len(blob) > 4 * max_dimensions:
        raise EmbedkitError(f"a vector of {len(blob) // 4:,} dimensions; at most {max_dimensions:,} are accepted here")
    return vectors.decode(blob)


def _cosine(a, b, max_dimensions=None) -> float:
    return vectors.cosine(_vector(a, max_dimensions), _vector(b, max_dimensions))


def _decode(blob, max_dimensions=None) -> str:
    _vector(blob, max_dimensions)
    return vectors.to_json(blob)


def _encode(text, max_dimensions=None) -> bytes:
    # A JSON number takes at least two characters with its comma; most take far more.
    if max_dimensions is not None and isinstance(text, str) and len(text) > 32 * max_dimensions:
        raise EmbedkitError(f"the JSON text is {len(text):,} characters; at most {32 * max_dimensions:,} are read here")
    blob = vectors.from_json(text)
    _vector(blob, max_dimensions)
    return blob


def _dims(blob, max_dimensions=None) -> int:
    return len(_vector(blob, max_dimensions))


# One parameter per SQL argument, as `sqlite-utils --functions` counts them.


def cosine(a, b) -> float:
    return _cosine(a, b)


def decode(blob) -> str:
    return _decode(blob)


def encode(text) -> bytes:
    return _encode(text)


def dims(blob) -> int:
    return _dims(blob)


def _checked_text(text, max_chars):
    if not isinstance(text, str) or not text.strip():
        raise EmbedkitError("needs non-empty text")
    if max_chars is not None and len(text) > max_chars:
        raise EmbedkitError(f"text is {len(text):,} characters; at most {max_chars:,} may be embedded here")
    return text


class _Statement:
    """Model calls of the statement a connection is running, for Limits.calls. The
    connection's trace callback marks where each statement starts."""

    def __init__(self, conn, limits: Limits):
        self.conn = conn
        self.limits = limits
        self.calls = 0

    def started(self, sql):
        if not sql.startswith("--"):  # "-- TRIGGER ...": a trigger's steps, part of the same statement
            self.calls = 0

    def model(self, name) -> EmbeddingModel:
        return get_model(name, local_paths=False)

    def vector(self, model: EmbeddingModel, text: str) -> np.ndarray:
        limits = self.limits
        check_allowed(model, limits.models, _local_models(self.conn))
        cached = limits.guard.cached(model, text)
        if cached is not None:
            return cached
        if self.calls >= limits.calls:
            raise EmbedkitError(
                f"this statement has already asked for {limits.calls} vectors, the most one may here; "
                "search for one text at a time"
            )
        self.calls += 1
        return limits.guard.vector(model, text, limits.timeout, limits.before_remote_call if model.remote else None)


def _local_models(conn) -> set:
    if not storage.table_exists(conn, storage.REGISTRY):
        return set()
    return {row[0] for row in conn.execute(f"select distinct model from {storage.REGISTRY}")}


class _Unlimited:
    """Model calls as the CLI and Python make them: any model, directly."""

    def model(self, name) -> EmbeddingModel:
        return get_model(name)

    def vector(self, model: EmbeddingModel, text: str) -> np.ndarray:
        return model.embed([text])[0]


_UNLIMITED = _Unlimited()


def embed(*args, max_chars=None, calls=_UNLIMITED) -> bytes:
    if len(args) not in (1, 2):
        raise EmbedkitError("takes (text) or (model, text)")
    model, text = (None, *args) if len(args) == 1 else args
    return vectors.encode(calls.vector(calls.model(model), _checked_text(text, max_chars)))


def query(conn, collection, text, max_chars=None, calls=_UNLIMITED) -> bytes:
    """The query vector of text for a collection: its model, after its query prefix."""
    text = _checked_text(text, max_chars)
    row = None
    if storage.table_exists(conn, storage.REGISTRY):
        row = conn.execute(
            f"select model, query_prefix, json_extract(settings, '$.dimensions') from {storage.REGISTRY} "
            "where name = ?",
            [collection],
        ).fetchone()
    if row is None and llmdb.is_llm_database(conn):  # an llm collection, read in place
        found = conn.execute(f"select model from main.{llmdb.COLLECTIONS} where name = ?", [collection]).fetchone()
        if found:
            model_id, kept = llmdb.model_for(found[0])
            row = (model_id, "", kept)
    if row is None:
        raise EmbedkitError(f"no collection named {collection!r}")
    model = get_model(row[0]).truncated(row[2]) if row[2] else get_model(row[0])
    return vectors.encode(calls.vector(model, row[1] + text))


class Centroid:
    """Aggregate: the element-wise mean of float32 BLOBs of equal dimensions."""

    max_dimensions: int | None = None

    def __init__(self):
        self.total = None
        self.count = 0

    def step(self, blob):
        vector = _vector(blob, self.max_dimensions).astype(np.float64)
        if not np.isfinite(vector).all():
            raise EmbedkitError("a vector holds NaN or infinity")
        if self.total is not None and len(vector) != len(self.total):
            raise EmbedkitError(f"dimension mismatch: {len(self.total)} vs {len(vector)}")
        self.total = vector if self.total is None else self.total + vector
        self.count += 1

    step = _reported("embedkit_centroid", step)

    def finalize(self):
        return None if self.total is None else vectors.encode(self.total / self.count)


FUNCTIONS = {
    # name: (function, number of arguments, deterministic)
    "embedkit_cosine": (cosine, 2, True),
    "embedkit_decode": (decode, 1, True),
    "embedkit_encode": (encode, 1, True),
    "embedkit_dims": (dims, 1, True),
}


def registered(conn) -> bool:
    try:
        conn.execute("select embedkit_dims(x'0000803f')")
        return True
    except Exception:
        return False


def register(conn, max_chars=None, limits: Limits | None = None):
    """Register every embedkit_* function (and the embedkit_centroid aggregate) on conn.

    max_chars bounds the text embedkit_embed and embedkit_query accept. limits bounds
    everything, for SQL from strangers (a public Datasette): see Limits. It takes over the
    connection's trace callback, to tell one statement from the next.
    """
    conn = getattr(conn, "conn", conn)  # a sqlite_utils.Database
    if limits is None:
        functions = {
            **FUNCTIONS,
            "embedkit_embed": (functools.partial(embed, max_chars=max_chars), -1, False),
            "embedkit_query": (functools.partial(query, conn, max_chars=max_chars), 2, False),
        }
        centroid = Centroid
    else:
        statement = _Statement(conn, limits)
        conn.set_trace_callback(statement.started)
        bounded = {name: functools.partial(fn, max_dimensions=limits.max_dimensions) for name, fn in
                   (("embedkit_cosine", _cosine), ("embedkit_decode", _decode), ("embedkit_encode", _encode),
                    ("embedkit_dims", _dims))}
        functions = {
            **{name: (bounded[name], narg, deterministic) for name, (_, narg, deterministic) in FUNCTIONS.items()},
            "embedkit_embed": (functools.partial(embed, max_chars=limits.max_chars, calls=statement), -1, False),
            "embedkit_query": (functools.partial(query, conn, max_chars=limits.max_chars, calls=statement), 2, False),
        }
        centroid = type("BoundedCentroid", (Centroid,), {"max_dimensions": limits.max_dimensions})  # type: ignore[assignment]
    on_error = limits.on_error if limits is not None else None
    for name, (fn, narg, deterministic) in functions.items():
        conn.create_function(name, narg, _reported(name, fn, on_error), deterministic=deterministic)
    conn.create_aggregate("embedkit_centroid", 1, centroid)
