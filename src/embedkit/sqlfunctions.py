"""embedkit_* SQL functions for any sqlite3, pysqlite3 or sqlite-utils connection.

Python's sqlite3 replaces an exception raised in a function with a fixed message
("user-defined function raised exception"), so the clear message is also kept per
thread: explain() turns the generic error back into it.
"""

import functools
import threading

import numpy as np

from . import llmdb, storage, vectors
from .errors import EmbedkitError
from .models import get_model

_last = threading.local()
GENERIC_MESSAGES = ("user-defined function raised exception", "user-defined aggregate's")


def _reported(name, fn):
    def wrapper(*args):
        _last.message = None  # a message is only ever about the latest failure
        try:
            return fn(*args)
        except Exception as ex:
            _last.message = f"{name}: {ex}"
            raise

    return wrapper


def explain(ex: Exception) -> str:
    """The message of an SQL error, with an embedkit function's own reason when it has one."""
    message = str(ex)
    reason, _last.message = getattr(_last, "message", None), None
    return reason if reason and message.startswith(GENERIC_MESSAGES) else message


def cosine(a, b) -> float:
    return vectors.cosine(vectors.decode(a), vectors.decode(b))


def decode(blob) -> str:
    return vectors.to_json(blob)


def encode(text) -> bytes:
    return vectors.from_json(text)


def dims(blob) -> int:
    return len(vectors.decode(blob))


def _checked_text(text, max_chars):
    if not isinstance(text, str) or not text.strip():
        raise EmbedkitError("needs non-empty text")
    if max_chars is not None and len(text) > max_chars:
        raise EmbedkitError(f"text is {len(text):,} characters; at most {max_chars:,} may be embedded here")
    return text


def embed(*args, max_chars=None) -> bytes:
    if len(args) not in (1, 2):
        raise EmbedkitError("takes (text) or (model, text)")
    model, text = (None, *args) if len(args) == 1 else args
    return vectors.encode(get_model(model).embed([_checked_text(text, max_chars)])[0])


def query(conn, collection, text, max_chars=None) -> bytes:
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
    return vectors.encode(model.embed([row[1] + text])[0])


class Centroid:
    """Aggregate: the element-wise mean of float32 BLOBs of equal dimensions."""

    def __init__(self):
        self.total = None
        self.count = 0

    def step(self, blob):
        vector = vectors.decode(blob).astype(np.float64)
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


def register(conn, max_chars=None):
    """Register every embedkit_* function (and the embedkit_centroid aggregate) on conn.

    max_chars bounds the text embedkit_embed and embedkit_query accept, so that SQL from
    strangers (a public Datasette) cannot keep the model busy with one huge text.
    """
    conn = getattr(conn, "conn", conn)  # a sqlite_utils.Database
    functions = {
        **FUNCTIONS,
        "embedkit_embed": (functools.partial(embed, max_chars=max_chars), -1, False),
        "embedkit_query": (functools.partial(query, conn, max_chars=max_chars), 2, False),
    }
    for name, (fn, narg, deterministic) in functions.items():
        conn.create_function(name, narg, _reported(name, fn), deterministic=deterministic)
    conn.create_aggregate("embedkit_centroid", 1, Centroid)
