"""The pieces every search path shares: reading vector rows into a matrix, and ranking scores."""

import numpy as np

from . import vectors
from .errors import EmbedkitError


def decode_rows(rows, dims: int, collection: str):
    """(ids, read-only float32 matrix) of (id, embedding) rows, checked to be dims wide."""
    joined = b"".join(row[1] if isinstance(row[1], bytes) else b"" for row in rows)
    if len(joined) != len(rows) * dims * 4:
        raise EmbedkitError(
            f"collection {collection!r} holds vectors that are not {dims}-dimensional "
            "float32 (written by another program?)"
        )
    return [row[0] for row in rows], np.frombuffer(joined, dtype=vectors.DTYPE).reshape(len(rows), dims)


def best(scores: np.ndarray, ids, n, exclude_position=None):
    """[(id, score)] of the n highest scores, best first, ties broken by id so results never
    flicker; the row at exclude_position (the item searched by) is left out."""
    if exclude_position is not None:
        scores[exclude_position] = -np.inf
    available = len(ids) - (exclude_position is not None)
    k = min(n, available)
    if k <= 0:
        return []
    if k < len(scores):
        kth = scores[np.argpartition(scores, len(scores) - k)[len(scores) - k]]
        candidates = np.flatnonzero(scores >= kth)  # every row tied with the k-th
    else:
        candidates = np.flatnonzero(scores > -np.inf)
    ranked = sorted((-float(scores[i]), ids[i]) for i in candidates)[:k]
    return [(id, -negative) for negative, id in ranked]
