"""Structural similarity of representations, as profiles over scale.

Two representations of the same stimuli (a model layer and a brain region,
two models, two subjects) can agree about which stimuli are close
(neighbourhoods), about all pairwise distances (RDMs) or about kernels built
on those distances (CKA). Each comparison has a natural *scale*:

* kNN overlap and mutual-kNN alignment (Huh et al. 2024): the neighbourhood
  size k;
* RBF-CKA (Kornblith et al. 2019): the kernel bandwidth, here tied to k
  through the typical distance to the k-th neighbour;
* RSA (Kriegeskorte et al. 2008) and linear CKA: global, one number each.

Every kNN measure over a whole grid of k comes from **one** neighbour query
per representation (:func:`scaleinv_utils.neighbors.nearest_neighbors` with
``k_max = max(ks)``), sliced per scale. The same machinery describes one
representation across scales (:func:`cross_scale_similarity`).

Raw scores have chance levels that depend on n_samples, k and dimension;
:func:`permutation_test` gives the null of shuffled stimulus labels and a
calibrated score, :func:`bootstrap_ci` an interval, :func:`compare_profiles`
says how alike two profiles are (a model's and the brain's).

Functions whose cost a GPU removes take ``device``: every kNN measure (the
neighbour queries are their whole cost) and linear CKA (feature products).
The n x n measures (:func:`rdm`, :func:`rsa`, :func:`hsic`, :func:`rbf_cka`)
are meant for at most a few thousand stimuli and stay in NumPy.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from . import stats as _stats
from ._validation import (check_array, check_consistent_samples, check_random_state,
                          check_scale)
from .neighbors import NeighborGraph, nearest_neighbors, scale_grid

__all__ = [
    "rdm", "upper_triangle", "compare_rdms", "rsa",
    "hsic", "linear_cka", "rbf_cka", "median_distance",
    "knn_overlap", "mutual_knn_alignment", "knn_chance", "permute_graph",
    "similarity_profile", "SimilarityProfile",
    "coarse_grain", "cross_scale_similarity", "CrossScaleSimilarity",
    "permutation_test", "PermutationResult", "bootstrap_ci", "BootstrapResult",
    "compare_profiles",
]

_RDM_METRICS = ("correlation", "euclidean", "sqeuclidean", "cosine")


# ---------------------------------------------------------------------------
# RDMs and RSA

def rdm(X, metric="correlation"):
    """Representational dissimilarity matrix, computed by one matrix product.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        One row per stimulus.
    metric : {"correlation", "euclidean", "sqeuclidean", "cosine"}
        "correlation": 1 - Pearson correlation between two stimuli's patterns
        (rsatoolbox's "correlation"). "euclidean": Euclidean distance.
        "sqeuclidean": squared Euclidean distance (rsatoolbox's "euclidean"
        divides this by n_features). "cosine": 1 - cosine similarity.

    Returns
    -------
    D : ndarray of shape (n_samples, n_samples)
        Symmetric, zero diagonal, float64.

    Raises
    ------
    ValueError
        If X is not 2-D, contains NaNs, the metric is unknown, or (for the
        correlation and cosine metrics) a row is constant or zero.
    """
    if metric not in _RDM_METRICS:
        raise ValueError(f"metric must be one of {_RDM_METRICS}, got {metric!r}.")
    X = check_array(X, "X", min_samples=2)
    if metric in ("correlation", "cosine"):
        Z = X - X.mean(axis=1, keepdims=True) if metric == "correlation" else X.copy()
        norms = np.sqrt(np.einsum("ij,ij->i", Z, Z))
        bad = np.flatnonzero(norms == 0)
        if bad.size:
            raise ValueError(f"X has {bad.size} constant rows (e.g. row {bad[0]}); the "
                             f"{metric} distance is undefined for them.")
        Z /= norms[:, None]
        D = Z @ Z.T
        np.subtract(1.0, D, out=D)
        np.clip(D, 0.0, 2.0, out=D)
    else:
        Z = X - X.mean(axis=0)  # centring changes no distance and reduces cancellation
        sq = np.einsum("ij,ij->i", Z, Z)
        D = Z @ Z.T
        D *= -2.0
        D += sq[:, None]
        D += sq[None, :]
        np.maximum(D, 0.0, out=D)
        if metric == "euclidean":
            np.sqrt(D, out=D)
    np.fill_diagonal(D, 0.0)
    return D


def upper_triangle(D):
    """Entries above the diagonal of a square matrix, row by row.

    Parameters
    ----------
    D : array-like of shape (n_samples, n_samples)

    Returns
    -------
    values : ndarray of shape (n_samples * (n_samples - 1) // 2,)

    Raises
    ------
    ValueError
        If D is not square.
    """
    D = np.asarray(D)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"D must be a square matrix, got shape {D.shape}.")
    return D[np.triu_indices(D.shape[0], k=1)]


def _as_rdm_vector(D, name):
    D = check_array(D, name, ndim=(1, 2))
    if D.ndim == 2:
        return upper_triangle(D)
    return D


def _rank(v):
    from scipy.stats import rankdata
    return rankdata(v).astype(np.float64)


def _correlate(a, b, method):
    """The package's one Pearson / Spearman (:mod:`scaleinv_utils.stats`); constant input raises."""
    f = _stats.spearman if method == "spearman" else _stats.pearson
    return f(a, b, constant="raise")


def compare_rdms(D1, D2, method="spearman"):
    """Compare two RDMs on their upper triangles.

    Parameters
    ----------
    D1, D2 : array-like of shape (n_samples, n_samples) or (n_pairs,)
        Square RDMs, or their upper triangles from :func:`upper_triangle`.
    method : {"spearman", "pearson"}
        Spearman correlation (ranks, the RSA default: only the order of the
        dissimilarities counts) or Pearson correlation.

    Returns
    -------
    r : float

    Raises
    ------
    ValueError
        If the RDMs describe different numbers of stimuli, or a method is unknown.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}.")
    v1, v2 = _as_rdm_vector(D1, "D1"), _as_rdm_vector(D2, "D2")
    if v1.shape != v2.shape:
        raise ValueError(f"D1 and D2 must describe the same stimuli: {v1.size} vs "
                         f"{v2.size} pairs.")
    return _correlate(v1, v2, method)


def rsa(X, Y, metric="correlation", method="spearman"):
    """Representational similarity analysis of two representations.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
        The same stimuli in the same order.
    metric : str
        RDM metric, see :func:`rdm`.
    method : {"spearman", "pearson"}
        How the two RDMs are compared.

    Returns
    -------
    r : float

    Raises
    ------
    ValueError
        If the stimulus counts differ or an input contains NaNs.
    """
    X, Y = _check_pair(X, Y, min_samples=3)
    return compare_rdms(rdm(X, metric), rdm(Y, metric), method=method)


def _check_pair(X, Y, min_samples=2):
    X = check_array(X, "X", min_samples=min_samples)
    Y = check_array(Y, "Y", min_samples=min_samples)
    check_consistent_samples(X=X, Y=Y)
    return X, Y


# ---------------------------------------------------------------------------
# HSIC and CKA

def hsic(K, L, unbiased=True):
    """Hilbert-Schmidt independence criterion from two Gram matrices.

    The biased estimator (Gretton et al. 2005) is

    .. math:: \\mathrm{HSIC}_0 = \\frac{\\operatorname{tr}(K H L H)}{(n-1)^2},

    with :math:`H` the centring matrix; its expectation is positive even for
    independent data, by O(1/n). The unbiased estimator (Song et al. 2012) uses
    :math:`\\tilde K, \\tilde L`, the Gram matrices with their diagonals set to 0:

    .. math:: \\mathrm{HSIC}_1 = \\frac{1}{n(n-3)}\\Big[\\operatorname{tr}(\\tilde K\\tilde L)
              + \\frac{\\mathbf 1^\\top\\tilde K\\mathbf 1\\,\\mathbf 1^\\top\\tilde L\\mathbf 1}
              {(n-1)(n-2)} - \\frac{2}{n-2}\\mathbf 1^\\top\\tilde K\\tilde L\\mathbf 1\\Big].

    Parameters
    ----------
    K, L : array-like of shape (n_samples, n_samples)
        Symmetric Gram matrices of the same stimuli.
    unbiased : bool
        Use the unbiased estimator (needs n_samples >= 4).

    Returns
    -------
    value : float

    Raises
    ------
    ValueError
        If the matrices are not square of the same size, or too small.
    """
    K = check_array(K, "K", min_samples=2)
    L = check_array(L, "L", min_samples=2)
    n = K.shape[0]
    if K.shape != (n, n) or L.shape != (n, n):
        raise ValueError(f"K and L must be square Gram matrices of the same stimuli, got "
                         f"shapes {K.shape} and {L.shape}.")
    if not unbiased:
        Kc = K - K.mean(axis=0) - K.mean(axis=1)[:, None] + K.mean()
        return float(np.sum(Kc * L) / (n - 1) ** 2)
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs n_samples >= 4, got n_samples={n}.")
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    k1, l1 = Kt.sum(axis=1), Lt.sum(axis=1)
    value = (np.sum(Kt * Lt) + k1.sum() * l1.sum() / ((n - 1) * (n - 2))
             - 2.0 / (n - 2) * np.dot(k1, l1))
    return float(value / (n * (n - 3)))


def _linear_hsic_features(X, Y, unbiased):
    """HSIC of linear kernels from the features alone: O(n p q), no n x n matrix."""
    n = X.shape[0]
    if not unbiased:
        Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
        return float(np.sum((Xc.T @ Yc) ** 2) / (n - 1) ** 2)
    # Same terms as hsic(), written with K = X X^T and L = Y Y^T never formed.
    kd, ld = np.einsum("ij,ij->i", X, X), np.einsum("ij,ij->i", Y, Y)
    tr = np.sum((X.T @ Y) ** 2) - np.dot(kd, ld)
    k1 = X @ X.sum(axis=0) - kd
    l1 = Y @ Y.sum(axis=0) - ld
    value = tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * np.dot(k1, l1)
    return float(value / (n * (n - 3)))


def _linear_hsic_features_torch(X, Y, unbiased):
    """:func:`_linear_hsic_features` for float64 torch tensors on any device."""
    n = X.shape[0]
    if not unbiased:
        Xc, Yc = X - X.mean(dim=0), Y - Y.mean(dim=0)
        return float(((Xc.T @ Yc) ** 2).sum()) / (n - 1) ** 2
    kd, ld = (X * X).sum(dim=1), (Y * Y).sum(dim=1)
    tr = ((X.T @ Y) ** 2).sum() - kd @ ld
    k1 = X @ X.sum(dim=0) - kd
    l1 = Y @ Y.sum(dim=0) - ld
    value = tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)
    return float(value) / (n * (n - 3))


def linear_cka(X, Y, unbiased=False, *, device=None):
    """Linear centred kernel alignment, computed in feature space.

    .. math:: \\mathrm{CKA}(X, Y) = \\frac{\\lVert Y_c^\\top X_c\\rVert_F^2}
              {\\lVert X_c^\\top X_c\\rVert_F\\,\\lVert Y_c^\\top Y_c\\rVert_F}

    with column-centred :math:`X_c, Y_c` (Kornblith et al. 2019). It equals the
    kernel form HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X X^T, but
    needs only feature-by-feature products: O(n_samples p q) time and no
    n_samples x n_samples matrix, so it scales to large n_samples. CKA is
    invariant to orthogonal transforms and isotropic scaling of either
    representation, not to arbitrary invertible linear maps.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    unbiased : bool
        Use the unbiased HSIC estimator (Song et al. 2012) in numerator and
        denominator ("debiased CKA"); removes the upward bias of CKA for
        n_samples not much larger than the dimension.
    device : {None, "cpu", "cuda"}
        Where the feature products run (None: NumPy on the CPU). On a GPU they
        run in float64 with torch: X^T Y, X^T X and Y^T Y cost about
        2 n_samples (p^2 + p q + q^2) flops, tens of seconds on two CPU cores
        for 10^4 stimuli and a voxel side of q ~ 10^4. X and Y are moved there
        whole (n_samples (p + q) 8 bytes). The value equals the CPU's up to
        rounding.

    Returns
    -------
    cka : float
        In [0, 1] for the biased estimator.

    Raises
    ------
    ValueError
        If the stimulus counts differ, an input contains NaNs, or a
        representation is constant.
    """
    X, Y = _check_pair(X, Y, min_samples=4 if unbiased else 2)
    hsic_of = _linear_hsic_features
    if device is not None and str(device) != "cpu":
        import torch

        X = torch.as_tensor(X, dtype=torch.float64, device=device)
        Y = torch.as_tensor(Y, dtype=torch.float64, device=device)
        hsic_of = _linear_hsic_features_torch
    xy = hsic_of(X, Y, unbiased)
    xx = hsic_of(X, X, unbiased)
    yy = hsic_of(Y, Y, unbiased)
    if xx <= 0 or yy <= 0:
        raise ValueError("a representation has no variance across stimuli (or a non-positive "
                         "unbiased self-HSIC); CKA is undefined.")
    return xy / np.sqrt(xx * yy)


def median_distance(X):
    """Median Euclidean distance between distinct stimuli.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    median : float
    """
    return float(np.median(upper_triangle(rdm(X, "euclidean"))))


def _cka_from_grams(K, L, unbiased):
    xy, xx, yy = hsic(K, L, unbiased), hsic(K, K, unbiased), hsic(L, L, unbiased)
    if xx <= 0 or yy <= 0:
        return np.nan
    return xy / np.sqrt(xx * yy)


def _rbf_cka_sq(D2x, D2y, sigmas_x, sigmas_y, unbiased):
    out = np.empty(len(sigmas_x))
    for i, (sx, sy) in enumerate(zip(sigmas_x, sigmas_y)):
        K = np.exp(-D2x / (2.0 * sx ** 2))
        L = np.exp(-D2y / (2.0 * sy ** 2))
        out[i] = _cka_from_grams(K, L, unbiased)
    return out


def rbf_cka(X, Y, bandwidth=1.0, unbiased=False):
    """CKA with Gaussian (RBF) kernels whose bandwidth is a scale.

    k(x, x') = exp(-||x - x'||^2 / (2 sigma^2)) with sigma = bandwidth times the
    median distance of that representation (Kornblith et al. 2019). A small
    bandwidth compares only near neighbours (local structure); a large one
    approaches linear CKA (global structure).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    bandwidth : float or array-like of shape (n_scales,)
        Multiples of the median distance.
    unbiased : bool
        Use the unbiased HSIC estimator.

    Returns
    -------
    cka : float or ndarray of shape (n_scales,)

    Raises
    ------
    ValueError
        If the stimulus counts differ, inputs contain NaNs, a bandwidth is
        not positive, or a representation's median distance is 0.

    Warns
    -----
    UserWarning
        If a bandwidth leaves the kernel nearly the identity (kernel weight at
        the median nearest neighbour below 0.05): CKA then tends to 1 for any data.

    Notes
    -----
    Builds two n_samples x n_samples matrices: use it for n_samples up to a
    few thousand (or on a random subset of stimuli).
    """
    X, Y = _check_pair(X, Y, min_samples=4)
    bw = np.atleast_1d(np.asarray(bandwidth, dtype=float))
    if np.any(~np.isfinite(bw)) or np.any(bw <= 0):
        raise ValueError(f"bandwidth must be positive, got {bandwidth!r}.")
    D2x, D2y = rdm(X, "sqeuclidean"), rdm(Y, "sqeuclidean")
    mx = np.median(np.sqrt(upper_triangle(D2x)))
    my = np.median(np.sqrt(upper_triangle(D2y)))
    for name, m in (("X", mx), ("Y", my)):
        if m == 0:
            raise ValueError(f"{name} has a median distance of 0 between stimuli (it is constant "
                             f"or mostly repeated rows), so the RBF bandwidth bandwidth x median "
                             f"distance is 0 and RBF-CKA is undefined.")
    for name, D2, m in (("X", D2x, mx), ("Y", D2y, my)):
        # At the nearest neighbour the kernel must keep some weight, or the Gram matrix is
        # the identity and CKA tends to 1 for any two representations.
        nn2 = np.min(D2 + np.diag(np.full(D2.shape[0], np.inf)), axis=1)
        weight = np.median(np.exp(-nn2[None, :] / (2.0 * (bw[:, None] * m) ** 2)), axis=1)
        if np.any(weight < 0.05):
            b = float(bw[np.argmax(weight < 0.05)])
            warnings.warn(
                f"bandwidth={b:.3g} is too small for {name}: sigma = {b * m:.3g} is below its typical "
                f"nearest-neighbour distance {np.sqrt(np.median(nn2)):.3g}, so the RBF kernel is "
                f"nearly the identity and CKA tends to 1 even for unrelated data; use a bandwidth of "
                f"at least {np.sqrt(np.median(nn2) / (2 * np.log(20))) / m:.2g}.", UserWarning,
                stacklevel=2)
            break
    out = _rbf_cka_sq(D2x, D2y, bw * mx, bw * my, unbiased)
    return float(out[0]) if np.ndim(bandwidth) == 0 else out


# ---------------------------------------------------------------------------
# neighbourhoods

def _as_graph(X, k_max, name, device=None):
    """A NeighborGraph for X (queried once) or X itself if it already is one."""
    if isinstance(X, NeighborGraph):
        if X.k_max < k_max:
            raise ValueError(f"{name} is a NeighborGraph with k_max={X.k_max}, but scales up "
                             f"to k={k_max} were asked for; query it with k_max >= {k_max}.")
        return X
    X = check_array(X, name, min_samples=2)
    check_scale(k_max, X.shape[0], "max(ks)")
    if np.all(np.ptp(X, axis=0) == 0):
        raise ValueError(f"{name} is constant (all {X.shape[0]} rows are identical): every stimulus "
                         f"is at distance 0 from every other, so its nearest neighbours are "
                         f"undefined (ties broken arbitrarily would give chance-level overlaps).")
    # Overlaps only count shared neighbours: float32 ranking is enough (see nearest_neighbors).
    return nearest_neighbors(X, k_max, exact=False, device=device)


def _validated_n(X, name):
    """n_samples of a NeighborGraph, or of X after validating it as a data matrix."""
    if isinstance(X, NeighborGraph):
        return X.n_samples
    return check_array(X, name, min_samples=2).shape[0]


def _n_samples(X):
    return X.n_samples if isinstance(X, NeighborGraph) else np.shape(X)[0]


def _check_ks(ks, n_samples):
    scalar = np.ndim(ks) == 0
    ks_arr = np.atleast_1d(np.asarray(ks))
    if ks_arr.size == 0:
        raise ValueError("ks must hold at least one scale.")
    if not np.issubdtype(ks_arr.dtype, np.integer):
        raise TypeError(f"ks must be integers, got dtype {ks_arr.dtype}.")
    for k in ks_arr:
        check_scale(int(k), n_samples, "k")
    return ks_arr.astype(np.int64), scalar


def _shared_counts(ind_x, ind_y, ks, block_size=512):
    """counts[i, s] = |N_ks[s]^X(i) ∩ N_ks[s]^Y(i)| for every point and scale.

    A neighbour j shared by both lists at positions a (in X) and b (in Y) is in
    both top-k sets exactly when max(a, b) < k. One pass over the k_max columns
    therefore gives the overlap at every k at once.
    """
    n, k_max = ind_x.shape[0], int(ks.max())
    ind_x, ind_y = ind_x[:, :k_max], ind_y[:, :k_max]
    pos = np.arange(k_max, dtype=np.int32)
    out = np.empty((n, ks.size), dtype=np.int64)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        b = stop - start
        rows = np.arange(b)[:, None]
        rank_y = np.full((b, n), k_max, dtype=np.int32)  # k_max = "not in Y's list"
        rank_y[rows, ind_y[start:stop]] = pos
        first_shared = np.maximum(rank_y[rows, ind_x[start:stop]], pos)
        hist = np.bincount((first_shared + rows * (k_max + 1)).ravel(),
                           minlength=b * (k_max + 1)).reshape(b, k_max + 1)
        # count of pairs with first_shared < k is the cumulative sum up to k - 1
        out[start:stop] = np.cumsum(hist, axis=1)[:, ks - 1]
    return out


def knn_overlap(X, Y, ks, kind="fraction", per_sample=False, *, device=None):
    """Overlap of each stimulus's k nearest neighbours in two representations.

    For stimulus i with neighbour sets A = N_k^X(i) and B = N_k^Y(i):
    "fraction" is |A ∩ B| / k (Huh et al. 2024's mutual-kNN; chance
    k / (n_samples - 1)), "jaccard" is |A ∩ B| / |A ∪ B|. All scales come
    from one neighbour query per representation with k_max = max(ks).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x) or NeighborGraph
    Y : array-like of shape (n_samples, n_features_y) or NeighborGraph
        The same stimuli in the same order; a precomputed
        :class:`~scaleinv_utils.neighbors.NeighborGraph` (k_max >= max(ks))
        skips the query.
    ks : int or array-like of int of shape (n_scales,)
        Neighbourhood sizes, each 1 <= k < n_samples.
    kind : {"fraction", "jaccard"}
    per_sample : bool
        Return every stimulus's overlap instead of the mean.
    device : {None, "cpu", "cuda"}
        Where the neighbour queries run (None: the CPU); they are the whole
        cost (an n_samples^2 x n_features product each). Counting the shared
        neighbours is integer work on the CPU.

    Returns
    -------
    overlap : float, ndarray of shape (n_scales,), or with per_sample
        ndarray of shape (n_samples,) / (n_samples, n_scales)

    Raises
    ------
    ValueError
        If the stimulus counts differ, inputs contain NaNs, or k >= n_samples.
    """
    if kind not in ("fraction", "jaccard"):
        raise ValueError(f"kind must be 'fraction' or 'jaccard', got {kind!r}.")
    # Validate the data (dtype, emptiness) before the scales are checked against its size.
    n = check_consistent_samples(X=np.empty((_validated_n(X, "X"), 0)),
                                 Y=np.empty((_validated_n(Y, "Y"), 0)))
    ks_arr, scalar = _check_ks(ks, n)
    gx = _as_graph(X, int(ks_arr.max()), "X", device)
    gy = _as_graph(Y, int(ks_arr.max()), "Y", device)
    counts = _shared_counts(gx.indices, gy.indices, ks_arr).astype(np.float64)
    values = counts / ks_arr if kind == "fraction" else counts / (2 * ks_arr - counts)
    if not per_sample:
        values = values.mean(axis=0)
        return float(values[0]) if scalar else values
    return values[:, 0] if scalar else values


def mutual_knn_alignment(X, Y, k=10, *, device=None):
    """Mutual-kNN alignment of Huh et al. (2024) at one scale k.

    The mean over stimuli of the fraction of the k nearest neighbours that the
    two representations share; :func:`knn_overlap` with kind="fraction" gives
    it at many k from one query.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x) or NeighborGraph
    Y : array-like of shape (n_samples, n_features_y) or NeighborGraph
    k : int
    device : {None, "cpu", "cuda"}
        Where the neighbour queries run, as in :func:`knn_overlap`.

    Returns
    -------
    alignment : float
        1 for identical neighbourhoods, about k / (n_samples - 1) for unrelated ones.
    """
    return knn_overlap(X, Y, int(k) if isinstance(k, (np.integer, int)) else k, device=device)


def knn_chance(k, n_samples, kind="fraction"):
    """Expected kNN overlap of two unrelated representations.

    If the neighbour sets are independent uniform draws of k out of the
    n_samples - 1 other stimuli, |A ∩ B| is hypergeometric with mean
    k^2 / (n_samples - 1), so the expected fraction is k / (n_samples - 1).
    The Jaccard expectation is summed over the same distribution.

    Parameters
    ----------
    k : int or array-like of int of shape (n_scales,)
    n_samples : int
    kind : {"fraction", "jaccard"}

    Returns
    -------
    chance : float or ndarray of shape (n_scales,)
    """
    from scipy.stats import hypergeom
    ks_arr, scalar = _check_ks(k, n_samples)
    out = np.empty(ks_arr.size)
    for i, kk in enumerate(ks_arr):
        if kind == "fraction":
            out[i] = kk / (n_samples - 1)
        elif kind == "jaccard":
            c = np.arange(kk + 1)
            p = hypergeom.pmf(c, n_samples - 1, kk, kk)
            out[i] = np.sum(p * c / (2 * kk - c))
        else:
            raise ValueError(f"kind must be 'fraction' or 'jaccard', got {kind!r}.")
    return float(out[0]) if scalar else out


def permute_graph(graph, perm):
    """The neighbour graph of ``Y[perm]`` from the graph of Y, without a new query.

    Parameters
    ----------
    graph : NeighborGraph
    perm : array-like of shape (n_samples,)
        A permutation of range(n_samples).

    Returns
    -------
    graph : NeighborGraph
    """
    perm = np.asarray(perm)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return NeighborGraph(indices=inv[graph.indices[perm]], distances=graph.distances[perm])


# ---------------------------------------------------------------------------
# profiles over scale

@dataclass
class SimilarityProfile:
    """Similarity of two representations at each scale of a grid.

    Attributes
    ----------
    ks : ndarray of shape (n_scales,)
        Neighbourhood sizes.
    values : dict of str to ndarray of shape (n_scales,)
        One profile per measure.
    chance : dict of str to ndarray of shape (n_scales,)
        Analytic chance level where one exists (kNN measures).
    """

    ks: np.ndarray
    values: dict
    chance: dict = field(default_factory=dict)

    def __getitem__(self, measure):
        return self.values[measure]


_PROFILE_MEASURES = ("mutual_knn", "jaccard", "rbf_cka")


def similarity_profile(X, Y, ks=None, measures=("mutual_knn", "jaccard", "rbf_cka"),
                       max_kernel_samples=2000, graphs=None, random_state=None, device=None):
    """Similarity of two representations over a shared grid of scales.

    kNN measures use one neighbour query per representation. RBF-CKA at scale
    k uses, for each representation, the bandwidth sigma_k = median distance
    from a stimulus to its k-th nearest neighbour, so "scale k" means the same
    neighbourhood size for every measure.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features_x)
    Y : array-like of shape (n_samples, n_features_y)
    ks : array-like of int of shape (n_scales,) or None
        Defaults to ``scale_grid(n_samples)`` (log grid from 5 to n_samples // 4).
    measures : sequence of {"mutual_knn", "jaccard", "rbf_cka"}
    max_kernel_samples : int
        RBF-CKA needs n x n kernels; above this many stimuli it is computed on
        a random subset of this size (the bandwidths still come from all).
    graphs : tuple of two NeighborGraph or None
        Neighbour graphs of X and Y already computed (e.g. for an
        intrinsic-dimension profile) with k_max >= max(ks); skips the queries.
    random_state : int or None
        Chooses that subset.
    device : {None, "cpu", "cuda"}
        Where the two neighbour queries run (None: the CPU). RBF-CKA stays on
        the CPU: its kernels are at most max_kernel_samples^2 and cost far
        less than moving them would save.

    Returns
    -------
    profile : SimilarityProfile

    Raises
    ------
    ValueError
        If the stimulus counts differ, inputs contain NaNs, k >= n_samples or
        a measure is unknown.
    """
    unknown = [m for m in measures if m not in _PROFILE_MEASURES]
    if unknown:
        raise ValueError(f"measures must be among {_PROFILE_MEASURES}, got {unknown}.")
    X, Y = _check_pair(X, Y, min_samples=4)
    n = X.shape[0]
    ks_arr = scale_grid(n) if ks is None else _check_ks(ks, n)[0]
    k_max = int(ks_arr.max())
    if graphs is None:
        gx = nearest_neighbors(X, k_max, exact=False, device=device)
        gy = nearest_neighbors(Y, k_max, exact=False, device=device)
    else:
        gx, gy = _as_graph(graphs[0], k_max, "graphs[0]"), _as_graph(graphs[1], k_max, "graphs[1]")
        if gx.n_samples != n or gy.n_samples != n:
            raise ValueError(f"graphs must describe the n_samples={n} stimuli of X and Y, got "
                             f"{gx.n_samples} and {gy.n_samples}.")
    values, chance = {}, {}
    if "mutual_knn" in measures or "jaccard" in measures:
        counts = _shared_counts(gx.indices, gy.indices, ks_arr).astype(np.float64)
        if "mutual_knn" in measures:
            values["mutual_knn"] = (counts / ks_arr).mean(axis=0)
            chance["mutual_knn"] = knn_chance(ks_arr, n, "fraction")
        if "jaccard" in measures:
            values["jaccard"] = (counts / (2 * ks_arr - counts)).mean(axis=0)
            chance["jaccard"] = knn_chance(ks_arr, n, "jaccard")
    if "rbf_cka" in measures:
        sx = np.median(gx.distances[:, ks_arr - 1], axis=0)
        sy = np.median(gy.distances[:, ks_arr - 1], axis=0)
        rows = np.arange(n)
        if n > max_kernel_samples:
            rows = np.sort(check_random_state(random_state).choice(n, max_kernel_samples,
                                                                   replace=False))
        values["rbf_cka"] = _rbf_cka_sq(rdm(X[rows], "sqeuclidean"), rdm(Y[rows], "sqeuclidean"),
                                        sx, sy, unbiased=False)
    return SimilarityProfile(ks=ks_arr, values=values, chance=chance)


def compare_profiles(profile_a, profile_b, method="pearson"):
    """How alike two scale profiles are (e.g. a model's and the brain's).

    Parameters
    ----------
    profile_a, profile_b : array-like of shape (n_scales,)
        Values over the same scale grid.
    method : {"pearson", "spearman", "rmse", "cosine"}
        "pearson" and "spearman" compare the shape of the profiles only
        (their levels and units do not count); "rmse" counts level and shape;
        "cosine" compares the raw vectors.

    Returns
    -------
    similarity : float
        A correlation or cosine (higher = more alike) or an RMSE (lower =
        more alike).

    Raises
    ------
    ValueError
        If the profiles differ in length, contain NaNs, have fewer than 3
        scales (correlations), or the method is unknown.
    """
    a = check_array(profile_a, "profile_a", ndim=1)
    b = check_array(profile_b, "profile_b", ndim=1)
    if a.shape != b.shape:
        raise ValueError(f"profiles must share one scale grid: profile_a has {a.size} scales, "
                         f"profile_b has {b.size}.")
    if method == "rmse":
        return float(np.sqrt(np.mean((a - b) ** 2)))
    if method == "cosine":
        return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson', 'spearman', 'rmse' or 'cosine', got {method!r}.")
    if a.size < 3:
        raise ValueError(f"a correlation of profiles needs at least 3 scales, got {a.size}.")
    return _correlate(a, b, method)


# ---------------------------------------------------------------------------
# one representation across scales

def coarse_grain(X, ks, samples=None, graph=None, *, device=None):
    """Average each stimulus with its k nearest neighbours, at several k.

    x_i^(k) = (x_i + sum_{j in N_k(i)} x_j) / (k + 1): a block-averaging step
    that keeps the structure coarser than scale k and blurs what is finer.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    ks : array-like of int of shape (n_scales,)
    samples : array-like of int of shape (n_selected,) or None
        Stimuli to coarse-grain (their neighbours come from all stimuli);
        None means all.
    graph : NeighborGraph or None
        Precomputed neighbours of X with k_max >= max(ks).
    device : {None, "cpu", "cuda"}
        Where the neighbour query runs when no graph is given (None: the CPU);
        the averaging is a gather on the CPU.

    Returns
    -------
    Xk : ndarray of shape (n_scales, n_selected, n_features)

    Raises
    ------
    ValueError
        If X contains NaNs or k >= n_samples.
    """
    X = check_array(X, "X", min_samples=2)
    ks_arr, _ = _check_ks(ks, X.shape[0])
    order = np.argsort(ks_arr, kind="stable")
    g = _as_graph(X if graph is None else graph, int(ks_arr.max()), "graph", device)
    rows = np.arange(X.shape[0]) if samples is None else np.asarray(samples)
    ind = g.indices[rows]
    out = np.empty((ks_arr.size, rows.size, X.shape[1]))
    total = X[rows].copy()
    done = 0
    # running sums: each scale adds only the neighbours beyond the previous one
    for s in order:
        k = int(ks_arr[s])
        if k > done:
            total += X[ind[:, done:k]].sum(axis=1)
            done = k
        out[s] = total / (k + 1)
    return out


@dataclass
class CrossScaleSimilarity:
    """Structure of one representation compared across coarse-graining scales.

    Attributes
    ----------
    ks : ndarray of shape (n_scales,)
        Coarse-graining scales; 0 stands for the raw representation.
    neighborhood_similarity : ndarray of shape (n_scales, n_scales)
        Mean fraction of shared probe_k nearest neighbours (among the anchor
        stimuli) between the representation coarse-grained at k_a and at k_b.
    rdm_similarity : ndarray of shape (n_scales, n_scales)
        Spearman correlation between the RDMs (over the anchors) of the
        representation coarse-grained at k_a and at k_b.
    score : float
        The raw cross-scale similarity score: mean off-diagonal entry of
        neighborhood_similarity.
    rdm_score : float
        Mean off-diagonal entry of rdm_similarity (the global companion).
    chance : float
        The score's chance level: ``null_mean``, what Gaussian data with the
        same eigenspectrum reach (NaN when ``n_null=0``).
    samples : ndarray of shape (n_anchors,)
        The anchor stimuli used.
    floor : float
        probe_k / (n_anchors - 1): the overlap of two *unrelated* neighbourhood
        graphs. Not a chance level of this score: coarse-graining keeps part
        of any representation's neighbourhoods, so even isotropic noise scores
        far above it (0.26-0.67 for 200 points in 10-500 dimensions).
    null_scores : ndarray of shape (n_null,)
        The score of each covariance-matched Gaussian surrogate
        (:func:`scaleinv_utils.stats.gaussian_surrogate`), same anchors and grid.
    null_mean, null_sd : float
        Their mean and standard deviation.
    calibrated : float
        ``score - null_mean``: cross-scale similarity beyond what the
        eigenspectrum alone produces. 0 on average for Gaussian data of any
        covariance; positive for structure that persists across scales
        (hierarchical clusters, smooth manifolds); negative when coarse
        graining reshuffles neighbourhoods more than for a Gaussian (e.g. a
        structure that breaks between fine and coarse scales).
    z : float
        ``calibrated / null_sd``.
    p_value : float
        One-sided (1 + #{null >= score}) / (1 + n_null).
    """

    ks: np.ndarray
    neighborhood_similarity: np.ndarray
    rdm_similarity: np.ndarray
    score: float
    rdm_score: float
    chance: float
    samples: np.ndarray
    floor: float = np.nan
    null_scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    null_mean: float = np.nan
    null_sd: float = np.nan
    calibrated: float = np.nan
    z: float = np.nan
    p_value: float = np.nan


def _neighbourhood_similarity(X, ks_arr, samples, probe_k, include_raw, device=None):
    """The coarse-grained versions of X at the anchors and their shared-neighbour matrix."""
    Xk = coarse_grain(X, ks_arr, samples=samples, device=device)
    if include_raw:
        Xk = np.concatenate([X[samples][None], Xk])
    n_scales = Xk.shape[0]
    graphs = [nearest_neighbors(Z, probe_k, device=device) for Z in Xk]
    nn_sim = np.eye(n_scales)
    for a in range(n_scales):
        for b in range(a + 1, n_scales):
            nn_sim[a, b] = nn_sim[b, a] = _shared_counts(
                graphs[a].indices, graphs[b].indices, np.array([probe_k]))[:, 0].mean() / probe_k
    return Xk, nn_sim


def _off_diagonal_mean(M):
    return float(M[~np.eye(M.shape[0], dtype=bool)].mean())


def cross_scale_similarity(X, ks=None, n_anchors=1000, metric="euclidean", probe_k=10,
                           include_raw=True, random_state=None, n_null=10, device=None):
    """Similarity of a representation's structure with itself across scales, raw and calibrated.

    Comparing raw neighbourhoods of one representation at two scales is
    trivial (the k nearest neighbours are always among the k' > k nearest),
    so the representation is first *coarse-grained* at each scale k
    (:func:`coarse_grain`: every stimulus averaged with its k nearest
    neighbours, a renormalisation-like step that keeps what is coarser than k
    and blurs what is finer). Then, for every pair of scales (k_a, k_b), on a
    random set of anchor stimuli:

    * neighborhood_similarity[a, b]: the mean fraction of shared probe_k
      nearest neighbours (neighbours among the anchors) of the two
      coarse-grained versions;
    * rdm_similarity[a, b]: the Spearman correlation of their RDMs.

    **Cross-scale similarity score** = the mean of the off-diagonal entries
    of neighborhood_similarity, over all pairs of distinct scales of the grid
    (raw representation included). It is 1 when every stimulus keeps the same
    near neighbours however coarsely the representation is viewed.

    **Its chance level is not probe_k / (n_anchors - 1).** Averaging a point
    with its neighbours keeps it near them, so any representation, noise
    included, keeps many neighbourhoods: isotropic Gaussian noise scores
    0.26-0.67 depending on its dimension, and a Gaussian with the same
    covariance as a representation reproduces that representation's score
    to within a few hundredths for most real representations. The raw score
    mostly measures the eigenspectrum. The calibrated score therefore
    compares it with ``n_null`` covariance-matched Gaussian surrogates
    (:func:`scaleinv_utils.stats.gaussian_surrogate`: same n, same
    covariance, same anchors and grid): ``calibrated = score - null_mean``,
    0 on average for Gaussian data of any covariance (the surrogates are
    exchangeable with such data), positive for structure that persists
    across scales beyond the spectrum (hierarchical clusters, smooth
    manifolds), negative when neighbourhoods at fine and coarse scales
    disagree more than for a Gaussian.

    The RDM version is reported as ``rdm_score`` (raw only) but not used as
    the headline: a whole-RDM correlation is dominated by the largest
    distances (the global layout), which coarse-graining barely moves, so it
    is near 1 for almost any representation with clusters. All scores depend
    on the grid, probe_k and n_anchors: compare them only when these are shared.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    ks : array-like of int of shape (n_scales,) or None
        Defaults to ``scale_grid(n_samples, n_scales=10)``.
    n_anchors : int
        Anchor stimuli on which structures are compared (all if n_samples is
        smaller). Neighbours are searched among the anchors only.
    metric : str
        RDM metric of rdm_similarity, see :func:`rdm`.
    probe_k : int
        Neighbourhood size of the neighbourhood comparison, < n_anchors.
    include_raw : bool
        Put the un-coarse-grained representation (scale k = 0) first.
    random_state : int, numpy Generator or None
        Chooses the anchors, then the surrogates.
    n_null : int
        Covariance-matched Gaussian surrogates for the calibration (0: raw
        score only; the null fields are NaN). Each costs about one raw score
        without the RDMs; 10 gives a null mean to about null_sd / 3.
    device : {None, "cpu", "cuda"}
        Where the neighbour queries run (None: the CPU): the one over all
        n_samples for coarse-graining (the main cost, repeated for every
        surrogate) and those among the anchors. The RDM comparison, over at
        most n_anchors^2 / 2 pairs, stays on the CPU.

    Returns
    -------
    result : CrossScaleSimilarity

    Raises
    ------
    ValueError
        If X contains NaNs, a scale is >= n_samples, or n_null < 0.
    """
    X = check_array(X, "X", min_samples=4)
    n = X.shape[0]
    if int(n_null) < 0:
        raise ValueError(f"n_null must be a non-negative integer, got {n_null}.")
    ks_arr = scale_grid(n, n_scales=10) if ks is None else _check_ks(ks, n)[0]
    rng = check_random_state(random_state)
    samples = (np.arange(n) if n <= n_anchors
               else np.sort(rng.choice(n, n_anchors, replace=False)))
    check_scale(probe_k, samples.size, "probe_k")
    Xk, nn_sim = _neighbourhood_similarity(X, ks_arr, samples, probe_k, include_raw, device)
    if include_raw:
        ks_arr = np.concatenate([[0], ks_arr])
    ranks = np.stack([_rank(upper_triangle(rdm(Z, metric))) for Z in Xk])
    ranks -= ranks.mean(axis=1, keepdims=True)
    ranks /= np.linalg.norm(ranks, axis=1, keepdims=True)
    rdm_sim = ranks @ ranks.T
    score = _off_diagonal_mean(nn_sim)
    extra = {}
    if int(n_null) > 0:
        null = np.array([_off_diagonal_mean(_neighbourhood_similarity(
            Z, ks_arr[1:] if include_raw else ks_arr, samples, probe_k, include_raw, device)[1])
            for Z in _stats.iter_gaussian_surrogates(X, int(n_null), random_state=rng)])
        cal = _stats.calibrate(score, null, alternative="greater")
        extra = dict(null_scores=null, null_mean=cal.null_mean, null_sd=cal.null_sd,
                     calibrated=cal.calibrated, z=cal.z, p_value=cal.p_value)
    return CrossScaleSimilarity(ks=ks_arr, neighborhood_similarity=nn_sim, rdm_similarity=rdm_sim,
                                score=score, rdm_score=_off_diagonal_mean(rdm_sim),
                                chance=extra.get("null_mean", np.nan), samples=samples,
                                floor=probe_k / (samples.size - 1), **extra)


# ---------------------------------------------------------------------------
# inference: permutation null and bootstrap

@dataclass
class PermutationResult:
    """A score and its null distribution under shuffled stimulus labels.

    Attributes
    ----------
    score : float or ndarray of shape (n_scales,)
    null : ndarray of shape (n_permutations,) or (n_permutations, n_scales)
    p_value : float or ndarray of shape (n_scales,)
        (1 + #{null >= score}) / (1 + n_permutations): one-sided, never 0
        (:func:`scaleinv_utils.stats.permutation_pvalue`).
    null_mean : float or ndarray of shape (n_scales,)
    calibrated : float or ndarray of shape (n_scales,)
        score - null_mean: the part of the score above what unrelated
        representations of this size and dimension reach.
    calibrated_ratio : float or ndarray of shape (n_scales,)
        score / null_mean (meaningful for scores whose null is positive,
        e.g. kNN overlap and CKA).
    """

    score: object
    null: np.ndarray
    p_value: object
    null_mean: object
    calibrated: object
    calibrated_ratio: object


def _take_rows(A, idx):
    if isinstance(A, NeighborGraph):
        return permute_graph(A, idx)
    return np.asarray(A)[idx]


def permutation_test(statistic, X, Y, n_permutations=200, random_state=None):
    """Null distribution of a similarity score under shuffled stimulus labels.

    The rows of Y are permuted (the stimuli no longer correspond), the
    statistic recomputed; this keeps each representation's own geometry,
    dimension and size, which inflate raw scores like CKA and mutual-kNN,
    and destroys only the correspondence. Report ``calibrated``, not the raw
    score, when comparing models of different size.

    Parameters
    ----------
    statistic : callable
        ``statistic(X, Y) -> float or ndarray of shape (n_scales,)``.
    X : array-like of shape (n_samples, ...) or NeighborGraph
    Y : array-like of shape (n_samples, ...) or NeighborGraph
        A NeighborGraph is permuted without a new neighbour query.
    n_permutations : int
    random_state : int or None

    Returns
    -------
    result : PermutationResult

    Raises
    ------
    ValueError
        If the stimulus counts differ or n_permutations < 1.
    """
    n = check_consistent_samples(X=np.empty((_n_samples(X), 0)), Y=np.empty((_n_samples(Y), 0)))
    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations={n_permutations} must be at least 1.")
    rng = check_random_state(random_state)
    score = np.asarray(statistic(X, Y), dtype=float)
    null = np.stack([np.asarray(statistic(X, _take_rows(Y, rng.permutation(n))), dtype=float)
                     for _ in range(int(n_permutations))])
    p = _stats.permutation_pvalue(score, null, alternative="greater")
    null_mean = null.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = score / null_mean

    def out(v):
        return float(v) if np.ndim(v) == 0 else v

    return PermutationResult(score=out(score), null=null, p_value=out(p), null_mean=out(null_mean),
                             calibrated=out(score - null_mean), calibrated_ratio=out(ratio))


BootstrapResult = _stats.BootstrapResult  # one result type; ``.distribution`` = ``.samples``


def bootstrap_ci(statistic, *arrays, n_bootstraps=200, confidence=0.95, random_state=None):
    """Percentile bootstrap interval over stimuli.

    Stimuli (rows) are resampled with replacement, the same rows in every
    array. Repeated stimuli are at distance 0 from each other, which makes
    them each other's nearest neighbours in every representation: for kNN
    measures, bootstrap the per-stimulus overlaps instead, e.g.
    ``bootstrap_ci(lambda o: o.mean(0), knn_overlap(X, Y, ks, per_sample=True))``.
    Computed by :func:`scaleinv_utils.stats.bootstrap` (resamples whose
    statistic is NaN are left out of the interval).

    Parameters
    ----------
    statistic : callable
        ``statistic(*resampled_arrays) -> float or ndarray``.
    *arrays : array-like of shape (n_samples, ...)
    n_bootstraps : int
    confidence : float
        In (0, 1).
    random_state : int or None

    Returns
    -------
    result : scaleinv_utils.stats.BootstrapResult
        ``estimate``, ``low``, ``high`` and the resampled statistics
        ``samples`` (also as ``distribution``) of shape (n_bootstraps, ...).

    Raises
    ------
    ValueError
        If the arrays differ in n_samples, or confidence is outside (0, 1).
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must be between 0 and 1.")
    return _stats.bootstrap(lambda *a: np.asarray(statistic(*a), dtype=float), *arrays,
                            n_resamples=int(n_bootstraps), level=confidence,
                            random_state=random_state)


# ---------------------------------------------------------------------------
# noise control: do neighbourhoods replicate across independent halves of the trials?

__all__ += ["neighborhood_reliability", "NeighborhoodReliability"]


@dataclass
class NeighborhoodReliability:
    """Split-half reliability of each stimulus's k nearest neighbours, per scale.

    Attributes
    ----------
    ks : ndarray of shape (n_scales,)
    overlap : ndarray of shape (n_scales,)
        Mean over splits of the kNN overlap (fraction of shared neighbours,
        :func:`knn_overlap`) between the two halves.
    overlap_splits : ndarray of shape (n_splits, n_scales)
        The overlap of each random split.
    chance : ndarray of shape (n_scales,)
        k / (n_images - 1): the overlap of unrelated halves (pure noise).
    normalized : ndarray of shape (n_scales,)
        (overlap - chance) / (1 - chance): 0 at chance, 1 when the halves
        have the same neighbourhoods (noise-free data).
    n_images : int
        Images with at least two trials (the rest are left out).
    n_per_half : ndarray of shape (n_images,)
        Trials averaged in each half.
    """

    ks: np.ndarray
    overlap: np.ndarray
    overlap_splits: np.ndarray
    chance: np.ndarray
    normalized: np.ndarray
    n_images: int
    n_per_half: np.ndarray


def neighborhood_reliability(trial_betas, trial_image, ks, *, n_splits=5, random_state=None,
                             device=None):
    """Do the stimuli's neighbourhoods replicate across two independent halves of the trials?

    The trials of every image are split at random into two halves
    (:func:`scaleinv_utils.reliability.split_half_average`), each half is
    averaged, and the kNN overlap of the two halves is measured at every
    scale k. Noise-free responses give the same neighbourhoods in both
    halves (overlap 1); pure noise gives independent ones (overlap k /
    (n_images - 1)). Between the two, the profile over k says at which scales
    the measured geometry is stimulus-driven and at which it is noise. The
    same function runs on a model's features given simulated trials
    (:func:`scaleinv_utils.reliability.add_matched_noise` with
    ``return_trials=True``), so brain and model are compared at one noise level.

    Parameters
    ----------
    trial_betas : array-like of shape (n_trials_total, n_voxels)
    trial_image : array-like of shape (n_trials_total,)
        Image id of each trial.
    ks : int or array-like of int of shape (n_scales,)
        Neighbourhood sizes, each smaller than the number of images.
    n_splits : int
        Random splits averaged (each costs two neighbour queries).
    random_state : int, numpy Generator or None
    device : {None, "cpu", "cuda"}
        Where the neighbour queries run (None: the CPU).

    Returns
    -------
    result : NeighborhoodReliability

    Raises
    ------
    ValueError
        If no image has two trials, a scale is too large, or n_splits < 1.
    """
    from .reliability import split_half_average

    if int(n_splits) < 1:
        raise ValueError(f"n_splits must be at least 1, got {n_splits}.")
    rng = check_random_state(random_state)
    splits, n_per_half, n_img = [], None, None
    for _ in range(int(n_splits)):
        a, b, ids, n_per_half = split_half_average(trial_betas, trial_image, random_state=rng)
        n_img = ids.size
        ks_arr, _ = _check_ks(ks, n_img)
        splits.append(np.atleast_1d(knn_overlap(a, b, ks_arr, device=device)))
    splits = np.stack(splits)
    overlap = splits.mean(axis=0)
    chance = np.atleast_1d(knn_chance(ks_arr, n_img))
    return NeighborhoodReliability(ks=ks_arr, overlap=overlap, overlap_splits=splits, chance=chance,
                                   normalized=(overlap - chance) / (1 - chance), n_images=int(n_img),
                                   n_per_half=n_per_half)
