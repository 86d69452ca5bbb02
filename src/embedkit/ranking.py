"""The pieces every search path shares: reading vector rows into a matrix (leaving out the ones
that cannot be used, and saying so), and ranking scores."""

import logging

import numpy as np

from . import storage, vectors

log = logging.getLogger("embedkit")
# Ids named in a warning about unusable vectors; the rest are counted.
NAMED = 10

_warned: set[tuple] = set()


def decode_rows(rows, dims: int, position: int = 1):
    """(kept, matrix, unusable) for rows whose row[0] is an id and row[position] a stored vector:
    the rows holding a usable dims-wide float32 vector, those vectors as a read-only matrix,
    and (id, problem) for every other row (NULL, not a BLOB, another length, NaN or infinite
    values, all zeros: what another program may have written), which no search may rank."""
    size = dims * 4
    kept, unusable = [], []
    for row in rows:
        value = row[position]
        if type(value) is bytes and len(value) == size:
            kept.append(row)
        else:
            unusable.append((row[0], vectors.problem(value, dims)))
    matrix = np.frombuffer(b"".join(row[position] for row in kept), dtype=vectors.DTYPE).reshape(len(kept), dims)
    usable = np.asarray(np.isfinite(matrix).all(axis=1) & matrix.any(axis=1))
    if not usable.all():
        flags = [bool(ok) for ok in usable]
        unusable += [(row[0], vectors.problem(row[position], dims)) for row, ok in zip(kept, flags) if not ok]
        kept = [row for row, ok in zip(kept, flags) if ok]
        matrix = matrix[usable]
    return kept, matrix, unusable


def stored_vectors(collection, ids):
    """(rows, matrix) of the items of ids whose stored vectors can be used, in no particular
    order; the others are left out, with the warning."""
    rows = list(storage.select_in(collection.db.conn, collection.table, "id, embedding", "id", ids))
    kept, matrix, unusable = decode_rows(rows, collection.dimensions)
    warn_unusable(collection, unusable)
    return kept, matrix


def warn_unusable(collection, unusable):
    """Say once per process, in one line naming them, that stored vectors were left out."""
    if not unusable:
        return
    key = (collection.db.key, collection.name, tuple(sorted(id for id, _ in unusable)))
    if key in _warned:
        return
    _warned.add(key)
    named = ", ".join(f"{id!r} ({problem})" for id, problem in sorted(unusable)[:NAMED])
    more = f" and {len(unusable) - NAMED} more" if len(unusable) > NAMED else ""
    log.warning(
        "embedkit: collection %r has %d stored vector%s that cannot be used, left out: %s%s; re-embed or "
        "delete %s (`embedkit check %s` lists them all)",
        collection.name, len(unusable), "s" * (len(unusable) != 1), named, more,
        "them" if len(unusable) != 1 else "it", collection.db.path,
    )


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
