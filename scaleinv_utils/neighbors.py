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

    One blocked matrix product (torch, on the CPU or the GPU) ranks every
    point by |x|^2 + |y|^2 - 2 x.y and a partial selection keeps the nearest,
    with squared distances from the same product. With ``exact=True`` this
    runs in float64 and a bound on its rounding error decides, row by row,
    whether that is enough: where the error could exceed 1e-8 of a
    neighbour's squared distance (neighbours very close compared with the
    points' norms, as in tight clusters far from the mean), every point that
    rounding could have put on either side of the k_max-th neighbour is
    re-measured from differences. Ordinary data never needs it; the graph is
    exact either way (up to ties within 1e-8).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Points.
    k_max : int
        Largest scale needed; must be smaller than n_samples.
    device : {None, "cpu", "cuda"}
        Where the matrix product runs; None is the CPU.
    block_size : int
        Rows per block of the distance computation (bounds memory).
    exact : bool
        False ranks neighbours by float32 distances (neighbours closer than
        float32 rounding may swap ranks, and tight clusters far from the mean
        can lose neighbours) and the distances returned carry float32
        precision. Enough for measures that only count shared neighbours (kNN
        overlap) and about twice as fast; ratio estimators of dimension need
        ``exact=True``.

    Returns
    -------
    graph : NeighborGraph

    Raises
    ------
    ValueError
        If X is not 2-D, contains NaNs, or k_max >= n_samples.
    """
    import torch

    X = check_array(X, "X", min_samples=2)
    n_samples, n_features = X.shape
    k_max = check_scale(k_max, n_samples, "k_max")
    Xc = X - X.mean(axis=0)  # centring changes no distance and reduces cancellation
    Xt = torch.as_tensor(Xc, dtype=torch.float64 if exact else torch.float32, device=device or "cpu")
    sq = (Xt * Xt).sum(1)
    # Spare candidates show whether the rounding band around the k_max-th is inside the list.
    n_cand = min(n_samples - 1, k_max + 8) if exact else k_max
    idx = np.empty((n_samples, k_max), dtype=np.int64)
    d2 = np.empty((n_samples, k_max), dtype=np.float64)
    for start in range(0, n_samples, block_size):
        stop = min(start + block_size, n_samples)
        # |x_i|^2 is constant along a row, so ranking by |y|^2 - 2 x.y ranks by distance.
        rank = torch.addmm(sq[None, :], Xt[start:stop], Xt.T, alpha=-2.0)
        rows = torch.arange(stop - start, device=Xt.device)
        rank[rows, rows + start] = float("inf")  # exclude self
        top = torch.topk(rank, n_cand, dim=1, largest=False, sorted=True)
        cand = top.indices.cpu().numpy()
        vals = top.values.cpu().numpy().astype(np.float64)
        idx[start:stop] = cand[:, :k_max]
        d2[start:stop] = vals[:, :k_max] + sq[start:stop, None].cpu().numpy()
        if exact:
            _repair_rounding(X, Xc, rank, cand, vals, start, k_max, idx, d2)
    return NeighborGraph(indices=idx, distances=np.sqrt(np.maximum(d2, 0.0)))


#: Rounding of a float64 product of length D perturbs |x|^2 + |y|^2 - 2 x.y by at most
#: about 2 D eps (|x|^2 + |y|^2) (a worst-case bound; typical errors are far smaller).
_ROUNDING = 2 * np.finfo(np.float64).eps


def _repair_rounding(X, Xc, rank, cand, vals, start, k, idx, d2, rtol=1e-8):
    """Re-measure the rows of one block whose float64 product could be off by rtol.

    For row i with ranks ``vals`` (sorted; rank = d^2 - |x_i|^2), any point
    that could truly be among the k nearest lies within the band rank <=
    vals[k-1] + 2E_i, where E_i bounds the rounding of d^2 for points no
    farther than the last candidate. Rows where E_i is below rtol of the
    nearest squared distance are exact already; the others are re-measured
    from differences over the whole band (taken from the block's full row of
    ranks when the band reaches past the spare candidates). Differences are
    taken of the caller's X, not of the centred Xc: centring rounds each
    coordinate, which alone shifts distances ~1e-7 in clusters this tight.
    """
    n_rows, n_features = rank.shape[0], X.shape[1]
    norm2 = np.einsum("ij,ij->i", Xc[start:start + n_rows], Xc[start:start + n_rows])
    d2_last = np.maximum(vals[:, -1] + norm2, 0.0)
    # Points within the candidates' radius have |y| <= |x| + radius.
    err = _ROUNDING * n_features * (norm2 + (np.sqrt(norm2) + np.sqrt(d2_last)) ** 2)
    nearest = vals[:, 0] + norm2
    risky = np.flatnonzero(err > rtol * np.maximum(nearest, 0.0))
    if risky.size == 0:
        return
    every_point = cand.shape[1] == X.shape[0] - 1
    for r in risky:
        threshold = vals[r, k - 1] + 2 * err[r]
        if every_point or vals[r, -1] > threshold:
            cols = cand[r][vals[r] <= threshold]
        else:  # the band reaches past the spare candidates: take it from the full row
            cols = np.flatnonzero((rank[r] <= threshold).cpu().numpy())
        diff = X[cols] - X[start + r]
        exact = np.einsum("ij,ij->i", diff, diff)
        order = np.argsort(exact, kind="stable")[:k]
        idx[start + r], d2[start + r] = cols[order], exact[order]


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
