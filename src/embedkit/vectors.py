"""Vectors as little-endian float32 BLOBs: the byte format `llm` and sqlite-vec use."""


import numpy as np

from . import jsondata
from .errors import EmbedkitError

DTYPE = np.dtype("<f4")


def encode(values) -> bytes:
    """A sequence of numbers (or a 1-d array) as a float32 BLOB."""
    array = np.asarray(values, dtype=DTYPE)
    if array.ndim != 1:
        raise EmbedkitError(f"a vector must be one-dimensional, got shape {array.shape}")
    return array.tobytes()


def decode(blob) -> np.ndarray:
    """A float32 BLOB as a read-only 1-d array (no copy)."""
    if blob is None:
        raise EmbedkitError("vector is NULL")
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise EmbedkitError(f"vector must be a BLOB, got {type(blob).__name__}")
    if len(blob) == 0 or len(blob) % 4:
        raise EmbedkitError(f"a float32 vector BLOB needs a positive multiple of 4 bytes, got {len(blob)}")
    return np.frombuffer(blob, dtype=DTYPE)


def from_json(text) -> bytes:
    """A JSON array of numbers as a BLOB."""
    try:
        values = jsondata.loads(text)
    except (TypeError, ValueError) as ex:
        raise EmbedkitError(f"not a JSON array of numbers: {ex}") from None
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
        raise EmbedkitError("not a JSON array of numbers")
    with np.errstate(over="ignore"):
        blob = encode(values)
    if not np.isfinite(np.frombuffer(blob, dtype=DTYPE)).all():  # NaN, Infinity, or past float32's range
        raise EmbedkitError("not a JSON array of finite float32 numbers (NaN, infinity or beyond ±3.4e38)")
    return blob


def to_json(blob) -> str:
    # Each float32 printed as the double it equals, so decoding the JSON gives the same bytes.
    return jsondata.dumps([float(v) for v in decode(blob).tolist()], "the vector")


def check(vector: np.ndarray, dimensions=None, what="vector") -> np.ndarray:
    """Reject vectors that cannot take part in cosine similarity."""
    if dimensions is not None and vector.shape[-1] != dimensions:
        raise EmbedkitError(f"{what} has {vector.shape[-1]} dimensions, expected {dimensions}")
    if not np.all(np.isfinite(vector)):
        raise EmbedkitError(f"{what} contains NaN or infinite values")
    if not np.any(vector):
        raise EmbedkitError(f"{what} is all zeros; cosine similarity is undefined for it")
    return vector


def check_all(found: dict, dimensions, describe) -> None:
    """check() each vector of found (position -> vector) at once; describe(position) names the
    one at fault."""
    if not found:
        return
    try:
        rows = np.stack(list(found.values()))
    except ValueError:  # widths differ: the first that is not dimensions (or the first's) says so
        rows = None
    if rows is not None and rows.ndim == 2 and dimensions in (None, rows.shape[1]) and \
            np.isfinite(rows).all() and rows.any(axis=1).all():
        return
    for position, vector in found.items():
        check(np.asarray(vector), dimensions or len(next(iter(found.values()))), describe(position))


def problem(value, dimensions: int) -> str | None:
    """Why a stored value cannot take part in a search of dimensions-wide vectors (written by
    another program, or damaged), or None if it can."""
    if value is None:
        return "NULL"
    if not isinstance(value, (bytes, bytearray, memoryview)):
        return f"{type(value).__name__}, not a BLOB"
    if len(value) != dimensions * 4:
        return f"{len(value)} bytes, not {dimensions * 4}"
    vector = np.frombuffer(value, dtype=DTYPE)
    if not np.all(np.isfinite(vector)):
        return "NaN or infinite values"
    if not np.any(vector):
        return "all zeros"
    return None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise EmbedkitError(f"dimension mismatch: {a.shape[0]} vs {b.shape[0]}")
    # float64 throughout: float32 norms of large values overflow to infinity.
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise EmbedkitError("cosine similarity is undefined for a vector holding NaN or infinity")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise EmbedkitError("cosine similarity is undefined for a zero vector")
    return float(np.dot(a, b) / (float(na) * float(nb)))


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale the rows of a writable matrix to unit length, in place."""
    # einsum, unlike linalg.norm, never allocates a temporary the size of the matrix
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    norms[norms == 0] = 1
    matrix /= norms[:, None]
    return matrix


def matrix(values, ids, dimensions=None) -> np.ndarray:
    """Vectors as one float32 matrix with a row per id: values is a 2-d array, or a sequence
    of 1-d arrays, lists of numbers or float32 BLOBs. Every row must have the same width
    (dimensions, if given) and pass check(); errors name the id of the first that does not."""
    if isinstance(values, np.ndarray) and values.ndim != 2:
        raise EmbedkitError(f"vectors given as an array must be 2-dimensional (a row per id), got shape {values.shape}")
    if len(values) != len(ids):
        raise EmbedkitError(f"{len(values)} vectors for {len(ids)} ids")
    if not len(ids):
        return np.empty((0, dimensions or 0), dtype=DTYPE)
    try:
        result = _as_float32(values if isinstance(values, np.ndarray) else [_row(v) for v in values])
    except (TypeError, ValueError, EmbedkitError):
        result = None
    if result is None or result.ndim != 2:
        # Say which row is at fault: a width that differs, or something that is not a vector.
        width = dimensions
        for id, value in zip(ids, values):
            row = _one(value, id)
            width = width or len(row)
            if len(row) != width:
                raise EmbedkitError(f"the vector of {id!r} has {len(row)} dimensions, expected {width}")
        raise EmbedkitError("the vectors cannot be read as numbers")
    if dimensions is not None and result.shape[1] != dimensions:
        raise EmbedkitError(f"the vector of {ids[0]!r} has {result.shape[1]} dimensions, expected {dimensions}")
    finite = np.isfinite(result).all(axis=1)
    nonzero = result.any(axis=1)
    for position in np.flatnonzero(~(finite & nonzero))[:1]:
        check(result[position], None, f"the vector of {ids[position]!r}")
    return result


def _row(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode(value)
    return value


def _as_float32(values) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"not numbers: {array.dtype}")
    return np.ascontiguousarray(array, dtype=DTYPE)


def _one(value, id) -> np.ndarray:
    try:
        row = _as_float32(_row(value))
    except EmbedkitError as ex:
        raise EmbedkitError(f"the vector of {id!r}: {ex}") from None
    except (TypeError, ValueError):
        row = None
    if row is None or row.ndim != 1 or not len(row):
        raise EmbedkitError(f"the vector of {id!r} is not a list of numbers, a 1-d array or a float32 BLOB")
    return row
