"""Intrinsic dimension across scales.

The intrinsic dimension (ID) of a cloud of points is the number of directions
in which it really extends. It depends on the scale at which one looks: at the
scale of the measurement noise every direction of the ambient space is filled,
at the scale of the curvature a curved manifold looks higher dimensional than
it is. Every local estimator here therefore takes a scale, the neighbourhood
size ``k``, and :func:`id_profile` evaluates all of them on a log grid of ``k``
from ONE neighbour query (:func:`scaleinv_utils.neighbors.nearest_neighbors`
for the largest ``k``, sliced for every smaller one).

Local estimators at scale ``k``
    :func:`gride` (Denti et al. 2022; ratio of the 2k-th to the k-th neighbour
    distance, maximum likelihood), :func:`twonn` (Facco et al. 2017; ratio of
    the (k+1)-th to the k-th distance, k=1 being the original TwoNN),
    :func:`mle` (Levina & Bickel 2005, with MacKay & Ghahramani's averaging)
    and :func:`local_pca` (number of components for a variance fraction, and
    the local participation ratio).
Global companions
    :func:`participation_ratio`, :func:`eigenspectrum` and
    :func:`powerlaw_exponent` (Stringer et al. 2019).
Profiles
    :func:`id_profile` (all estimators, all scales), :func:`gride_scaling`
    (DADApy's doubling grid), :func:`dimensional_stability` and
    :func:`calibrated_stability` (against Gaussians with the same covariance).

Duplicate rows make neighbour distances zero, and every distance-ratio
estimator divides by them. Functions given data ``X`` therefore drop
duplicate rows (keeping the first copy) with a warning; functions given only a
neighbour graph raise an error if it has zero distances.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
from scipy.special import digamma

from ._validation import check_array, check_consistent_samples, check_random_state, check_scale
from .neighbors import NeighborGraph, count_duplicates, nearest_neighbors, scale_grid

__all__ = [
    "IDEstimate", "IDProfile", "PowerLawFit",
    "gride", "twonn", "mle", "local_pca",
    "id_profile", "gride_scaling", "dimensional_stability", "calibrated_stability",
    "CalibratedStability",
    "participation_ratio", "eigenspectrum", "powerlaw_exponent",
    "ESTIMATORS", "STABILITY_METHODS",
]

#: Names accepted by :func:`id_profile`.
ESTIMATORS = ("gride", "twonn", "mle", "lpca", "lpca_pr")
#: Names accepted by :func:`dimensional_stability`.
STABILITY_METHODS = ("cv", "slope", "relative_slope", "range")


# --------------------------------------------------------------------------- results

@dataclass
class IDEstimate:
    """An intrinsic-dimension estimate at one scale.

    Attributes
    ----------
    dimension : float
        The averaged (or pooled maximum-likelihood) estimate.
    k : int
        The scale (number of neighbours).
    estimator : str
        Which estimator produced it.
    pointwise : ndarray of shape (n_samples,) or None
        Per-point estimates, for estimators that have them (mle, lpca); for
        local PCA with ``n_centers`` the values at the centres only.
    stderr : float or None
        Asymptotic standard error (inverse Fisher information) for the
        likelihood estimators gride and twonn.
    ci : tuple of float or None
        Bootstrap percentile interval over points, when ``n_bootstrap > 0``.
    """

    dimension: float
    k: int
    estimator: str
    pointwise: np.ndarray | None = field(default=None, repr=False)
    stderr: float | None = None
    ci: tuple | None = None

    def __float__(self):
        return float(self.dimension)


@dataclass
class IDProfile:
    """Intrinsic dimension of every estimator at every scale.

    Attributes
    ----------
    ks : ndarray of shape (n_scales,)
        Neighbourhood sizes.
    ids : dict of str to ndarray of shape (n_scales,)
        ID(k) per estimator.
    ci_low, ci_high : dict of str to ndarray of shape (n_scales,)
        Bootstrap percentile bounds (empty dicts when ``n_bootstrap=0``).
    radius : ndarray of shape (n_scales,)
        Mean distance to the k-th neighbour: the scale in the data's units.
    n_samples : int
        Points used (after dropping duplicates).
    n_duplicates : int
        Duplicate rows dropped.
    lpca_centers : ndarray of int of shape (n_scales,) or None
        Centres that local PCA averaged at each scale (None without local PCA).
    stderr : dict of str to ndarray of shape (n_scales,)
        Standard error of the local PCA means as estimates of the mean over
        every point of this data set (Monte Carlo error of the centres: 0
        where every point is a centre). ``ci_low``/``ci_high`` answer another
        question: how much an estimate would vary over resampled data points
        (a bootstrap over points, or over centres for local PCA).
    """

    ks: np.ndarray
    ids: dict
    ci_low: dict = field(default_factory=dict)
    ci_high: dict = field(default_factory=dict)
    radius: np.ndarray | None = None
    n_samples: int = 0
    n_duplicates: int = 0
    lpca_centers: np.ndarray | None = None
    stderr: dict = field(default_factory=dict)

    @property
    def estimators(self):
        return tuple(self.ids)

    def __getitem__(self, estimator):
        return self.ids[estimator]

    def stability(self, estimator="gride", method="cv"):
        """Dimensional stability of one estimator's profile; see :func:`dimensional_stability`."""
        if estimator not in self.ids:
            raise KeyError(f"estimator={estimator!r} is not in this profile; it has {self.estimators}.")
        return dimensional_stability(self.ids[estimator], self.ks, method=method)

    def to_frame(self):
        """The profile as a pandas DataFrame indexed by k (pandas imported on demand)."""
        import pandas as pd

        frame = pd.DataFrame(self.ids, index=pd.Index(self.ks, name="k"))
        frame.insert(0, "radius", self.radius)
        return frame


@dataclass
class PowerLawFit:
    """Power-law fit lambda_n ~ n**(-alpha) of an eigenspectrum.

    Attributes
    ----------
    alpha : float
        Exponent (positive for a decaying spectrum).
    intercept : float
        log10 of the fitted lambda at rank 1.
    fit_range : tuple of int
        First and last rank (1-based, inclusive) used in the fit.
    r2 : float
        R^2 of the straight-line fit in log-log coordinates.
    """

    alpha: float
    intercept: float
    fit_range: tuple
    r2: float


# --------------------------------------------------------------------------- input handling

def _check_constant(X, name="X"):
    if np.all(np.ptp(X, axis=0) == 0):
        raise ValueError(
            f"{name} is constant (all {X.shape[0]} rows are identical): its intrinsic dimension "
            "is undefined.")


def _n_points(X, graph, name="X"):
    """Number of points, after validating X (dtype, shape, finiteness) before any scale check."""
    if X is None:
        if graph is None:
            raise ValueError("Pass the data X or a precomputed NeighborGraph as graph=.")
        return graph.n_samples
    return check_array(X, name, min_samples=3).shape[0]


def _dedupe(X, name="X"):
    """Drop exact duplicate rows (first copy kept, order preserved) with a warning."""
    n_dup = count_duplicates(X)
    if n_dup == 0:
        return X, 0
    _, first = np.unique(X, axis=0, return_index=True)
    keep = np.sort(first)
    warnings.warn(
        f"{name} has {n_dup} duplicate rows; distance-ratio estimators divide by neighbour "
        f"distances, so the duplicates are dropped (first copy kept): n_samples "
        f"{X.shape[0]} -> {keep.size}.", UserWarning, stacklevel=3)
    return X[keep], n_dup


def _prepare(X, k_needed, graph=None, device=None, name="X"):
    """Validate X, drop duplicates, return (X, graph, n_duplicates).

    The neighbour graph reveals duplicates for free (a zero first distance), so
    the (sorting) duplicate count runs only when one is suspected.
    """
    if X is None:
        if graph is None:
            raise ValueError("Pass the data X or a precomputed NeighborGraph as graph=.")
        return None, _check_graph(graph, k_needed), 0
    X = check_array(X, name, min_samples=3)
    _check_constant(X, name)
    n_dup = 0
    if graph is None:
        check_scale(k_needed, X.shape[0], "largest neighbour rank needed")
        graph = nearest_neighbors(X, k_needed, device=device)
        if np.any(graph.distances[:, 0] == 0):
            X, n_dup = _dedupe(X, name)
            if X.shape[0] < 3:
                raise ValueError(f"{name} has only {X.shape[0]} distinct rows; at least 3 are needed.")
            check_scale(k_needed, X.shape[0], "largest neighbour rank needed (after dropping duplicates)")
            graph = nearest_neighbors(X, k_needed, device=device)
    else:
        if graph.n_samples != X.shape[0]:
            raise ValueError(
                f"graph describes {graph.n_samples} points but {name} has n_samples={X.shape[0]}.")
        _check_graph(graph, k_needed)
    return X, graph, n_dup


def _check_graph(graph, k_needed):
    if not isinstance(graph, NeighborGraph):
        raise TypeError(f"graph must be a NeighborGraph, got {type(graph).__name__}.")
    if graph.k_max < k_needed:
        raise ValueError(
            f"graph has k_max={graph.k_max} neighbours but this estimate needs {k_needed}; "
            "recompute it with nearest_neighbors(X, k_max).")
    if np.any(graph.distances[:, 0] <= 0):
        n_zero = int(np.sum(graph.distances[:, 0] <= 0))
        raise ValueError(
            f"graph has {n_zero} points at distance 0 from their nearest neighbour (duplicate "
            "rows); drop duplicates first (see neighbors.count_duplicates) or pass X instead.")
    return graph


def _check_ks(ks, n_samples, minimum=1, name="k"):
    ks = np.atleast_1d(np.asarray(ks))
    if ks.ndim != 1 or ks.size == 0 or not np.issubdtype(ks.dtype, np.integer):
        raise TypeError(f"{name} must be an integer or a 1-D array of integers, got {ks!r}.")
    for k in ks:
        check_scale(int(k), n_samples, name, minimum=minimum)
    if np.any(np.diff(ks) <= 0):
        raise ValueError(f"{name} must be strictly increasing, got {ks.tolist()}.")
    return ks.astype(int)


def _bootstrap_indices(n_points, n_bootstrap, random_state):
    rng = check_random_state(random_state)
    return rng.integers(0, n_points, size=(n_bootstrap, n_points))


def _percentiles(samples, confidence):
    from .stats import percentile_interval
    return np.asarray(percentile_interval(samples, confidence, axis=0))


# --------------------------------------------------------------------------- Gride / TwoNN

def _gride_mle(log_mu, n1, n2, n_iter=60, tol=1e-10):
    """Maximum-likelihood ID from log ratios, vectorised over leading axes.

    The log-likelihood of mu = r_{n2}/r_{n1} (Denti et al. 2022, eq. 7) is
    n log d + (n2-n1-1) sum log(mu^d - 1) - ((n2-1) d + 1) sum log mu + const.
    As DADApy and scikit-dimension do, n log d is replaced by (n - 1) log d,
    which makes the n1 = 1 case the unbiased Pareto estimate (n - 1)/sum log mu.
    The score g(d) decreases strictly from +inf to -n1 sum log mu, so Newton's
    method on log d from the moment estimate converges to the unique root.

    Parameters
    ----------
    log_mu : ndarray of shape (..., n_points)
    n1, n2 : int

    Returns
    -------
    d : ndarray of shape (...)
    fisher : ndarray of shape (...)
        Observed Fisher information at the estimate.
    """
    L = log_mu
    n = L.shape[-1]
    sum_L = L.sum(-1)
    # E[log mu] = (psi(n2) - psi(n1)) / d under the model: a moment estimate to start from.
    d = (n - 1) * (digamma(n2) - digamma(n1)) / sum_L
    m = n2 - n1 - 1
    if m == 0:  # Pareto case (consecutive ranks): closed form
        d = (n - 1) / (n1 * sum_L)
        return d, n / d ** 2
    s = np.log(d)
    for _ in range(n_iter):
        d = np.exp(s)[..., None]
        t = d * L
        score = (n - 1) / d[..., 0] + m * np.sum(L / -np.expm1(-t), -1) - (n2 - 1) * sum_L
        info = (n - 1) / d[..., 0] ** 2 + m * np.sum((L / (2 * np.sinh(t / 2))) ** 2, -1)
        step = score / (info * d[..., 0])  # Newton step in s = log d
        s = s + np.clip(step, -1.0, 1.0)
        if np.all(np.abs(step) < tol):
            break
    d = np.exp(s)
    t = d[..., None] * L
    # Observed information with n / d^2, DADApy's convention for the standard error.
    info = n / d ** 2 + m * np.sum((L / (2 * np.sinh(t / 2))) ** 2, -1)
    return d, info


def _log_ratio(distances, n1, n2):
    """log(r_{n2} / r_{n1}) per point; ranks are 1-based, distances self-excluded."""
    log_mu = np.log(distances[:, n2 - 1]) - np.log(distances[:, n1 - 1])
    ties = log_mu <= 0
    if np.any(ties):
        # Tied distances (r_n1 == r_n2) carry no information on d and break the likelihood.
        log_mu = log_mu[~ties]
        if log_mu.size < 2:
            raise ValueError(f"Neighbour ranks ({n1}, {n2}) are tied for almost every point.")
    return log_mu


def _ratio_estimate(log_mu, n1, n2, k, name, n_bootstrap, confidence, random_state):
    d, info = _gride_mle(log_mu, n1, n2)
    ci = None
    if n_bootstrap:
        boot = _bootstrap_indices(log_mu.size, n_bootstrap, random_state)
        d_boot, _ = _gride_mle(log_mu[boot], n1, n2)
        ci = tuple(float(v) for v in _percentiles(d_boot, confidence))
    return IDEstimate(float(d), int(k), name, stderr=float(1 / np.sqrt(info)), ci=ci)


def gride(X=None, k=1, *, graph=None, n_bootstrap=0, confidence=0.95, random_state=None,
          device=None):
    """Gride intrinsic dimension at scale k (Denti et al. 2022).

    For every point, mu = r_{2k} / r_k is the ratio of its distances to its
    2k-th and k-th nearest neighbours. If the density is constant on the scale
    of r_{2k}, mu has density

    .. math:: f(\\mu) = \\frac{d\\,(\\mu^d - 1)^{k-1}}{B(k, k)\\,\\mu^{(2k-1)d + 1}},

    and the ID is its maximum-likelihood estimate over the points (pooled, not
    averaged; with (n - 1) log d in the likelihood as in DADApy). k=1 is TwoNN's maximum-likelihood estimate. Raising k probes
    larger scales without decimating the data (DADApy's ``return_id_scaling_gride``
    uses k = 1, 2, 4, ... with the same likelihood; see :func:`gride_scaling`).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or None
        Points; None when ``graph`` is given.
    k : int
        Scale: the smaller neighbour rank; the larger is 2k.
    graph : NeighborGraph or None
        Precomputed neighbours of X with k_max >= 2k (reuse one query).
    n_bootstrap : int
        Bootstrap resamples of the points for a percentile interval (0: none).
    confidence : float
        Coverage of the interval.
    random_state : int, numpy Generator or None
        Seeds the bootstrap.
    device : {None, "cpu", "cuda"}
        Device of the neighbour search.

    Returns
    -------
    estimate : IDEstimate
        ``dimension``, ``stderr`` (inverse Fisher information) and ``ci``.

    Raises
    ------
    ValueError
        If X has NaNs, is constant, or 2k >= n_samples; or ``graph`` has zero distances.
    """
    n = _n_points(X, graph)
    k = check_scale(k, n, "k")
    X, graph, _ = _prepare(X, 2 * k, graph, device)
    log_mu = _log_ratio(graph.distances, k, 2 * k)
    return _ratio_estimate(log_mu, k, 2 * k, k, "gride", n_bootstrap, confidence, random_state)


def twonn(X=None, k=1, *, graph=None, n_bootstrap=0, confidence=0.95, random_state=None,
          device=None):
    """TwoNN intrinsic dimension (Facco et al. 2017), generalised to rank k.

    mu = r_{k+1} / r_k. With constant density on that scale, mu**(k d) follows a
    Pareto law, so log mu is exponential with rate k d and the
    maximum-likelihood estimate, with n - 1 for n to remove its bias, is

    .. math:: \\hat d = \\frac{n - 1}{k \\sum_i \\log \\mu_i}.

    k=1 is the original TwoNN (here its maximum-likelihood form; Facco et al.'s
    line fit discarding the 10 % largest ratios gives nearly the same value).
    Larger k reads the same single-ratio statistic at a larger scale (Denti et
    al. 2022 with n2 = n1 + 1); it is noisier than :func:`gride` at the same
    scale because one consecutive ratio carries less information.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or None
        Points; None when ``graph`` is given.
    k : int
        Rank of the nearer neighbour.
    graph : NeighborGraph or None
        Precomputed neighbours with k_max >= k + 1.
    n_bootstrap, confidence, random_state, device
        As in :func:`gride`.

    Returns
    -------
    estimate : IDEstimate

    Raises
    ------
    ValueError
        As in :func:`gride`.
    """
    n = _n_points(X, graph)
    k = check_scale(k, n - 1, "k")
    X, graph, _ = _prepare(X, k + 1, graph, device)
    log_mu = _log_ratio(graph.distances, k, k + 1)
    return _ratio_estimate(log_mu, k, k + 1, k, "twonn", n_bootstrap, confidence, random_state)


def gride_scaling(X=None, range_max=64, *, graph=None, device=None):
    """Gride ID on DADApy's doubling grid of scales.

    Reproduces the convention of DADApy's ``Data.return_id_scaling_gride``:
    scales k = 1, 2, 4, ..., each using the ratio of the 2k-th to the k-th
    neighbour distance, with 2k <= range_max.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or None
    range_max : int
        Largest neighbour rank used.
    graph : NeighborGraph or None
    device : {None, "cpu", "cuda"}

    Returns
    -------
    ids : ndarray of shape (n_scales,)
    stderr : ndarray of shape (n_scales,)
    ks : ndarray of shape (n_scales,)
        The smaller rank k of each pair (DADApy's ``return_ranks=True`` gives 2k).
    radius : ndarray of shape (n_scales,)
        Mean of the k-th and 2k-th neighbour distances over points: DADApy's
        default scale axis ``rs_scaling``.
    """
    n = _n_points(X, graph)
    range_max = check_scale(min(int(range_max), n - 1), n, "range_max", minimum=2)
    ks = 2 ** np.arange(int(np.log2(range_max)))
    X, graph, _ = _prepare(X, int(2 * ks[-1]), graph, device)
    ids, errs, radius = [], [], []
    for k in ks:
        est = _ratio_estimate(_log_ratio(graph.distances, k, 2 * k), k, 2 * k, k, "gride", 0, 0.95, None)
        ids.append(est.dimension)
        errs.append(est.stderr)
        radius.append(np.mean(graph.distances[:, [k - 1, 2 * k - 1]]))
    return np.array(ids), np.array(errs), ks, np.array(radius)


# --------------------------------------------------------------------------- Levina-Bickel

def _mle_pointwise_all(distances, ks, unbiased):
    """Levina-Bickel pointwise estimates for every k at once, from cumulative log distances.

    m_k(x) = (k - 1) / sum_{j<k} log(r_k / r_j), with (k - 2) when unbiased.
    """
    log_r = np.log(distances[:, : ks.max()])
    cum = np.cumsum(log_r, axis=1)
    out = np.empty((distances.shape[0], ks.size))
    for s, k in enumerate(ks):
        denom = (k - 1) * log_r[:, k - 1] - cum[:, k - 2]
        with np.errstate(divide="ignore"):
            out[:, s] = (k - 2 if unbiased else k - 1) / denom
    return out


def _combine_mle(pointwise, average, axis=0):
    if average == "mackay":
        return 1.0 / np.mean(1.0 / pointwise, axis=axis)
    if average == "mean":
        return np.mean(pointwise, axis=axis)
    if average == "median":
        return np.median(pointwise, axis=axis)
    raise ValueError(f"average must be 'mackay', 'mean' or 'median', got {average!r}.")


def mle(X=None, k=10, *, graph=None, average="mackay", unbiased=False, n_bootstrap=0,
        confidence=0.95, random_state=None, device=None):
    """Levina-Bickel maximum-likelihood intrinsic dimension at scale k.

    Around each point x the k neighbour distances r_1 <= ... <= r_k give

    .. math:: \\hat m_k(x) = \\Big[\\frac{1}{k-1}\\sum_{j=1}^{k-1}\\log\\frac{r_k}{r_j}\\Big]^{-1}.

    Averaging: Levina & Bickel (2005) averaged the pointwise estimates
    (``average="mean"``). MacKay & Ghahramani (2005) pointed out that the
    quantity that is unbiased and adds up across points is the inverse 1/m_k(x)
    (a mean of log-ratios), so the pooled estimate is the inverse of the mean
    inverse (``average="mackay"``, the default, as in scikit-dimension's
    ``comb="mle"``); the plain mean is biased upward, more so for small k.
    ``unbiased=True`` uses k - 2 in place of k - 1 in the numerator, which
    makes each pointwise estimate unbiased for Poisson-process neighbours.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or None
    k : int
        Number of neighbours, at least 2.
    graph : NeighborGraph or None
        Precomputed neighbours with k_max >= k.
    average : {"mackay", "mean", "median"}
    unbiased : bool
    n_bootstrap, confidence, random_state, device
        As in :func:`gride`.

    Returns
    -------
    estimate : IDEstimate
        With ``pointwise`` of shape (n_samples,).

    Raises
    ------
    ValueError
        As in :func:`gride`, or k < 2 (k < 3 when unbiased).
    """
    n = _n_points(X, graph)
    k = check_scale(k, n, "k", minimum=3 if unbiased else 2)
    X, graph, _ = _prepare(X, k, graph, device)
    pw = _mle_pointwise_all(graph.distances, np.array([k]), unbiased)[:, 0]
    dim = float(_combine_mle(pw, average))
    ci = None
    if n_bootstrap:
        boot = _bootstrap_indices(pw.size, n_bootstrap, random_state)
        ci = tuple(float(v) for v in _percentiles(_combine_mle(pw[boot], average, axis=1), confidence))
    return IDEstimate(dim, k, "mle", pointwise=pw, ci=ci)


# --------------------------------------------------------------------------- local PCA

def _lpca_all(X, indices, ks, fraction, centers, need_eig, max_bytes=2e8, device=None):
    """Local PCA at every scale for the given centres.

    For a centre, the neighbourhoods at the scales are nested (the first k of
    one sorted list), so one Gram matrix of the largest neighbourhood serves
    every scale: its leading k x k block, double-centred, has the nonzero
    eigenvalues of the k-point local covariance (times k). The Gram is
    k x k instead of D x D, which is the cheaper side whenever k < D.

    With a ``device`` other than the CPU, the gather of the neighbourhoods and
    the Gram products (the n_centers * k^2 * D part, in float64) run there and
    only the k x k Gram blocks come back. The eigenvalues stay on the CPU:
    torch's CUDA ``eigh`` sends a stack of matrices larger than 32 x 32 to a
    loop of one cuSOLVER call per matrix (its batched path is gated to
    n <= 32; pytorch/pytorch's report of that cliff measured about 4.7 ms per
    128 x 128 float64 matrix on an RTX 4080 with torch 2.10), slower than
    LAPACK on two CPU cores; the participation ratio needs no eigenvalues.

    Returns
    -------
    n_frac : ndarray of shape (n_centers, n_scales) or None
    pr : ndarray of shape (n_centers, n_scales)
    """
    import torch
    from threadpoolctl import threadpool_limits

    k_top = int(ks.max())
    n_c, n_features = centers.size, X.shape[1]
    pr = np.empty((n_c, ks.size))
    n_frac = np.empty((n_c, ks.size)) if need_eig else None
    chunk = max(1, int(max_bytes // (8 * k_top * max(n_features, k_top))))
    X = np.ascontiguousarray(X, dtype=np.float64)
    on_device = device is not None and str(device) != "cpu"
    if on_device:
        Xd = torch.as_tensor(X, device=device)
        ind_d = torch.as_tensor(np.ascontiguousarray(indices[:, :k_top]), device=device)
    # LAPACK is single-threaded on small matrices; two halves of each batch run in parallel.
    n_workers = min(2, os.cpu_count() or 1) if need_eig else 1
    with ThreadPoolExecutor(n_workers) as pool:
        for start in range(0, n_c, chunk):
            c = centers[start:start + chunk]
            # Differences to the centre point: translation drops out and cancellation is small.
            if on_device:
                c_d = torch.as_tensor(c, device=device)
                Yt = Xd[ind_d[c_d]] - Xd[c_d][:, None, :]
                G = torch.bmm(Yt, Yt.transpose(1, 2)).cpu().numpy()
                del Yt
            else:
                Y = np.take(X, indices[c, :k_top], axis=0)  # 2x faster than torch's indexing here
                Y -= X[c][:, None, :]
                Yt = torch.from_numpy(Y)
                G = torch.bmm(Yt, Yt.transpose(1, 2)).numpy()  # 2x faster than numpy's stacked matmul
                del Y, Yt
            # BLAS threads only slow LAPACK down on a stack of small matrices; the limit is
            # process-wide, so it is set here, around the workers, never inside them.
            with threadpool_limits(1, user_api="blas") if need_eig else nullcontext():
                frac_rows = None if n_frac is None else n_frac[start:start + chunk]
                _lpca_scales(G, ks, fraction, need_eig, pool, n_workers, pr[start:start + chunk],
                             frac_rows)
    return n_frac, pr


def _lpca_scales(G, ks, fraction, need_eig, pool, n_workers, pr, n_frac):
    """Fill pr and n_frac (views of shape (n_centres, n_scales)) from Gram blocks G."""
    for s, k in enumerate(ks):
        Gk = G[:, :k, :k]
        # Double centring H G H with H = I - 11'/k, written with sums so that the
        # participation ratio tr(C)^2 / tr(C^2) needs neither a copy nor eigenvalues:
        # tr(HGH) = tr G - s/k and |HGH|^2 = |G|^2 - 2|r|^2/k + s^2/k^2 (r row sums, s total).
        r = Gk.sum(axis=2)
        tot = r.sum(axis=1)
        trace = np.einsum("bii->b", Gk) - tot / k
        frob = (np.einsum("bij,bij->b", Gk, Gk) - 2 * np.einsum("bi,bi->b", r, r) / k
                + tot ** 2 / k ** 2)
        pr[:, s] = trace ** 2 / frob
        if need_eig:
            halves = np.array_split(np.arange(G.shape[0]), n_workers)
            counts = pool.map(lambda h: _fraction_count(Gk[h], r[h], tot[h], k, fraction), halves)
            n_frac[:, s] = np.concatenate(list(counts))


def _fraction_count(G, row_sums, total, k, fraction):
    """Components needed for ``fraction`` of the variance, from k x k Gram blocks."""
    rm = row_sums[:, :, None] / k
    centred = G - rm
    centred -= rm.transpose(0, 2, 1)
    centred += (total / k ** 2)[:, None, None]
    lam = np.clip(np.linalg.eigvalsh(centred)[:, ::-1], 0, None)
    cum = np.cumsum(lam, axis=1) / lam.sum(axis=1, keepdims=True)
    return np.sum(cum < fraction, axis=1) + 1


def _warn_lpca_cap(values, ks, n_features, name):
    """Warn where local PCA is near its ceiling: k points span at most k - 1 dimensions."""
    cap = np.minimum(np.asarray(ks) - 1, n_features)
    near = (np.asarray(ks) - 1 < n_features) & (np.asarray(values) > 0.6 * cap)
    if np.any(near):
        k = int(np.asarray(ks)[near][0])
        v = float(np.asarray(values)[near][0])
        warnings.warn(
            f"local PCA at {name}={k} gives {v:.3g}, near its ceiling: k={k} neighbours span at most "
            f"k - 1 = {k - 1} dimensions (X has {n_features} features), so a higher intrinsic "
            f"dimension cannot show at this scale; read local PCA only at larger k.",
            UserWarning, stacklevel=3)


def _pick_centers(n_samples, n_centers, random_state):
    if n_centers is None or n_centers >= n_samples:
        return np.arange(n_samples)
    if int(n_centers) < 1:
        raise ValueError(f"n_centers={n_centers} must be a positive integer or None.")
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n_samples, size=int(n_centers), replace=False))


def local_pca(X, k=20, *, fraction=0.9, method="fraction", graph=None, n_centers=None,
              n_bootstrap=0, confidence=0.95, random_state=None, device=None):
    """Local PCA intrinsic dimension at scale k.

    For each point, the covariance of its k nearest neighbours (the point itself
    excluded, as in scikit-dimension's pointwise ``lPCA``) has eigenvalues
    lambda_1 >= lambda_2 >= ...; the local ID is either the number of components
    needed to explain ``fraction`` of the variance (``method="fraction"``), or
    the local participation ratio (``method="pr"``)

    .. math:: PR = \\frac{(\\sum_i \\lambda_i)^2}{\\sum_i \\lambda_i^2}.

    The estimate is the mean over points. All neighbourhoods are processed as
    one batch of k x k Gram matrices (no Python loop over points).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    k : int
        Number of neighbours, at least 2.
    fraction : float in (0, 1]
        Variance fraction for ``method="fraction"``.
    method : {"fraction", "pr"}
    graph : NeighborGraph or None
        Precomputed neighbours of X with k_max >= k.
    n_centers : int or None
        Evaluate at this many random points only (None: every point). The cost
        grows as n_centers * k^2 * n_features.
    n_bootstrap, confidence, random_state
        As in :func:`gride`; random_state also picks the centres.
    device : {None, "cpu", "cuda"}
        Device of the neighbour search and of the neighbourhood Gram matrices
        (the n_centers * k^2 * n_features part, float64); the eigenvalues of
        ``method="fraction"`` are computed on the CPU (see ``_lpca_all``).

    Returns
    -------
    estimate : IDEstimate
        With ``pointwise`` of shape (n_centers,).

    Raises
    ------
    ValueError
        If X has NaNs or is constant, k < 2 or k >= n_samples, or a parameter is invalid.
    """
    if method not in ("fraction", "pr"):
        raise ValueError(f"method must be 'fraction' or 'pr', got {method!r}.")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must be in (0, 1].")
    if X is None:
        raise ValueError("local_pca needs the data X, not only a neighbour graph.")
    k = check_scale(k, _n_points(X, None), "k", minimum=2)
    X, graph, _ = _prepare(X, k, graph, device)
    rng = check_random_state(random_state)
    centers = _pick_centers(X.shape[0], n_centers, rng)
    n_frac, pr = _lpca_all(X, graph.indices, np.array([k]), fraction, centers, method == "fraction",
                           device=device)
    pw = (n_frac if method == "fraction" else pr)[:, 0]
    ci = None
    if n_bootstrap:
        boot = _bootstrap_indices(pw.size, n_bootstrap, rng)
        ci = tuple(float(v) for v in _percentiles(pw[boot].mean(axis=1), confidence))
    _warn_lpca_cap(np.array([pw.mean()]), np.array([k]), X.shape[1], "k")
    return IDEstimate(float(pw.mean()), k, "lpca" if method == "fraction" else "lpca_pr",
                      pointwise=pw, ci=ci)


# --------------------------------------------------------------------------- profile

def _needed_rank(estimators, ks):
    k_top = int(ks.max())
    need = 0
    for est in estimators:
        need = max(need, {"gride": 2 * k_top, "twonn": k_top + 1}.get(est, k_top))
    return need


def id_profile(X, ks=None, estimators=("gride", "twonn", "mle", "lpca", "lpca_pr"), *, graph=None,
               n_bootstrap=0, confidence=0.95, fraction=0.9, mle_average="mackay",
               lpca_centers=1000, lpca_rtol=0.01, random_state=None, device=None):
    """Intrinsic dimension of several estimators over a log grid of scales.

    One neighbour query for the largest rank any estimator needs (2 k_max for
    Gride) serves every estimator at every scale; the per-scale work is
    slicing, sums of logs and (for local PCA) one nested Gram matrix per centre.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Points (stimuli x features).
    ks : array-like of int of shape (n_scales,) or None
        Scales (neighbourhood sizes). None: ``scale_grid(n_samples, 20, k_min=5,
        k_max=min(n_samples // 4, 256))``; the cap keeps the neighbour graph
        (n_samples x 2 k_max) and local PCA affordable; pass larger ks explicitly.
    estimators : sequence of str
        Any of "gride", "twonn", "mle", "lpca" (components for ``fraction`` of
        the variance), "lpca_pr" (local participation ratio).
    graph : NeighborGraph or None
        Precomputed neighbours of X (k_max at least 2 max(ks) with Gride).
    n_bootstrap : int
        Bootstrap resamples of points for percentile intervals (0: none).
    confidence : float
        Coverage of the intervals.
    fraction : float
        Variance fraction of "lpca".
    mle_average : {"mackay", "mean", "median"}
        Averaging of the Levina-Bickel pointwise estimates (see :func:`mle`).
    lpca_centers : int or None
        At most this many random centres average local PCA at each scale;
        None (or at least n_samples) uses every point, which is exact and
        ignores ``lpca_rtol``. Its cost grows as n_centers * k^2 * n_features.
    lpca_rtol : float
        Target standard error of each scale's local PCA mean, relative to the
        mean. A first round of 200 random centres gives each scale's spread
        sd, which fixes the centres it needs, (sd / (lpca_rtol * mean))^2
        (for both "lpca" and "lpca_pr" when both are asked, at most
        ``lpca_centers``); the rest are then added without looking at the
        running mean (a two-stage design, so the stopping cannot favour
        lucky samples). Smooth large scales, the expensive ones, use few
        centres. Centres at a scale are the first ones of one random order,
        so every scale's sample is a uniform random subset. 0 uses exactly
        ``lpca_centers`` centres at every scale. The centres and standard
        errors used are in ``profile.lpca_centers`` and ``profile.stderr``.
        A spread measured on a sample cannot see values rarer than about one
        in the sample size, with any number of centres.
    random_state : int, numpy Generator or None
        Seeds the centres and the bootstrap.
    device : {None, "cpu", "cuda"}
        Device of the neighbour search and of local PCA's neighbourhood Gram
        matrices (None: the CPU); every other step is cheap and runs on the
        CPU. The result equals the CPU's up to the rounding of the products.

    Returns
    -------
    profile : IDProfile
        ``profile.ids[name]`` of shape (n_scales,) per estimator.

    Raises
    ------
    ValueError
        If X has NaNs or is constant, an estimator is unknown, or a scale is too
        large for n_samples (Gride needs 2k < n_samples).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(2000, 3)) @ rng.normal(size=(3, 20))  # a 3-D cube in 20-D
    >>> prof = id_profile(X, ks=[5, 10, 20], random_state=0)
    >>> np.round(prof.ids["gride"], 0)
    array([3., 3., 3.])
    """
    estimators = tuple(estimators)
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown or not estimators:
        raise ValueError(f"Unknown estimators {unknown}; choose from {ESTIMATORS}.")
    X = check_array(X, "X", min_samples=3)
    _check_constant(X)
    n_dup_first = 0
    if ks is None and graph is None:
        # The default grid is chosen for the points that will be used: duplicates go first.
        X, n_dup_first = _dedupe(X)
        if X.shape[0] < 3:
            raise ValueError(f"X has only {X.shape[0]} distinct rows; at least 3 are needed.")
    n = X.shape[0]
    if ks is None:
        ks = scale_grid(n, 20, k_min=min(5, n // 4) if n >= 8 else 2,
                        k_max=max(2, min(n // 4, 256)))
    minimum = 2 if any(e in ("mle", "lpca", "lpca_pr") for e in estimators) else 1
    ks = _check_ks(ks, n, minimum=minimum, name="ks")
    need = _needed_rank(estimators, ks)
    if need >= n:
        raise ValueError(
            f"ks up to {ks.max()} need the {need}-th neighbour (Gride uses rank 2k), which must be "
            f"smaller than n_samples={n}; lower the largest scale.")
    X, graph, n_dup = _prepare(X, need, graph, device)
    n_dup += n_dup_first
    n = X.shape[0]
    rng = check_random_state(random_state)
    dist = graph.distances
    boot = _bootstrap_indices(n, n_bootstrap, rng) if n_bootstrap else None
    ids, lo, hi = {}, {}, {}

    def store(name, values, boot_values=None):
        ids[name] = np.asarray(values, dtype=float)
        if boot_values is not None:
            lo[name], hi[name] = _percentiles(np.asarray(boot_values), confidence)

    for name, (n1_of, n2_of) in (("gride", (lambda k: k, lambda k: 2 * k)),
                                  ("twonn", (lambda k: k, lambda k: k + 1))):
        if name not in estimators:
            continue
        vals, bvals = [], []
        for k in ks:
            n1, n2 = n1_of(int(k)), n2_of(int(k))
            log_mu = np.log(dist[:, n2 - 1] / dist[:, n1 - 1])
            log_mu = np.where(log_mu > 0, log_mu, np.nan)
            if np.any(np.isnan(log_mu)):  # ties: drop (rare; handled per scale)
                L = log_mu[~np.isnan(log_mu)]
                vals.append(_gride_mle(L, n1, n2)[0])
                if boot is not None:
                    bvals.append(_gride_mle(L[rng.integers(0, L.size, (n_bootstrap, L.size))], n1, n2)[0])
                continue
            vals.append(_gride_mle(log_mu, n1, n2)[0])
            if boot is not None:
                bvals.append(_gride_mle(log_mu[boot], n1, n2)[0])
        store(name, vals, np.stack(bvals, axis=1) if boot is not None else None)

    if "mle" in estimators:
        pw = _mle_pointwise_all(dist, ks, unbiased=False)
        store("mle", _combine_mle(pw, mle_average),
              np.stack([_combine_mle(pw[b], mle_average) for b in boot]) if boot is not None else None)

    want_lpca = tuple(e for e in ("lpca", "lpca_pr") if e in estimators)
    n_used, stderr = None, {}
    if want_lpca:
        pointwise = _lpca_sampled(X, graph.indices, ks, fraction, want_lpca, lpca_centers,
                                  lpca_rtol, rng, device=device)
        n_used = np.array([pointwise[want_lpca[0]][s].size for s in range(ks.size)])
        for name in want_lpca:
            pws = pointwise[name]
            boot_means = None
            if n_bootstrap:
                boot_means = np.stack([pw[rng.integers(0, pw.size, (n_bootstrap, pw.size))].mean(axis=1)
                                       for pw in pws], axis=1)
            store(name, [pw.mean() for pw in pws], boot_means)
            _warn_lpca_cap(ids[name], ks, X.shape[1], "ks")
            stderr[name] = np.array([_standard_error(pw, n) for pw in pws])

    # Keep the caller's order of estimators.
    ids = {e: ids[e] for e in estimators}
    return IDProfile(ks=ks, ids=ids, ci_low=lo, ci_high=hi, radius=dist[:, ks - 1].mean(axis=0),
                     n_samples=n, n_duplicates=n_dup, lpca_centers=n_used, stderr=stderr)


#: Centres of the first round of :func:`_lpca_sampled`.
_LPCA_FIRST_ROUND = 200


def _standard_error(pointwise, n_population):
    """Standard error of a mean over a simple random sample of the points (no replacement).

    With the sample variance s^2 (ddof=1), the variance of the mean of m of N
    values is (1 - m/N) s^2 / m: 0 when every point is in the sample, nan
    for a single centre.
    """
    m = pointwise.size
    if m >= n_population:
        return 0.0
    if m < 2:
        return float("nan")
    return float(pointwise.std(ddof=1) * np.sqrt((1 - m / n_population) / m))


def _lpca_sampled(X, indices, ks, fraction, names, max_centers, rtol, rng, device=None):
    """Pointwise local PCA per scale, with as many centres as each scale needs.

    Two stages (Stein's design): a first round of centres gives each scale's
    spread, which fixes how many centres it needs for a standard error of
    ``rtol`` times its mean; the rest are then added without looking at the
    running mean again, so the stopping rule cannot favour samples that
    happen to look precise.

    Returns
    -------
    pointwise : dict of str to list of n_scales arrays
        The values at the centres used at each scale (every scale uses a
        prefix of one random order of the points).
    """
    n = X.shape[0]
    if not (np.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"lpca_rtol={rtol} must be a non-negative number.")
    if max_centers is not None and int(max_centers) < 1:
        raise ValueError(f"lpca_centers={max_centers} must be a positive integer or None.")
    need_eig = "lpca" in names
    if max_centers is None or max_centers >= n or rtol == 0:
        centers = _pick_centers(n, max_centers, rng)
        n_frac, pr = _lpca_all(X, indices, ks, fraction, centers, need_eig, device=device)
        values = {"lpca": n_frac, "lpca_pr": pr}
        return {name: [values[name][:, s] for s in range(ks.size)] for name in names}
    order = rng.choice(n, size=int(max_centers), replace=False)
    first = order[:min(_LPCA_FIRST_ROUND, order.size)]
    n_frac, pr = _lpca_all(X, indices, ks, fraction, first, need_eig, device=device)
    values = {"lpca": n_frac, "lpca_pr": pr}
    parts = {name: [[values[name][:, s]] for s in range(ks.size)] for name in names}
    # Centres each scale needs: (sd / (rtol * mean))^2, from the first round only.
    need = np.full(ks.size, first.size)
    for name in names:
        sd, mean = values[name].std(axis=0, ddof=1), np.abs(values[name].mean(axis=0))
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.ceil(np.nan_to_num((sd / (rtol * mean)) ** 2, nan=order.size, posinf=order.size))
        need = np.maximum(need, np.minimum(m, order.size).astype(int))
    done, batch = first.size, first.size
    while np.any(need > done):
        centers = order[done:done + batch]
        active = np.flatnonzero(need > done)
        n_frac, pr = _lpca_all(X, indices, ks[active], fraction, centers, need_eig, device=device)
        values = {"lpca": n_frac, "lpca_pr": pr}
        for j, s in enumerate(active):
            for name in names:
                parts[name][s].append(values[name][:need[s] - done, j])
        done += centers.size
        batch = min(done, order.size - done)  # doubling rounds
    return {name: [np.concatenate(p) for p in parts[name]] for name in names}


# --------------------------------------------------------------------------- stability

def dimensional_stability(ids, ks, method="cv"):
    """How little an ID profile changes across scales.

    The headline score (``method="cv"``) is the coefficient of variation of
    ID over log-scale,

    .. math:: CV = \\frac{\\operatorname{sd}_{\\log k}(ID)}{\\operatorname{mean}_{\\log k}(ID)},

    mean and standard deviation weighted by each scale's share of the log-k
    axis (equal weights on a log grid). 0 means a perfectly flat profile;
    larger is less stable. It is dimensionless, so representations of very
    different ID compare, and it penalises any variation, monotone or not.
    Alternatives: ``"slope"``, the least-squares slope of ID against log10 k
    (signed: negative when dimensions dissipate at larger scales, in units of
    ID per decade); ``"relative_slope"``, that slope divided by the mean ID;
    ``"range"``, (max - min) / mean.

    Parameters
    ----------
    ids : array-like of shape (n_scales,)
        ID at each scale.
    ks : array-like of shape (n_scales,)
        The scales (neighbourhood sizes or radii), increasing and positive.
    method : {"cv", "slope", "relative_slope", "range"}

    Returns
    -------
    score : float

    Raises
    ------
    ValueError
        If the shapes differ, fewer than 2 scales are given, ks are not
        positive and increasing, ids are not finite, or the method is unknown.
    """
    ids = check_array(ids, "ids", ndim=1, min_samples=2)
    ks = check_array(ks, "ks", ndim=1, min_samples=2)
    if ids.shape != ks.shape:
        raise ValueError(f"ids and ks must have the same shape, got {ids.shape} and {ks.shape}.")
    if np.any(ks <= 0) or np.any(np.diff(ks) <= 0):
        raise ValueError(f"ks must be positive and strictly increasing, got {ks.tolist()}.")
    logk = np.log10(ks)
    if method in ("cv", "range"):
        # Trapezoid weights: each scale stands for its share of the log-k axis.
        edges = np.concatenate([[logk[0]], (logk[1:] + logk[:-1]) / 2, [logk[-1]]])
        w = np.diff(edges)
        w = w / w.sum()
        mean = np.sum(w * ids)
        if mean <= 0:
            raise ValueError(f"The mean ID {mean:.3g} must be positive for a relative score.")
        if method == "range":
            return float(np.ptp(ids) / mean)
        return float(np.sqrt(np.sum(w * (ids - mean) ** 2)) / mean)
    if method in ("slope", "relative_slope"):
        slope = np.polyfit(logk, ids, 1)[0]
        return float(slope if method == "slope" else slope / np.mean(ids))
    raise ValueError(f"method must be one of {STABILITY_METHODS}, got {method!r}.")


@dataclass
class CalibratedStability:
    """Dimensional stability of a representation against covariance-matched Gaussians.

    The score itself is a :class:`scaleinv_utils.stats.CalibratedScore` (``score``);
    its fields are also readable here (``raw``, ``null``, ``null_mean``, ``null_sd``,
    ``calibrated``, ``z``, ``p_value``), so the rule for calibrating lives in one place.

    Attributes
    ----------
    ks : ndarray of shape (n_scales,)
    ids : ndarray of shape (n_scales,)
        The representation's ID profile.
    null_ids : ndarray of shape (n_null, n_scales)
        The profile of each Gaussian surrogate (same n, same covariance).
    method, estimator : str
    score : CalibratedScore
        ``raw`` is :func:`dimensional_stability` of ``ids``; ``null`` the same score of
        each surrogate profile, shape (n_null,); ``calibrated = raw - null_mean``. For
        "cv" (lower = more stable) it is negative when the profile is flatter than a
        Gaussian with the same eigenspectrum gives, 0 on average for Gaussian data of
        any covariance; ``z = calibrated / null_sd``; ``p_value`` is
        (1 + #{null <= raw}) / (1 + n_null) for "cv" and "range" (more stable than the
        null), two-sided on |slope| for the slopes.
    """

    ks: np.ndarray
    ids: np.ndarray
    null_ids: np.ndarray
    method: str
    estimator: str
    score: "CalibratedScore"

    raw = property(lambda self: self.score.raw)
    null = property(lambda self: self.score.null)
    null_mean = property(lambda self: self.score.null_mean)
    null_sd = property(lambda self: self.score.null_sd)
    calibrated = property(lambda self: self.score.calibrated)
    z = property(lambda self: self.score.z)
    p_value = property(lambda self: self.score.p_value)


def calibrated_stability(X, ks=None, *, estimator="gride", method="cv", n_null=10,
                         random_state=None, device=None, **profile_kwargs):
    """Dimensional stability, raw and calibrated against covariance-matched Gaussians.

    An ID profile changes across scales even for Gaussian data: a Gaussian
    with a decaying eigenspectrum looks high dimensional at small scales (its
    small directions are resolved) and lower dimensional at large ones. So the
    raw :func:`dimensional_stability` partly measures the eigenspectrum. This
    function computes it for X and for ``n_null`` surrogates with X's exact
    covariance (:func:`scaleinv_utils.stats.gaussian_surrogate`) on the same
    grid, and reports the difference: what X's geometry adds beyond its
    spectrum.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    ks : array-like of int of shape (n_scales,) or None
        Scales; default as :func:`id_profile`.
    estimator : str
        One of :data:`ESTIMATORS`.
    method : str
        One of :data:`STABILITY_METHODS`.
    n_null : int
        Surrogates (at least 1); each costs one ID profile.
    random_state : int, numpy Generator or None
        Seeds the profile (local PCA centres) and the surrogates.
    device : {None, "cpu", "cuda"}
    **profile_kwargs
        Passed to :func:`id_profile` (e.g. ``lpca_centers``).

    Returns
    -------
    result : CalibratedStability

    Raises
    ------
    ValueError
        As :func:`id_profile` and :func:`dimensional_stability`, or n_null < 1.
    """
    from . import stats as _stats

    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if method not in STABILITY_METHODS:
        raise ValueError(f"method must be one of {STABILITY_METHODS}, got {method!r}.")
    if int(n_null) < 1:
        raise ValueError(f"n_null must be at least 1, got {n_null}.")
    rng = check_random_state(random_state)
    prof = id_profile(X, ks, estimators=(estimator,), random_state=rng, device=device,
                      **profile_kwargs)
    ks = prof.ks
    ids = prof.ids[estimator]
    raw = dimensional_stability(ids, ks, method=method)
    X = check_array(X, "X", min_samples=3)
    null_ids = np.stack([id_profile(Z, ks, estimators=(estimator,), random_state=rng, device=device,
                                    **profile_kwargs).ids[estimator]
                         for Z in _stats.iter_gaussian_surrogates(X, int(n_null), random_state=rng)])
    null = np.array([dimensional_stability(v, ks, method=method) for v in null_ids])
    alternative = "less" if method in ("cv", "range") else "two-sided"
    return CalibratedStability(ks=ks, ids=ids, null_ids=null_ids, method=method, estimator=estimator,
                               score=_stats.calibrate(raw, null, alternative=alternative))


# --------------------------------------------------------------------------- global

def _small_scatter(X):
    """The smaller of Xc^T Xc and Xc Xc^T for centred X: both have the covariance's nonzero spectrum."""
    X = check_array(X, "X", min_samples=2)
    _check_constant(X)
    Xc = X - X.mean(axis=0)
    n, p = Xc.shape
    return (Xc.T @ Xc if p <= n else Xc @ Xc.T), n, p


def eigenspectrum(X):
    """Eigenvalues of the sample covariance of X, largest first.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    eigenvalues : ndarray of shape (min(n_samples - 1, n_features),)

    Raises
    ------
    ValueError
        If X has NaNs, fewer than 2 samples, or is constant.
    """
    M, n, p = _small_scatter(X)
    lam = np.linalg.eigvalsh(M)[::-1] / (n - 1)
    return np.clip(lam[: min(n - 1, p)], 0, None)


def participation_ratio(X):
    """Global participation ratio (sum lambda)^2 / sum lambda^2 of the covariance.

    It is D for an isotropic Gaussian in D dimensions (minus a sampling bias of
    order D/n_samples) and 1 when one direction dominates. Computed from
    traces, without an eigendecomposition.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    pr : float

    Raises
    ------
    ValueError
        If X has NaNs, fewer than 2 samples, or is constant.
    """
    M, _, _ = _small_scatter(X)
    return float(np.trace(M) ** 2 / np.sum(M * M))


def powerlaw_exponent(X=None, *, eigenvalues=None, fit_range=None):
    """Exponent alpha of a power-law eigenspectrum, lambda_n ~ n**(-alpha).

    Fits a straight line to log10 lambda_n against log10 n over the ranks in
    ``fit_range`` (Stringer et al. 2019 fitted ranks 11-500). The first ranks
    (a few dominant directions) and the last ones (the sampling floor, where
    the spectrum of n_samples points bends down) depart from any power law,
    so the range matters and is returned with the fit.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or None
        Data; its covariance spectrum is used.
    eigenvalues : array-like of shape (n_eigenvalues,) or None
        A spectrum given directly (sorted in decreasing order).
    fit_range : tuple of int or None
        First and last rank (1-based, inclusive). None: ranks 11 to half the
        number of eigenvalues when there are at least 40, else all.

    Returns
    -------
    fit : PowerLawFit

    Raises
    ------
    ValueError
        If neither or both inputs are given, the range is invalid, or an
        eigenvalue in the range is not positive.
    """
    if (X is None) == (eigenvalues is None):
        raise ValueError("Pass exactly one of X and eigenvalues.")
    lam = eigenspectrum(X) if X is not None else check_array(eigenvalues, "eigenvalues", ndim=1,
                                                             min_samples=2)
    n_eig = lam.size
    if fit_range is None:
        fit_range = (11, n_eig // 2) if n_eig >= 40 else (1, n_eig)
    lo, hi = (int(v) for v in fit_range)
    if not 1 <= lo < hi <= n_eig:
        raise ValueError(
            f"fit_range={fit_range} must satisfy 1 <= first < last <= {n_eig} (number of eigenvalues).")
    seg = lam[lo - 1:hi]
    if np.any(seg <= 0):
        raise ValueError(f"eigenvalues in fit_range={fit_range} must be positive; shorten the range.")
    x = np.log10(np.arange(lo, hi + 1))
    y = np.log10(seg)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    r2 = 1 - np.sum(resid ** 2) / np.sum((y - y.mean()) ** 2)
    return PowerLawFit(alpha=float(-slope), intercept=float(intercept), fit_range=(lo, hi), r2=float(r2))


# --------------------------------------------------------------------------- comparing profiles

__all__ += ["profile_distance", "PROFILE_MEASURES", "id_profile_bootstrap", "IDBootstrap",
            "compare_id_profiles", "ProfileComparison"]

#: Measures of :func:`profile_distance`.
PROFILE_MEASURES = ("rmse", "level", "shape", "slope_corr", "pearson")


def profile_distance(profiles, reference, ks, measure="rmse"):
    """How far ID profiles are from a reference profile, in level and in shape.

    With ``r(k) = log ID(k) - log ID_ref(k)`` on the scale grid:

    - ``"level"``: the mean of r over scales, signed (log of the typical ratio
      of the two IDs; 0 = same level, negative = lower dimension);
    - ``"shape"``: the standard deviation of r over scales (0 when the
      profiles are proportional: same shape on log axes, whatever the level);
    - ``"rmse"``: the root mean square of r, level and shape together
      (``rmse**2 = level**2 + shape**2``);
    - ``"slope_corr"``: the Pearson correlation of the slopes
      dID / dlog k between consecutive scales (shape of the fall only);
    - ``"pearson"``: the Pearson correlation of the profiles themselves
      (:func:`scaleinv_utils.similarity.compare_profiles`' default). It is 1
      for *any* increasing affine transform of the reference, so it cannot
      tell a profile from one at triple the level or from one that falls
      half as fast; kept for comparison.

    Parameters
    ----------
    profiles : array-like of shape (..., n_scales)
        One or many profiles (leading axes broadcast), positive.
    reference : array-like of shape (n_scales,)
        E.g. the brain's profile.
    ks : array-like of shape (n_scales,)
        The scales, positive and strictly increasing.
    measure : str
        One of :data:`PROFILE_MEASURES`.

    Returns
    -------
    value : float or ndarray of shape (...)
        Lower = more alike for "rmse" and "shape" (|level| for "level");
        higher = more alike for the correlations.

    Raises
    ------
    ValueError
        If the grids differ in length, a profile is not positive and finite,
        fewer than 3 scales are given, ks is not increasing, or the measure
        is unknown.
    """
    from . import stats as _stats

    if measure not in PROFILE_MEASURES:
        raise ValueError(f"measure must be one of {PROFILE_MEASURES}, got {measure!r}.")
    P = np.asarray(profiles, dtype=float)
    ref = check_array(reference, "reference", ndim=1, min_samples=3)
    ks = check_array(ks, "ks", ndim=1, min_samples=3)
    if P.ndim == 0 or P.shape[-1] != ref.size or ks.size != ref.size:
        raise ValueError(f"profiles, reference and ks must share one scale grid: got "
                         f"{P.shape[-1] if P.ndim else 0}, {ref.size} and {ks.size} scales.")
    if np.any(ks <= 0) or np.any(np.diff(ks) <= 0):
        raise ValueError(f"ks must be positive and strictly increasing, got {ks.tolist()}.")
    for name, v in (("profiles", P), ("reference", ref)):
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"{name} must be positive and finite (IDs), found range "
                             f"[{np.nanmin(v):.3g}, {np.nanmax(v):.3g}].")
    if measure == "pearson":
        return _stats.pearson(P, np.broadcast_to(ref, P.shape), axis=-1)
    if measure == "slope_corr":
        dlogk = np.diff(np.log(ks))
        return _stats.pearson(np.diff(P, axis=-1) / dlogk, np.diff(ref) / dlogk, axis=-1)
    r = np.log(P) - np.log(ref)
    level = r.mean(axis=-1)
    if measure == "level":
        out = level
    elif measure == "shape":
        out = r.std(axis=-1)
    else:
        out = np.sqrt(np.mean(r ** 2, axis=-1))
    return float(out) if np.ndim(out) == 0 else out


@dataclass
class IDBootstrap:
    """Gride profiles of several representations of the same stimuli, bootstrapped jointly.

    Attributes
    ----------
    ks : ndarray of shape (n_scales,)
    names : list of str
    ids : ndarray of shape (n_representations, n_scales)
        The Gride profile of each representation (as :func:`id_profile`).
    samples : ndarray of shape (n_bootstrap, n_representations, n_scales)
        The profiles on each resample of stimuli; the same stimuli are
        drawn for every representation, so differences stay paired.
    n_samples : int
        Stimuli used (after leaving out any with tied neighbour distances).
    """

    ks: np.ndarray
    names: list
    ids: np.ndarray
    samples: np.ndarray
    n_samples: int

    def __getitem__(self, name):
        return self.ids[self.names.index(name)]


def id_profile_bootstrap(representations, ks=None, *, n_bootstrap=200, random_state=None,
                         device=None):
    """Gride ID profiles of several representations with a paired bootstrap over stimuli.

    Each representation gets one neighbour query; each stimulus contributes
    one log distance ratio ``log(r_2k / r_k)`` per scale, and Gride's
    likelihood is a sum over stimuli. A resample draws stimuli with
    replacement and re-maximises the likelihood (the same bootstrap as
    :func:`id_profile`'s ``n_bootstrap``, which keeps the neighbour graph and
    so adds no duplicate points), here with the *same* stimuli for every
    representation. Any quantity computed from several profiles (the
    difference of a model's and the brain's, the fall from the smallest to
    the largest scale) then gets its interval from ``samples``.

    Parameters
    ----------
    representations : dict of str to array-like of shape (n_samples, n_features_i)
        The same stimuli in the same order (a sequence is named "0", "1", ...).
    ks : array-like of int of shape (n_scales,) or None
        Scales; default ``scale_grid(n_samples, 12, k_min=5, k_max=n_samples // 8)``
        (Gride needs 2 max(ks) < n_samples).
    n_bootstrap : int
        Resamples (0: none; ``samples`` is then empty).
    random_state : int, numpy Generator or None
    device : {None, "cpu", "cuda"}
        Device of the neighbour search.

    Returns
    -------
    result : IDBootstrap

    Raises
    ------
    ValueError
        If the representations differ in n_samples, one is constant or has
        NaNs, a scale is too large, or almost every stimulus has tied distances.

    Warns
    -----
    UserWarning
        When stimuli with tied neighbour distances (duplicates) in some
        representation are left out of all of them (to keep the pairing).
    """
    if not isinstance(representations, dict):
        representations = {str(i): X for i, X in enumerate(representations)}
    if not representations:
        raise ValueError("representations is empty: give at least one array.")
    arrays = {name: check_array(X, f"representations[{name!r}]", min_samples=8)
              for name, X in representations.items()}
    n = check_consistent_samples(**arrays)
    if ks is None:
        ks = scale_grid(n, n_scales=12, k_min=5, k_max=max(6, n // 8))
    ks = _check_ks(ks, n, name="ks")
    need = 2 * int(ks.max())
    if need >= n:
        raise ValueError(f"ks up to {ks.max()} need the {need}-th neighbour (Gride uses rank 2k), "
                         f"which must be smaller than n_samples={n}; lower the largest scale.")
    log_mu = []
    for name, X in arrays.items():
        _check_constant(X, f"representations[{name!r}]")
        d = nearest_neighbors(X, need, device=device).distances
        with np.errstate(divide="ignore", invalid="ignore"):
            log_mu.append(np.log(d[:, 2 * ks - 1]) - np.log(d[:, ks - 1]))  # (n, n_scales)
    L = np.stack(log_mu)  # (n_reps, n, n_scales)
    good = np.all(np.isfinite(L) & (L > 0), axis=(0, 2))
    if good.sum() < max(8, n // 2):
        raise ValueError(f"only {good.sum()} of {n} stimuli have untied neighbour distances in "
                         "every representation; drop duplicate rows first.")
    if not good.all():
        warnings.warn(f"{n - good.sum()} of {n} stimuli have tied neighbour distances (duplicate "
                      "rows) in some representation; they are left out of every profile to keep "
                      "the bootstrap paired.", UserWarning, stacklevel=2)
    L = L[:, good]
    m = L.shape[1]
    ids = np.stack([_gride_mle(L[..., s], int(k), 2 * int(k))[0] for s, k in enumerate(ks)], axis=-1)
    samples = np.empty((0,) + ids.shape)
    if n_bootstrap:
        boot = _bootstrap_indices(m, int(n_bootstrap), random_state)  # (n_boot, m)
        samples = np.stack([_gride_mle(L[:, boot, s], int(k), 2 * int(k))[0]
                            for s, k in enumerate(ks)], axis=-1)  # (n_reps, n_boot, n_scales)
        samples = np.moveaxis(samples, 0, 1)
    return IDBootstrap(ks=ks, names=list(arrays), ids=ids, samples=samples, n_samples=int(m))


@dataclass
class ProfileComparison:
    """Each representation's ID profile against a reference, with bootstrap intervals.

    Attributes
    ----------
    ks : ndarray of shape (n_scales,)
    names : list of str
    profiles : ndarray of shape (n_representations, n_scales)
    reference : ndarray of shape (n_scales,)
    values : dict of str to ndarray of shape (n_representations,)
        Per measure of :func:`profile_distance`.
    low, high : dict of str to ndarray of shape (n_representations,)
        Percentile bootstrap interval over stimuli (paired with the reference).
    samples : dict of str to ndarray of shape (n_bootstrap, n_representations)
    level : float
        Coverage of the intervals.
    """

    ks: np.ndarray
    names: list
    profiles: np.ndarray
    reference: np.ndarray
    values: dict
    low: dict
    high: dict
    samples: dict
    level: float

    def to_frame(self):
        """pandas DataFrame: one row per representation, a value and interval per measure."""
        import pandas as pd

        cols = {}
        for m in self.values:
            cols[m], cols[f"{m}_low"], cols[f"{m}_high"] = self.values[m], self.low[m], self.high[m]
        return pd.DataFrame(cols, index=pd.Index(self.names, name="representation"))


def compare_id_profiles(representations, reference, ks=None, *, measures=PROFILE_MEASURES,
                        n_bootstrap=200, level=0.95, random_state=None, device=None):
    """Compare representations' Gride profiles with a reference's (the brain's), with intervals.

    The profiles of all representations and of the reference come from
    :func:`id_profile_bootstrap` on the same stimuli, so each resample of
    stimuli gives paired profiles and one value of every measure of
    :func:`profile_distance` (level, shape, their RMSE, the correlation of
    slopes, and the saturating Pearson correlation for comparison).

    Parameters
    ----------
    representations : dict of str to array-like of shape (n_samples, n_features_i)
    reference : array-like of shape (n_samples, n_features_ref)
        The same stimuli (e.g. the brain's repeat-averaged betas).
    ks : array-like of int of shape (n_scales,) or None
        As :func:`id_profile_bootstrap`.
    measures : sequence of str
        Among :data:`PROFILE_MEASURES`.
    n_bootstrap : int
        At least 1.
    level : float
        Coverage of the percentile intervals.
    random_state : int, numpy Generator or None
    device : {None, "cpu", "cuda"}

    Returns
    -------
    comparison : ProfileComparison

    Raises
    ------
    ValueError
        As :func:`id_profile_bootstrap`; also for an unknown measure, a
        representation named "reference", or n_bootstrap < 1.
    """
    from . import stats as _stats

    bad = [m for m in measures if m not in PROFILE_MEASURES]
    if bad or not len(measures):
        raise ValueError(f"measures must be among {PROFILE_MEASURES}, got {list(measures)}.")
    if int(n_bootstrap) < 1:
        raise ValueError(f"n_bootstrap must be at least 1 for the intervals, got {n_bootstrap}.")
    if not isinstance(representations, dict):
        representations = {str(i): X for i, X in enumerate(representations)}
    if "reference" in representations:
        raise ValueError("a representation may not be named 'reference' (the name of the reference).")
    boot = id_profile_bootstrap({**representations, "reference": reference}, ks,
                                n_bootstrap=n_bootstrap, random_state=random_state, device=device)
    ref, ref_s = boot.ids[-1], boot.samples[:, -1]
    P, P_s = boot.ids[:-1], boot.samples[:, :-1]
    values, low, high, samples = {}, {}, {}, {}
    for m in measures:
        values[m] = np.atleast_1d(profile_distance(P, ref, boot.ks, m))
        # Per resample: every representation against that resample's reference.
        s = np.stack([np.atleast_1d(profile_distance(P_s[b], ref_s[b], boot.ks, m))
                      for b in range(P_s.shape[0])])
        samples[m] = s
        low[m], high[m] = (np.atleast_1d(v) for v in _stats.percentile_interval(s, level))
    return ProfileComparison(ks=boot.ks, names=boot.names[:-1], profiles=P, reference=ref,
                             values=values, low=low, high=high, samples=samples, level=level)
