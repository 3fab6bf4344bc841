"""One neighbour query for every scale.

Every multi-scale quantity of the book (intrinsic dimension at scale k, kNN
overlap at scale k, ...) needs the k nearest neighbours of each point for many
k. Computing the ``k_max`` nearest neighbours once and slicing is exact for
every k <= k_max, and it is the only expensive step: one matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_array, check_scale

__all__ = ["NeighborGraph", "nearest_neighbors", "scale_grid", "count_duplicates"]


@dataclass(frozen=True)
class NeighborGraph:
    """The k_max nearest neighbours of every point, sorted by distance.

    Attributes
    ----------
    indices : ndarray of shape (n_samples, k_max)
        Index of the j-th nearest neighbour of point i (the point itself excluded).
    distances : ndarray of shape (n_samples, k_max)
        Euclidean distances, ascending along axis 1, computed in float64.
    """

    indices: np.ndarray
    distances: np.ndarray

    @property
    def n_samples(self):
        return self.indices.shape[0]

    @property
    def k_max(self):
        return self.indices.shape[1]

    def at(self, k):
        """Neighbours at scale k.

        Parameters
        ----------
        k : int
            Number of neighbours, 1 <= k <= k_max.

        Returns
        -------
        indices : ndarray of shape (n_samples, k)
        distances : ndarray of shape (n_samples, k)
        """
        if not 1 <= k <= self.k_max:
            raise ValueError(f"k={k} must be between 1 and k_max={self.k_max} of this graph.")
        return self.indices[:, :k], self.distances[:, :k]


def nearest_neighbors(X, k_max, *, device=None, block_size=2048, exact=True):
    """Exact k_max nearest neighbours of every row of X (Euclidean).

    The candidates come from one blocked float64 matrix product (float32 on
    the GPU through torch when ``device="cuda"``, where tight clusters far from
    the mean can lose neighbours to rounding); their distances are then
    recomputed in float64 (from differences, or from a float64 Gram block for
    large k_max, the nearest 32 always from differences) and re-sorted.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Points.
    k_max : int
        Largest scale needed; must be smaller than n_samples.
    device : {None, "cpu", "cuda"}
        None uses NumPy on the CPU; "cuda" uses torch on the GPU.
    block_size : int
        Rows per block of the distance computation (bounds memory).
    exact : bool
        False skips the float64 passes: neighbours are ranked by float32
        distances (neighbours closer than float32 rounding may swap ranks, and
        tight clusters far from the mean can lose neighbours) and the
        distances returned carry float32 precision. Enough for measures
        that only count shared neighbours (kNN overlap), and about twice as
        fast for large k_max; ratio estimators of dimension need ``exact=True``.

    Returns
    -------
    graph : NeighborGraph

    Raises
    ------
    ValueError
        If X is not 2-D, contains NaNs, or k_max >= n_samples.
    """
    X = check_array(X, "X", min_samples=2)
    n_samples = X.shape[0]
    k_max = check_scale(k_max, n_samples, "k_max")
    # A few spare candidates absorb float32 rounding near ties at the k_max boundary.
    n_cand = min(n_samples - 1, k_max + 8)
    Xc = X - X.mean(axis=0)  # centring changes no distance and reduces cancellation
    if not exact and device in (None, "cpu"):
        cand, dist = _candidates_numpy(Xc, k_max, block_size, return_distances=True)
        order = np.argsort(dist, axis=1, kind="stable")
        return NeighborGraph(indices=np.take_along_axis(cand, order, axis=1),
                             distances=np.take_along_axis(dist, order, axis=1).astype(np.float64))
    if device not in (None, "cpu"):
        cand = _candidates_torch(Xc, n_cand, device, block_size)
    else:
        # Candidates in float64: in float32, |x|^2 + |y|^2 - 2 x.y loses neighbours whose
        # distance is ~1e-3 of the points' norms (tight clusters far apart).
        cand = _candidates_numpy(Xc, n_cand, block_size, dtype=np.float64)
    exact = _exact_distances(Xc, cand)
    order = np.argsort(exact, axis=1, kind="stable")[:, :k_max]
    rows = np.arange(n_samples)[:, None]
    return NeighborGraph(indices=cand[rows, order].astype(np.int64),
                         distances=exact[rows, order])


def _exact_distances(X, cand, block_size=2048, n_refine=32, max_elements=1 << 24):
    """Float64 distances from each point to its candidates, memory bounded.

    Few candidates: from differences, in row blocks (forming them all at once
    needs n_samples * n_cand * n_features floats: 154 GB for 10,000 x 2,500 x 768).
    Many candidates (over ~1% of the points): gathering differences is
    memory-bound, so distances come from a float64 Gram block, |x|^2 + |y|^2 - 2 x.y (X is centred), and only
    the n_refine smallest (those ratio estimators such as TwoNN divide by) are
    recomputed from differences.
    """
    n_samples, n_cand = cand.shape
    out = np.empty(cand.shape)
    # Gathering candidate rows is memory-bound (measured ~100x slower per element than a
    # BLAS flop here), so a float64 Gram block wins once candidates exceed ~1% of the points.
    if n_cand * 100 > n_samples:
        sq = np.einsum("ij,ij->i", X, X)
        for start in range(0, n_samples, block_size):
            stop = min(start + block_size, n_samples)
            c = cand[start:stop]
            gram = X[start:stop] @ X.T
            d2 = sq[start:stop, None] + sq[c] - 2.0 * np.take_along_axis(gram, c, axis=1)
            out[start:stop] = np.sqrt(np.maximum(d2, 0.0))
        order = np.argsort(out, axis=1, kind="stable")
        cand[:] = np.take_along_axis(cand, order, axis=1)
        out = np.take_along_axis(out, order, axis=1)
        n_exact = min(n_refine, n_cand)
    else:
        n_exact = n_cand
    step = max(1, max_elements // max(1, n_exact * X.shape[1]))
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        diff = X[cand[start:stop, :n_exact]] - X[start:stop, None, :]
        out[start:stop, :n_exact] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    return out


def _candidates_numpy(X, n_cand, block_size, return_distances=False, dtype=np.float32):
    X32 = X.astype(dtype, copy=False)
    sq = np.einsum("ij,ij->i", X32, X32)
    n_samples = X.shape[0]
    out = np.empty((n_samples, n_cand), dtype=np.int64)
    dist = np.empty((n_samples, n_cand), dtype=dtype) if return_distances else None
    for start in range(0, n_samples, block_size):
        stop = min(start + block_size, n_samples)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (X32[start:stop] @ X32.T)
        d2[np.arange(stop - start), np.arange(start, stop)] = np.inf  # exclude self
        part = np.argpartition(d2, n_cand - 1, axis=1)[:, :n_cand]
        out[start:stop] = part
        if return_distances:
            dist[start:stop] = np.sqrt(np.maximum(np.take_along_axis(d2, part, axis=1), 0.0))
    return (out, dist) if return_distances else out


def _candidates_torch(X, n_cand, device, block_size):
    import torch

    Xt = torch.as_tensor(X, dtype=torch.float32, device=device)
    sq = (Xt * Xt).sum(1)
    n_samples = X.shape[0]
    out = torch.empty((n_samples, n_cand), dtype=torch.int64, device=device)
    for start in range(0, n_samples, block_size):
        stop = min(start + block_size, n_samples)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (Xt[start:stop] @ Xt.T)
        idx = torch.arange(stop - start, device=device)
        d2[idx, idx + start] = float("inf")
        out[start:stop] = torch.topk(d2, n_cand, dim=1, largest=False).indices
    return out.cpu().numpy()


def scale_grid(n_samples, n_scales=20, k_min=5, k_max=None):
    """Neighbourhood sizes on a log grid, the book's default axis of "scale".

    Parameters
    ----------
    n_samples : int
        Number of points.
    n_scales : int
        Number of scales requested (fewer are returned if rounding merges some).
    k_min : int
        Smallest neighbourhood.
    k_max : int or None
        Largest neighbourhood; defaults to n_samples // 4.

    Returns
    -------
    ks : ndarray of shape (n_scales,)
        Unique increasing integers.

    Raises
    ------
    ValueError
        If the grid would be empty or k_max >= n_samples.
    """
    if n_scales < 1:
        raise ValueError(f"n_scales={n_scales} must be at least 1.")
    if k_max is None:
        k_max = max(k_min, n_samples // 4)
        if k_max >= n_samples:
            raise ValueError(f"n_samples={n_samples} is too few for scales from k_min={k_min}; "
                             f"it needs more than {k_max} points.")
    check_scale(k_max, n_samples, "k_max")
    if k_min < 1 or k_min > k_max:
        raise ValueError(f"k_min={k_min} must be between 1 and k_max={k_max}.")
    ks = np.unique(np.round(np.geomspace(k_min, k_max, n_scales)).astype(int))
    return ks


def count_duplicates(X):
    """Number of rows of X that repeat an earlier row exactly.

    Duplicate points have zero neighbour distances, which break estimators
    built on distance ratios (TwoNN, Gride, MLE).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    n_duplicates : int
    """
    X = check_array(X, "X", allow_nan=True)
    return int(X.shape[0] - np.unique(X, axis=0).shape[0])
