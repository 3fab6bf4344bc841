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


#: Exact searches :func:`nearest_neighbors` can run ("auto" picks by device).
SEARCHES = ("auto", "float64", "float32-first")


def nearest_neighbors(X, k_max, *, device=None, block_size=2048, exact=True, search="auto"):
    """Exact k_max nearest neighbours of every row of X (Euclidean).

    One blocked matrix product (torch, on the CPU or the GPU) ranks every
    point by |y|^2 - 2 x.y (the distance minus the constant |x|^2) and a
    partial selection keeps the nearest. With ``exact=True`` (the default)
    the search is made exact in one of two ways, which return the same graph:

    - ``"float64"`` (the CPU's default): the product in float64, and every point
      that float64 rounding could put on either side of the k_max-th neighbour
      re-measured from differences;
    - ``"float32-first"`` (the GPU's default): the product in float32, which GPUs
      compute 32-64 times faster than float64, then made exact:

    1. each row keeps ``k_max + margin`` float32 candidates;
    2. their distances are re-measured in float64 from differences;
    3. a bound on float32 rounding certifies the row: every point left out
       ranked at least at the last candidate, so its true rank is at least
       that minus the bound; when this exceeds the k_max-th re-measured
       neighbour, no left-out point can be nearer (or tied);
    4. rows that fail (points very close compared with their norms, as in
       tight clusters far from the mean) are searched again in float64, with
       a float64 rounding bound and re-measurement from differences.

    On a CPU float64 products cost about twice float32 ones, and re-measuring the
    float32 candidates (gathering k_max + margin rows per point) costs more than
    that saves: 0.39 s (float64) vs 13.7 s (float32-first) at 2,400 x 512, k = 500
    (this machine, loaded). So "auto" runs "float64" on the CPU and
    "float32-first" on any other device.

    The graph equals a float64 search from differences; ties in distance are
    broken by the smaller index, so the CPU and the GPU return the same graph.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Points (any float dtype, torch tensors included; computed in float64).
    k_max : int
        Largest scale needed; must be smaller than n_samples.
    device : {None, "cpu", "cuda"}
        Where the matrix product runs; None is the CPU.
    block_size : int
        Rows per block of the distance computation (bounds memory).
    exact : bool
        False ranks neighbours by float32 distances only (neighbours closer
        than float32 rounding may swap ranks, and tight clusters far from the
        mean can lose neighbours) and the distances returned carry float32
        precision. Enough for measures that only count shared neighbours (kNN
        overlap); ratio estimators of dimension need ``exact=True``.
    search : {"auto", "float64", "float32-first"}
        How an exact search is made exact (ignored when ``exact=False``); "auto"
        is "float64" on the CPU and "float32-first" elsewhere.

    Returns
    -------
    graph : NeighborGraph

    Raises
    ------
    ValueError
        If X is not 2-D, contains NaNs, or k_max >= n_samples.
    """
    import torch

    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}.")
    X = check_array(X, "X", min_samples=2)
    n_samples, n_features = X.shape
    k_max = check_scale(k_max, n_samples, "k_max")
    device = device or "cpu"
    Xc = X - X.mean(axis=0)  # centring changes no distance and reduces cancellation
    if search == "auto":
        search = "float64" if torch.device(device).type == "cpu" else "float32-first"
    if exact and search == "float64":
        idx, d2 = _exact_float64_rows(X, Xc, np.arange(n_samples), k_max, device, block_size)
        return NeighborGraph(indices=idx, distances=np.sqrt(np.maximum(d2, 0.0)))
    Xt = torch.as_tensor(Xc, dtype=torch.float32, device=device)
    sq = (Xt * Xt).sum(1)
    if not exact:
        idx = np.empty((n_samples, k_max), dtype=np.int64)
        d2 = np.empty((n_samples, k_max), dtype=np.float64)
        for start in range(0, n_samples, block_size):
            stop = min(start + block_size, n_samples)
            top = _block_topk(Xt, sq, start, stop, k_max)
            idx[start:stop] = top.indices.cpu().numpy()
            d2[start:stop] = top.values.double().cpu().numpy() + sq[start:stop, None].double().cpu().numpy()
        return NeighborGraph(indices=idx, distances=np.sqrt(np.maximum(d2, 0.0)))
    return _exact_float32_first(X, Xc, Xt, sq, k_max, block_size)


def _block_topk(Xt, sq, start, stop, n_cand):
    """The n_cand smallest ranks |y|^2 - 2 x.y of rows start:stop (self excluded)."""
    import torch

    rank = torch.addmm(sq[None, :], Xt[start:stop], Xt.T, alpha=-2.0)
    rows = torch.arange(stop - start, device=Xt.device)
    rank[rows, rows + start] = float("inf")  # exclude self
    return torch.topk(rank, n_cand, dim=1, largest=False, sorted=True)


def _unit_roundoff_float32(device):
    """Unit roundoff of a float32 matrix product on ``device`` (TF32/bfloat16 when enabled)."""
    import torch

    if str(device).startswith("cuda"):
        if torch.get_float32_matmul_precision() == "medium":
            return 2.0 ** -8
        if torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() == "high":
            return 2.0 ** -11
    return 2.0 ** -24


def _sorted_by_distance_then_index(cols, d2, k):
    """Per row, the k smallest of d2 (n_rows, m), ties broken by the smaller index in cols."""
    order = np.lexsort((cols, d2), axis=-1)[:, :k]
    return np.take_along_axis(cols, order, axis=1), np.take_along_axis(d2, order, axis=1)


def _remeasure(X64, rows, cols, sub_bytes=64 * 2 ** 20):
    """Squared distances of rows (n,) to their columns (n, m), from float64 differences."""
    n_rows, m = cols.shape
    sub = max(1, int(sub_bytes // max(1, m * X64.shape[1] * 8)))
    out = []
    for s in range(0, n_rows, sub):
        diff = X64[cols[s:s + sub]] - X64[rows[s:s + sub], None, :]
        out.append((diff * diff).sum(-1))
    import torch

    return torch.cat(out).cpu().numpy()


def _exact_float32_first(X, Xc, Xt, sq, k, block_size):
    """Steps 1-4 of :func:`nearest_neighbors` with ``exact=True``."""
    import torch

    n_samples, n_features = X.shape
    device = Xt.device
    margin = max(16, k // 8)
    n_cand = min(n_samples - 1, k + margin)
    X64 = torch.as_tensor(X, dtype=torch.float64, device=device)  # the caller's X, not Xc
    norm2 = np.einsum("ij,ij->i", Xc, Xc)
    radius = float(np.sqrt(norm2.max()))
    u = _unit_roundoff_float32(device)
    idx = np.empty((n_samples, k), dtype=np.int64)
    d2 = np.empty((n_samples, k), dtype=np.float64)
    failed = []
    for start in range(0, n_samples, block_size):
        stop = min(start + block_size, n_samples)
        top = _block_topk(Xt, sq, start, stop, n_cand)
        last32 = top.values[:, -1].double().cpu().numpy()
        rows = torch.arange(start, stop, device=device)
        cols = top.indices
        exact = _remeasure(X64, rows, cols)
        del top
        i_blk, d_blk = _sorted_by_distance_then_index(cols.cpu().numpy(), exact, k)
        idx[start:stop], d2[start:stop] = i_blk, d_blk
        if n_cand == n_samples - 1:
            continue  # every point was a candidate
        # Float32 rounding of |y|^2 - 2 x.y (inputs, length-D sums, the final add) is at most
        # (D + 4) u (2 |x| R + R^2), R the largest norm; 1.01 and the float64 slack are spare.
        ni = norm2[start:stop]
        err = 1.01 * (n_features + 4) * u * (2 * np.sqrt(ni) * radius + radius ** 2)
        kth_rank = d_blk[:, -1] - ni
        slack = 1e-12 * (d_blk[:, -1] + ni)
        bad = np.flatnonzero(~(last32 - err > kth_rank + slack))
        failed.append(start + bad)
    failed = np.concatenate(failed) if failed else np.empty(0, dtype=np.int64)
    if failed.size:
        i_f, d_f = _exact_float64_rows(X, Xc, failed, k, device, block_size)
        idx[failed], d2[failed] = i_f, d_f
    return NeighborGraph(indices=idx, distances=np.sqrt(np.maximum(d2, 0.0)))


#: Rounding of a float64 product of length D perturbs |x|^2 + |y|^2 - 2 x.y by at most
#: about 2 D eps (|x|^2 + |y|^2) (a worst-case bound; typical errors are far smaller).
_ROUNDING = 2 * np.finfo(np.float64).eps


def _exact_float64_rows(X, Xc, rows, k, device, block_size=2048, rtol=1e-8):
    """The k nearest neighbours of the given rows by a float64 product, made exact.

    The search the package used before its float32-first one, for any subset of
    rows: rank every point in float64, keep k + 8 candidates, and re-measure from
    differences every point that float64 rounding could have put on either side of
    the k-th (see :func:`_repair_rounding`). Ties are broken by the smaller index.

    Returns
    -------
    indices : ndarray of shape (len(rows), k)
    d2 : ndarray of shape (len(rows), k)
        Squared distances.
    """
    import torch

    n_samples = X.shape[0]
    Xt = torch.as_tensor(Xc, dtype=torch.float64, device=device)
    sq = (Xt * Xt).sum(1)
    n_cand = min(n_samples - 1, k + 8)
    rows = np.asarray(rows, dtype=np.int64)
    idx = np.empty((rows.size, k), dtype=np.int64)
    d2 = np.empty((rows.size, k), dtype=np.float64)
    for start in range(0, rows.size, block_size):
        stop = min(start + block_size, rows.size)
        r_blk = rows[start:stop]
        rank = torch.addmm(sq[None, :], Xt[torch.as_tensor(r_blk, device=Xt.device)], Xt.T, alpha=-2.0)
        rank[torch.arange(stop - start, device=Xt.device),
             torch.as_tensor(r_blk, device=Xt.device)] = float("inf")  # exclude self
        top = torch.topk(rank, n_cand, dim=1, largest=False, sorted=True)
        cand = top.indices.cpu().numpy()
        vals = top.values.cpu().numpy().astype(np.float64)
        i_blk, d_blk = _sorted_by_distance_then_index(
            cand, vals + np.einsum("ij,ij->i", Xc[r_blk], Xc[r_blk])[:, None], n_cand)
        _repair_rounding(X, Xc, rank, cand, vals, r_blk, k, i_blk, d_blk, rtol)
        idx[start:stop], d2[start:stop] = i_blk[:, :k], d_blk[:, :k]
    return idx, d2


def _repair_rounding(X, Xc, rank, cand, vals, rows, k, idx, d2, rtol=1e-8):
    """Re-measure the rows of one block whose float64 product could be off by rtol,
    or whose tie with the k-th neighbour reaches past the spare candidates.

    For row i with ranks ``vals`` (sorted; rank = d^2 - |x_i|^2), any point
    that could truly be among the k nearest lies within the band rank <=
    vals[k-1] + 2E_i, where E_i bounds the rounding of d^2 for points no
    farther than the last candidate. Rows where E_i is below rtol of the
    nearest squared distance are exact already; the others are re-measured
    from differences over the whole band (taken from the block's full row of
    ranks when the band reaches past the spare candidates). Differences are
    taken of the caller's X, not of the centred Xc: centring rounds each
    coordinate, which alone shifts distances ~1e-7 in clusters this tight.
    ``idx`` and ``d2`` (n_rows, >= k) are updated in their first k columns.
    """
    n_features = X.shape[1]
    norm2 = np.einsum("ij,ij->i", Xc[rows], Xc[rows])
    d2_last = np.maximum(vals[:, -1] + norm2, 0.0)
    # Points within the candidates' radius have |y| <= |x| + radius.
    err = _ROUNDING * n_features * (norm2 + (np.sqrt(norm2) + np.sqrt(d2_last)) ** 2)
    nearest = vals[:, 0] + norm2
    threshold = vals[:, k - 1] + 2 * err
    every_point = cand.shape[1] == X.shape[0] - 1
    # Near-ties: two of the first k + 1 ranks closer than the rounding bound, so the product
    # alone cannot order them (points that are duplicates up to rounding, as coarse-grained
    # means of one neighbourhood summed in another order are). Re-measured, they are ordered
    # as the float32-first search orders them: by the same differences, then by index.
    near_tie = np.any(np.diff(vals[:, :k + 1], axis=1) <= 2 * err[:, None], axis=1)
    # risky rows, and rows whose band (ties with the k-th, say) reaches past the candidates
    risky = np.flatnonzero((err > rtol * np.maximum(nearest, 0.0)) | near_tie
                           | (~every_point & (vals[:, -1] <= threshold)))
    if risky.size == 0:
        return
    import torch
    X64 = torch.as_tensor(X, dtype=torch.float64)
    for r in risky:
        threshold = vals[r, k - 1] + 2 * err[r]
        if every_point or vals[r, -1] > threshold:
            cols = cand[r][vals[r] <= threshold]
        else:  # the band reaches past the spare candidates: take it from the full row
            cols = np.flatnonzero((rank[r] <= threshold).cpu().numpy())
        exact = _remeasure(X64, np.array([rows[r]]), cols[None, :])[0]
        order = np.lexsort((cols, exact))[:k]
        idx[r, :k], d2[r, :k] = cols[order], exact[order]


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
