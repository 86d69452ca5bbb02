"""2-D projections of a collection for its map."""

import numpy as np

# A map shows at most this many items: beyond it a browser slows down and points hide each other.
MAX_POINTS = 10_000


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
