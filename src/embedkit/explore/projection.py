"""2-D projections of a collection for its map, and the rule that samples large collections."""

import hashlib

import numpy as np

# A map shows at most this many items: beyond it a browser slows down and points hide each other.
MAX_POINTS = 10_000


def sample(ids, max_points=MAX_POINTS) -> np.ndarray:
    """Positions of the items a map shows: all of them up to max_points, else the max_points
    whose ids have the smallest SHA-256. The same items every run, and an item shown stays
    shown as the collection grows unless one with a smaller hash pushes it out."""
    if len(ids) <= max_points:
        return np.arange(len(ids))
    keys = [hashlib.sha256(id.encode("utf-8")).digest() for id in ids]
    return np.sort(np.array(sorted(range(len(ids)), key=keys.__getitem__)[:max_points], dtype=np.int64))


def pca(matrix, rows=None) -> np.ndarray:
    """Coordinates on the two principal axes of all of matrix's rows, for rows (all of them by
    default). Each axis points the way most of its weight does, so the picture does not
    mirror from one run to the next."""
    mean = matrix.mean(axis=0, dtype=np.float64)
    # The covariance from one float32 matrix product: no centred (or float64) copy of the matrix.
    covariance = (matrix.T @ matrix).astype(np.float64) / len(matrix) - np.outer(mean, mean)
    _, eigenvectors = np.linalg.eigh(covariance)
    axes = eigenvectors[:, ::-1][:, :2]
    axes *= np.where(np.abs(axes.max(axis=0)) >= np.abs(axes.min(axis=0)), 1.0, -1.0)
    chosen = matrix if rows is None else matrix[rows]
    return (chosen.astype(np.float64) - mean) @ axes
