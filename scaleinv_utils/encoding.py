"""Voxelwise encoding: how well a model's features predict each voxel.

A linear encoding model predicts the response of voxel v to stimulus i from
the stimulus' features x_i (a model layer's activations)::

    y_iv = x_i . w_v + b_v + noise

The weights are fitted by ridge regression on the subject's own training
images, with the penalty alpha_v chosen per voxel by K-fold cross-validation,
and the model is scored on the shared test images by R^2 and Pearson r per
voxel. Because the repeat-averaged betas keep some trial noise, no model can
reach R^2 = 1; dividing by the noise ceiling (NSD's ncsnr formula, see
:mod:`scaleinv_utils.reliability`) gives the fraction of *explainable*
variance explained.

The ridge itself is himalaya's (Dupré la Tour et al. 2022): its ``torch_cuda``
backend on a GPU, ``numpy`` otherwise. The functions here only validate,
standardise, and keep himalaya's global backend setting as they found it.

Functions
---------
fit_encoding            ridge with per-voxel alpha by CV -> EncodingModel
fit_banded_encoding     banded ridge when several feature spaces compete
score_encoding          R^2 and r per voxel (and noise-ceiling normalised)
encoding_scores         fit on subj.train, score on subj.test, in one call
layerwise_encoding      one model per layer; best layer per voxel
summarise_by_label      ROI / network means with bootstrap intervals
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_array, check_consistent_samples, check_random_state

__all__ = [
    "DEFAULT_ALPHAS", "EncodingModel", "EncodingResult", "LayerwiseResult",
    "fit_encoding", "fit_banded_encoding", "predict_encoding", "r2_per_voxel",
    "pearson_per_voxel", "normalise_by_noise_ceiling", "score_encoding",
    "encoding_scores", "layerwise_encoding", "summarise_by_label", "resolve_backend",
    "ridge_peak_bytes", "plan_ridge_batches",
]

#: Default grid of ridge penalties (for standardised features): 1e-1 ... 1e7.
DEFAULT_ALPHAS = np.logspace(-1, 7, 17)


# --------------------------------------------------------------------------- backend
def resolve_backend(backend=None):
    """Name of the himalaya backend to use.

    Parameters
    ----------
    backend : str or None
        A himalaya backend name ("numpy", "torch", "torch_cuda", ...); None
        picks "torch_cuda" when a GPU is visible, else "numpy".

    Returns
    -------
    name : str
    """
    if backend is not None:
        return backend
    from .config import get_device

    return "torch_cuda" if get_device() == "cuda" else "numpy"


class _himalaya_backend:
    """Use a himalaya backend inside a ``with`` block, then restore the previous one.

    himalaya keeps its backend in a module-level variable; restoring it means a
    call here never changes how the reader's own himalaya code runs.
    """

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        from himalaya.backend import get_backend, set_backend

        self._previous = get_backend().name
        return set_backend(self.name, on_error="raise")

    def __exit__(self, *exc):
        from himalaya.backend import set_backend

        set_backend(self._previous)
        return False


# --------------------------------------------------------------------------- model
@dataclass
class EncodingModel:
    """A fitted voxelwise ridge model.

    Attributes
    ----------
    coef : ndarray of shape (n_features, n_voxels)
        Weights on the (standardised, if ``standardize``) features.
    intercept : ndarray of shape (n_voxels,)
    best_alphas : ndarray of shape (n_voxels,)
        Penalty chosen by cross-validation for each voxel (NaN for dropped voxels).
    cv_scores : ndarray of shape (n_voxels,)
        Cross-validated score of the chosen penalty (himalaya's score).
    alphas : ndarray of shape (n_alphas,)
        The grid searched.
    x_mean, x_scale : ndarray of shape (n_features,)
        Training statistics applied to new features before predicting.
    voxel_mask : ndarray of shape (n_voxels,), bool
        Voxels that were fitted (False: non-finite training responses).
    backend : str
    """

    coef: np.ndarray
    intercept: np.ndarray
    best_alphas: np.ndarray
    cv_scores: np.ndarray
    alphas: np.ndarray
    x_mean: np.ndarray
    x_scale: np.ndarray
    voxel_mask: np.ndarray
    backend: str = "numpy"

    @property
    def n_features(self):
        return self.coef.shape[0]

    @property
    def n_voxels(self):
        return self.coef.shape[1]

    def predict(self, X):
        """Predicted responses, array of shape (n_samples, n_voxels)."""
        return predict_encoding(self, X)

    def __repr__(self):
        return (f"EncodingModel(n_features={self.n_features}, n_voxels={self.n_voxels}, "
                f"n_fitted={int(self.voxel_mask.sum())}, backend={self.backend!r})")


def _check_alphas(alphas):
    alphas = np.atleast_1d(np.asarray(DEFAULT_ALPHAS if alphas is None else alphas, dtype=float))
    if alphas.ndim != 1 or alphas.size == 0 or np.any(~np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be a 1-D list of positive numbers, got {alphas!r}.")
    return alphas


def _make_cv(cv, n_samples, random_state):
    """A KFold-like splitter; shuffled only when random_state is given."""
    from sklearn.model_selection import KFold

    if isinstance(cv, (int, np.integer)):
        if cv < 2:
            raise ValueError(f"cv must be at least 2 folds, got cv={cv}.")
        n_folds = int(cv)
        if random_state is None:
            splitter = KFold(n_folds)
        else:
            seed = int(check_random_state(random_state).integers(2**31 - 1))
            splitter = KFold(n_folds, shuffle=True, random_state=seed)
    else:
        splitter = cv
        n_folds = splitter.get_n_splits() if hasattr(splitter, "get_n_splits") else len(list(cv))
    if n_samples < 2 * n_folds:
        raise ValueError(
            f"too few samples for {n_folds}-fold cross-validation: need at least "
            f"{2 * n_folds}, got n_samples={n_samples}.")
    return splitter


def _prepare(X, Y, standardize, fit_intercept):
    """Validate and centre (and scale) the training data; drop non-finite voxels."""
    X = check_array(X, "X_train", dtype=None)
    Y = check_array(Y, "Y_train", allow_nan=True, dtype=None)
    check_consistent_samples(X_train=X, Y_train=Y)
    voxel_mask = np.all(np.isfinite(Y), axis=0)
    if not voxel_mask.any():
        raise ValueError("every voxel of Y_train has NaN or infinite values; nothing to fit.")
    if not voxel_mask.all():
        warnings.warn(
            f"{int((~voxel_mask).sum())} of {Y.shape[1]} voxels have NaN or infinite training "
            "responses; they are left out and get NaN weights and scores.", stacklevel=3)
        Y = Y[:, voxel_mask]
    dtype = np.result_type(X.dtype, Y.dtype)
    x_mean = X.mean(axis=0) if (fit_intercept or standardize) else np.zeros(X.shape[1], dtype)
    x_scale = X.std(axis=0) if standardize else np.ones(X.shape[1], dtype)
    x_scale = np.where(x_scale > 0, x_scale, 1.0).astype(dtype)  # constant feature stays 0
    Xc = ((X - x_mean) / x_scale).astype(dtype, copy=False) if (fit_intercept or standardize) \
        else X.astype(dtype, copy=False)
    y_mean = Y.mean(axis=0) if fit_intercept else np.zeros(Y.shape[1], dtype)
    Yc = (Y - y_mean).astype(dtype, copy=False) if fit_intercept else Y.astype(dtype, copy=False)
    return Xc, Yc, x_mean, x_scale, y_mean, voxel_mask


def _expand(values, mask, fill=np.nan, axis=-1):
    """Put per-fitted-voxel values back into an array over all voxels."""
    values = np.asarray(values)
    if mask.all():
        return values
    shape = list(values.shape)
    shape[axis] = mask.size
    out = np.full(shape, fill, dtype=np.result_type(values.dtype, np.float64))
    idx = [slice(None)] * values.ndim
    idx[axis] = mask
    out[tuple(idx)] = values
    return out


# --------------------------------------------------------------------------- GPU memory
#: Fraction of the device's free memory a fit plans to use (the rest: allocator slack,
#: kernels' workspaces, the caller's own tensors).
MEMORY_FRACTION = 0.8


def ridge_peak_bytes(n_samples, n_features, n_targets, *, n_alphas, n_folds=5,
                     n_targets_batch=None, n_alphas_batch=None, itemsize=4, Y_in_cpu=False,
                     kernel=False):
    """Peak device memory of one himalaya ridge fit with cross-validated alphas (an upper model).

    The largest live set of himalaya's solver (``solve_group_ridge_random_search``, which
    RidgeCV, KernelRidgeCV and BandedRidgeCV share) during one fold, or during the final refit
    if larger: Y; X and its train/validation copies (or the kernel and its copies); the resolution
    matrices of a batch of alphas, (alphas, n_features, n_train) and (alphas, n_val, n_train),
    alive together; and, per batch of targets, Y's train/validation copies, the predictions
    (alphas, n_val, targets) and two temporaries of the same size in the scoring function.

    Parameters
    ----------
    n_samples, n_features, n_targets : int
    n_alphas : int
    n_folds : int
    n_targets_batch, n_alphas_batch : int or None
        None: all at once.
    itemsize : int
        4 for float32, 8 for float64.
    Y_in_cpu : bool
        Y stays in host memory (only its batches come to the device).
    kernel : bool
        The kernel solver (features replaced by the n_train columns of the linear kernel).

    Returns
    -------
    n_bytes : int
    """
    tb = n_targets if n_targets_batch is None else min(int(n_targets_batch), n_targets)
    ab = n_alphas if n_alphas_batch is None else min(int(n_alphas_batch), n_alphas)
    n_val = -(-n_samples // n_folds)
    n_tr = n_samples - n_samples // n_folds
    p = n_tr if kernel else n_features
    data = (0 if Y_in_cpu else n_samples * n_targets) + (
        2 * n_samples * n_samples if kernel else 2 * n_samples * n_features)
    scores = n_folds * n_alphas * n_targets
    fold = (ab * p * n_tr + ab * n_val * n_tr            # resolution matrices
            + n_samples * tb + n_tr * tb + n_val * tb    # Y[:, batch], its train / val rows
            + 3 * ab * n_val * tb)                       # predictions and the loss' temporaries
    refit = ab * p * n_samples + n_samples * tb + ab * p * tb
    return int(itemsize * (data + scores + max(fold, refit)))


def _free_device_bytes(device="cuda"):
    """Free memory of the GPU (total minus what torch holds where the driver cannot say)."""
    import torch

    try:
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    except Exception:  # no driver query (a mock device): total minus torch's allocations
        total = torch.cuda.get_device_properties(0).total_memory
        return int(total - torch.cuda.memory_allocated())


def plan_ridge_batches(n_samples, n_features, n_targets, *, n_alphas, n_folds=5, itemsize=4,
                       budget_bytes, kernel=False, min_targets_batch=256):
    """Target and alpha batches (and whether Y stays on the host) that fit a memory budget.

    Keeps all alphas and all targets when they fit; otherwise the largest target batch for
    all alphas, halving the alpha batch while fewer than ``min_targets_batch`` targets would
    fit, and finally Y in host memory.

    Parameters
    ----------
    n_samples, n_features, n_targets, n_alphas, n_folds, itemsize, kernel
        See :func:`ridge_peak_bytes`.
    budget_bytes : int
        Device memory the fit may use.
    min_targets_batch : int

    Returns
    -------
    plan : dict
        ``n_targets_batch`` and ``n_alphas_batch`` (None: all at once), ``Y_in_cpu`` and
        ``peak_bytes`` (:func:`ridge_peak_bytes` of the plan).

    Raises
    ------
    MemoryError
        If not even one alpha and ``min(n_targets, min_targets_batch)`` targets fit.
    """
    common = dict(n_alphas=n_alphas, n_folds=n_folds, itemsize=itemsize, kernel=kernel)
    floor = min(n_targets, min_targets_batch)
    for y_in_cpu in (False, True):
        ab = n_alphas
        while ab >= 1:
            at0 = ridge_peak_bytes(n_samples, n_features, n_targets, n_targets_batch=0,
                                   n_alphas_batch=ab, Y_in_cpu=y_in_cpu, **common)
            at1 = ridge_peak_bytes(n_samples, n_features, n_targets, n_targets_batch=1,
                                   n_alphas_batch=ab, Y_in_cpu=y_in_cpu, **common)
            per_target = max(1, at1 - at0)
            tb = min(n_targets, (budget_bytes - at0) // per_target) if budget_bytes > at0 else 0
            if tb >= floor:
                tb = int(tb)
                return {"n_targets_batch": None if tb >= n_targets else tb,
                        "n_alphas_batch": None if ab == n_alphas else ab, "Y_in_cpu": y_in_cpu,
                        "peak_bytes": ridge_peak_bytes(n_samples, n_features, n_targets,
                                                       n_targets_batch=tb, n_alphas_batch=ab,
                                                       Y_in_cpu=y_in_cpu, **common)}
            ab = ab // 2 if ab > 1 else 0
    need = ridge_peak_bytes(n_samples, n_features, n_targets, n_targets_batch=floor,
                            n_alphas_batch=1, Y_in_cpu=True, **common)
    raise MemoryError(
        f"a ridge fit of {n_samples} x {n_features} needs at least {need / 2**30:.2f} GiB of device "
        f"memory (one alpha, {floor} targets at a time), but budget_bytes allows "
        f"{budget_bytes / 2**30:.2f} GiB: free GPU memory or use backend='numpy'.")


def _gpu_batches(name, Xc, Yc, n_alphas, n_folds, kernel, n_targets_batch, n_alphas_batch,
                 Y_in_cpu):
    """Resolve "auto" batches: planned from free GPU memory on a GPU backend, None otherwise."""
    auto_t, auto_a = n_targets_batch == "auto", n_alphas_batch == "auto"
    if not (auto_t or auto_a):
        return n_targets_batch, n_alphas_batch, Y_in_cpu
    if "cuda" not in name:
        return (None if auto_t else n_targets_batch), (None if auto_a else n_alphas_batch), Y_in_cpu
    plan = plan_ridge_batches(Xc.shape[0], Xc.shape[1], Yc.shape[1], n_alphas=n_alphas,
                              n_folds=n_folds, itemsize=Xc.dtype.itemsize, kernel=kernel,
                              budget_bytes=int(MEMORY_FRACTION * _free_device_bytes()))
    return (plan["n_targets_batch"] if auto_t else n_targets_batch,
            plan["n_alphas_batch"] if auto_a else n_alphas_batch,
            Y_in_cpu or plan["Y_in_cpu"])


def _n_folds(splitter):
    return splitter.get_n_splits() if hasattr(splitter, "get_n_splits") else len(list(splitter))


def fit_encoding(X_train, Y_train, *, alphas=None, cv=5, standardize=True, fit_intercept=True,
                 backend=None, solver="auto", n_targets_batch="auto", n_alphas_batch="auto",
                 Y_in_cpu=False, random_state=None):
    """Fit ridge regression from features to voxels, alpha chosen per voxel by CV.

    Parameters
    ----------
    X_train : array-like of shape (n_samples, n_features)
        Features of the training stimuli. Must be finite.
    Y_train : array-like of shape (n_samples, n_voxels)
        Responses (repeat-averaged betas). Voxels with any NaN or infinite
        value are left out of the fit (a warning says how many); their
        weights, alphas and scores are NaN.
    alphas : array-like of shape (n_alphas,) or None
        Penalties to search; None uses :data:`DEFAULT_ALPHAS` (1e-1 ... 1e7).
        A single value fits plain ridge with that penalty for every voxel.
    cv : int or scikit-learn splitter
        Number of folds (KFold, in order unless ``random_state`` is given) or a splitter.
    standardize : bool
        Z-score each feature with its training mean and SD first (the usual
        choice: one alpha grid then fits features of any scale).
    fit_intercept : bool
        Centre features and responses on their training means; the intercept
        is the training mean response.
    backend : str or None
        himalaya backend; None uses "torch_cuda" on a GPU, else "numpy".
        The previous himalaya backend is restored afterwards. On a GPU backend
        the data are cast to float32.
    solver : {"auto", "primal", "kernel"}
        "primal" solves ridge in feature space (himalaya RidgeCV), "kernel" in
        sample space with a linear kernel (KernelRidgeCV; same solution, cheaper
        when n_features > n_samples); "auto" picks the cheaper one.
    n_targets_batch : int, None or "auto"
        Voxels solved at once (limits GPU memory); None solves all at once.
        "auto": on a GPU backend, the largest batch that fits in 80% of the
        free GPU memory (:func:`plan_ridge_batches`); None on the CPU.
    n_alphas_batch : int, None or "auto"
        Penalties solved at once; "auto" as for ``n_targets_batch`` (all of
        them unless even a small batch of voxels would not fit).
    Y_in_cpu : bool
        Keep Y in CPU memory with a GPU backend (for very many voxels); the
        automatic plan turns it on when Y alone would not fit.
    random_state : int or None
        Shuffle the folds with this seed; None keeps the samples in order.

    Returns
    -------
    model : EncodingModel

    Raises
    ------
    ValueError
        If X and Y disagree in n_samples, X has NaN values, there are too few
        samples for the folds, or alphas are not positive.
    """
    from himalaya.ridge import RidgeCV

    alphas = _check_alphas(alphas)
    Xc, Yc, x_mean, x_scale, y_mean, voxel_mask = _prepare(X_train, Y_train, standardize,
                                                          fit_intercept)
    splitter = _make_cv(cv, Xc.shape[0], random_state)
    name = resolve_backend(backend)
    if "cuda" in name or "mps" in name:
        # GPUs are many times faster in float32; ridge on z-scored data does not need float64
        Xc, Yc = Xc.astype(np.float32, copy=False), Yc.astype(np.float32, copy=False)
    if solver not in ("auto", "primal", "kernel"):
        raise ValueError(f"solver must be 'auto', 'primal' or 'kernel', got {solver!r}.")
    use_kernel = solver == "kernel" or (solver == "auto" and Xc.shape[1] > Xc.shape[0])
    n_targets_batch, n_alphas_batch, Y_in_cpu = _gpu_batches(
        name, Xc, Yc, len(alphas), _n_folds(splitter), use_kernel, n_targets_batch,
        n_alphas_batch, Y_in_cpu)
    batches = {"n_targets_batch": n_targets_batch, "n_alphas_batch": n_alphas_batch}
    with _himalaya_backend(name) as bk:
        if use_kernel:
            # with more features than samples, the n x n linear kernel is the cheaper system;
            # the solution is the same (ridge's primal/dual identity)
            from himalaya.kernel_ridge import KernelRidgeCV

            ridge = KernelRidgeCV(alphas=alphas, kernel="linear", cv=splitter,
                                  solver_params=batches, Y_in_cpu=Y_in_cpu)
            ridge.fit(Xc, Yc)
            coef = np.asarray(bk.to_numpy(ridge.get_primal_coef()))
        else:
            ridge = RidgeCV(alphas=alphas, cv=splitter, fit_intercept=False,
                            solver_params={**batches, "warn": False}, Y_in_cpu=Y_in_cpu)
            ridge.fit(Xc, Yc)
            coef = np.asarray(bk.to_numpy(ridge.coef_))
        best = np.asarray(bk.to_numpy(ridge.best_alphas_), dtype=float)
        cv_scores = np.asarray(bk.to_numpy(ridge.cv_scores_), dtype=float).reshape(-1)
    # himalaya may return the grid values with rounding error (and in float32 on GPU);
    # snapping to the grid makes "which alpha" an exact, comparable answer
    best = alphas[np.abs(np.log(best)[:, None] - np.log(alphas)[None, :]).argmin(axis=1)]
    return EncodingModel(
        coef=_expand(coef, voxel_mask), intercept=_expand(y_mean, voxel_mask),
        best_alphas=_expand(best, voxel_mask), cv_scores=_expand(cv_scores, voxel_mask),
        alphas=alphas, x_mean=np.asarray(x_mean), x_scale=np.asarray(x_scale),
        voxel_mask=voxel_mask, backend=name)


def predict_encoding(model, X):
    """Predictions of a fitted encoding model.

    Parameters
    ----------
    model : EncodingModel
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    Y_pred : ndarray of shape (n_samples, n_voxels)
        NaN for voxels that were not fitted.

    Raises
    ------
    ValueError
        If X has another number of features than the model was fitted on.
    """
    X = check_array(X, "X", dtype=None)
    if X.shape[1] != model.x_mean.shape[0]:
        raise ValueError(
            f"X has n_features={X.shape[1]} but the model was fitted on "
            f"n_features={model.x_mean.shape[0]}.")
    Xs = (X - model.x_mean) / model.x_scale
    return Xs @ model.coef + model.intercept


# --------------------------------------------------------------------------- banded
@dataclass
class BandedEncodingModel:
    """A fitted banded ridge model (one penalty per feature space and voxel).

    Attributes
    ----------
    coef : ndarray of shape (n_features_total, n_voxels)
    intercept : ndarray of shape (n_voxels,)
    deltas : ndarray of shape (n_bands, n_voxels)
        Log band weights chosen by himalaya (larger = band used more).
    bands : list of str
    slices : list of slice
        Columns of each band in the stacked features.
    x_mean, x_scale : ndarray of shape (n_features_total,)
    voxel_mask : ndarray of shape (n_voxels,), bool
    backend : str
    """

    coef: np.ndarray
    intercept: np.ndarray
    deltas: np.ndarray
    bands: list
    slices: list
    x_mean: np.ndarray
    x_scale: np.ndarray
    voxel_mask: np.ndarray
    backend: str = "numpy"

    def predict(self, Xs, split=False):
        """Predicted responses from a list of band features.

        Parameters
        ----------
        Xs : list of array-like, each of shape (n_samples, n_features_b)
        split : bool
            Return each band's contribution separately.

        Returns
        -------
        Y_pred : ndarray of shape (n_samples, n_voxels), or (n_bands, n_samples, n_voxels) if split
        """
        X = _stack_bands(Xs, [s.stop - s.start for s in self.slices])
        X = (X - self.x_mean) / self.x_scale
        if not split:
            return X @ self.coef + self.intercept
        parts = np.stack([X[:, s] @ self.coef[s] for s in self.slices])
        parts[0] += self.intercept  # the intercept goes with the first band
        return parts


def _stack_bands(Xs, widths=None):
    if isinstance(Xs, dict):
        Xs = list(Xs.values())
    Xs = [check_array(X, f"X_train[{b}]", dtype=None) for b, X in enumerate(Xs)]
    if len(Xs) < 2:
        raise ValueError(f"banded ridge needs at least 2 feature spaces, got {len(Xs)}.")
    check_consistent_samples(**{f"band{b}": X for b, X in enumerate(Xs)})
    if widths is not None and [X.shape[1] for X in Xs] != list(widths):
        raise ValueError(
            f"band widths {[X.shape[1] for X in Xs]} differ from the fitted widths {list(widths)}.")
    return np.hstack(Xs)


def fit_banded_encoding(Xs_train, Y_train, *, alphas=None, cv=5, n_iter=20, standardize=True,
                        backend=None, n_targets_batch="auto", n_alphas_batch="auto",
                        random_state=None):
    """Banded ridge: several feature spaces compete for each voxel.

    Each band (e.g. each model layer, or image vs caption features) gets its
    own penalty per voxel, found by himalaya's random search over band
    weights (BandedRidgeCV), so an uninformative band is shrunk away instead
    of diluting the others (Nunez-Elizalde et al. 2019; Dupré la Tour et al. 2022).

    Parameters
    ----------
    Xs_train : list or dict of array-like, each of shape (n_samples, n_features_b)
    Y_train : array-like of shape (n_samples, n_voxels)
    alphas : array-like or None
        Global penalties searched with each band-weight candidate.
    cv : int or splitter
    n_iter : int
        Random-search iterations (more is slower and finer).
    standardize : bool
        Z-score every feature and divide each band by sqrt(its width), so bands
        of different sizes start on an equal footing.
    backend : str or None
        himalaya backend; None uses "torch_cuda" on a GPU, else "numpy". On a
        GPU backend the data are cast to float32 (as in :func:`fit_encoding`).
    n_targets_batch, n_alphas_batch : int, None or "auto"
        See :func:`fit_encoding`.
    random_state : int or None
        Seeds himalaya's random search (and shuffles folds).

    Returns
    -------
    model : BandedEncodingModel
    """
    from himalaya.ridge import BandedRidgeCV

    names = list(Xs_train.keys()) if isinstance(Xs_train, dict) else \
        [f"band{b}" for b in range(len(Xs_train))]
    X = _stack_bands(Xs_train)
    widths = [np.shape(x)[1] for x in (Xs_train.values() if isinstance(Xs_train, dict)
                                       else Xs_train)]
    edges = np.r_[0, np.cumsum(widths)]
    slices = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
    alphas = _check_alphas(alphas)
    Xc, Yc, x_mean, x_scale, y_mean, voxel_mask = _prepare(X, Y_train, standardize, True)
    if standardize:
        for s in slices:
            x_scale[s] = x_scale[s] * np.sqrt(s.stop - s.start)
            Xc[:, s] = Xc[:, s] / np.sqrt(s.stop - s.start)
    splitter = _make_cv(cv, Xc.shape[0], random_state)
    seed = int(check_random_state(random_state).integers(2**31 - 1))
    groups = np.concatenate([np.full(w, b) for b, w in enumerate(widths)])
    name = resolve_backend(backend)
    if "cuda" in name or "mps" in name:
        Xc, Yc = Xc.astype(np.float32, copy=False), Yc.astype(np.float32, copy=False)
    n_targets_batch, n_alphas_batch, y_in_cpu = _gpu_batches(
        name, Xc, Yc, len(alphas), _n_folds(splitter), False, n_targets_batch, n_alphas_batch,
        False)
    with _himalaya_backend(name) as bk:
        model = BandedRidgeCV(groups=groups, cv=splitter, random_state=seed, Y_in_cpu=y_in_cpu,
                              solver_params={"alphas": alphas, "n_iter": n_iter,
                                             "progress_bar": False,
                                             "n_targets_batch": n_targets_batch,
                                             "n_alphas_batch": n_alphas_batch})
        model.fit(Xc, Yc)
        coef = np.asarray(bk.to_numpy(model.coef_))
        deltas = np.asarray(bk.to_numpy(model.deltas_))
    return BandedEncodingModel(
        coef=_expand(coef, voxel_mask), intercept=_expand(y_mean, voxel_mask),
        deltas=_expand(deltas, voxel_mask), bands=names, slices=slices,
        x_mean=np.asarray(x_mean), x_scale=np.asarray(x_scale), voxel_mask=voxel_mask,
        backend=name)


# --------------------------------------------------------------------------- scores
def _check_pair(Y_true, Y_pred):
    Y_true = check_array(Y_true, "Y_true", allow_nan=True, dtype=np.float64)
    Y_pred = check_array(Y_pred, "Y_pred", allow_nan=True, dtype=np.float64)
    if Y_true.shape != Y_pred.shape:
        raise ValueError(
            f"Y_true and Y_pred must have the same shape, got {Y_true.shape} and {Y_pred.shape}.")
    if Y_true.shape[0] < 2:
        raise ValueError(f"scores need at least 2 test samples, got n_samples={Y_true.shape[0]}.")
    return Y_true, Y_pred


def r2_per_voxel(Y_true, Y_pred):
    """Coefficient of determination of each voxel on held-out data.

    R^2 = 1 - sum_i (y_i - yhat_i)^2 / sum_i (y_i - mean(y))^2, with the mean
    taken over the test samples (scikit-learn's convention). It is negative
    when the prediction is worse than predicting the test mean.

    Parameters
    ----------
    Y_true, Y_pred : array-like of shape (n_samples, n_voxels)

    Returns
    -------
    r2 : ndarray of shape (n_voxels,)
        NaN for constant voxels and voxels with non-finite values.
    """
    Y_true, Y_pred = _check_pair(Y_true, Y_pred)
    ss_res = ((Y_true - Y_pred) ** 2).sum(axis=0)
    ss_tot = ((Y_true - Y_true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.nan)


def pearson_per_voxel(Y_true, Y_pred):
    """Pearson correlation between observed and predicted responses, per voxel.

    Parameters
    ----------
    Y_true, Y_pred : array-like of shape (n_samples, n_voxels)

    Returns
    -------
    r : ndarray of shape (n_voxels,)
        NaN where either column is constant or non-finite.
    """
    from .stats import pearson

    Y_true, Y_pred = _check_pair(Y_true, Y_pred)
    with np.errstate(invalid="ignore"):
        return np.asarray(pearson(Y_true, Y_pred, axis=0), dtype=np.float64)


def normalise_by_noise_ceiling(scores, noise_ceiling, *, kind="r2", min_nc=1.0):
    """Divide scores by the noise ceiling: the fraction of explainable variance explained.

    Parameters
    ----------
    scores : array-like of shape (n_voxels,)
    noise_ceiling : array-like of shape (n_voxels,)
        In percent (0-100), as returned by
        :func:`scaleinv_utils.reliability.noise_ceiling` and ``subj.noise_ceiling()``.
    kind : {"r2", "r"}
        R^2 is divided by NC/100; Pearson r, a square-root quantity, by sqrt(NC/100).
    min_nc : float
        Voxels with a ceiling below this many percent get NaN: dividing by
        a ceiling near zero only amplifies noise.

    Returns
    -------
    normalised : ndarray of shape (n_voxels,)
        About 1 for a model as good as the noise allows.

    Raises
    ------
    ValueError
        If shapes differ or the ceiling looks like a fraction rather than a percent.
    """
    scores = check_array(scores, "scores", ndim=1, allow_nan=True)
    nc = check_array(noise_ceiling, "noise_ceiling", ndim=1, allow_nan=True)
    if scores.shape != nc.shape:
        raise ValueError(f"scores has shape {scores.shape} but noise_ceiling has {nc.shape}.")
    if kind not in ("r2", "r"):
        raise ValueError(f"kind must be 'r2' or 'r', got {kind!r}.")
    finite = nc[np.isfinite(nc)]
    if finite.size and (finite.min() < 0 or finite.max() > 100):
        raise ValueError(
            f"noise_ceiling must be in percent (0-100), found range [{finite.min():.3g}, "
            f"{finite.max():.3g}].")
    if finite.size > 10 and finite.max() <= 1.0:
        warnings.warn("noise_ceiling is at most 1: is it a fraction? This function expects "
                      "percent (0-100).", stacklevel=2)
    frac = nc / 100.0
    denom = frac if kind == "r2" else np.sqrt(frac)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((nc >= min_nc) & (frac > 0), scores / denom, np.nan)


@dataclass
class EncodingResult:
    """Held-out scores of an encoding model.

    Attributes
    ----------
    r2 : ndarray of shape (n_voxels,)
        Test-set R^2.
    r : ndarray of shape (n_voxels,)
        Test-set Pearson r.
    noise_ceiling : ndarray of shape (n_voxels,) or None
        Percent of variance explainable on the test set.
    r2_nc : ndarray of shape (n_voxels,) or None
        R^2 / (NC / 100): fraction of the explainable variance explained.
    r_nc : ndarray of shape (n_voxels,) or None
        r / sqrt(NC / 100).
    model : EncodingModel or None
    Y_pred : ndarray of shape (n_test, n_voxels) or None
    """

    r2: np.ndarray
    r: np.ndarray
    noise_ceiling: np.ndarray = None
    r2_nc: np.ndarray = None
    r_nc: np.ndarray = None
    model: EncodingModel = None
    Y_pred: np.ndarray = field(default=None, repr=False)

    def __repr__(self):
        med = np.nanmedian(self.r2) if np.isfinite(self.r2).any() else np.nan
        extra = ""
        if self.r2_nc is not None and np.isfinite(self.r2_nc).any():
            extra = f", median R^2/NC={np.nanmedian(self.r2_nc):.3f}"
        return f"EncodingResult(n_voxels={self.r2.size}, median R^2={med:.3f}{extra})"


def score_encoding(model, X_test, Y_test, *, noise_ceiling=None, min_nc=1.0):
    """Score a fitted model (or given predictions) on held-out data.

    Parameters
    ----------
    model : EncodingModel, BandedEncodingModel or None
        With None, ``X_test`` is taken to be the predictions themselves.
    X_test : array-like of shape (n_samples, n_features), or list of bands for a banded model
    Y_test : array-like of shape (n_samples, n_voxels)
    noise_ceiling : array-like of shape (n_voxels,) or None
        Test-set noise ceiling in percent (``subj.noise_ceiling("test")``).
    min_nc : float
        See :func:`normalise_by_noise_ceiling`.

    Returns
    -------
    result : EncodingResult
    """
    Y_pred = np.asarray(X_test, dtype=np.float64) if model is None else model.predict(X_test)
    r2 = r2_per_voxel(Y_test, Y_pred)
    r = pearson_per_voxel(Y_test, Y_pred)
    r2_nc = r_nc = nc = None
    if noise_ceiling is not None:
        nc = check_array(noise_ceiling, "noise_ceiling", ndim=1, allow_nan=True)
        r2_nc = normalise_by_noise_ceiling(r2, nc, kind="r2", min_nc=min_nc)
        r_nc = normalise_by_noise_ceiling(r, nc, kind="r", min_nc=min_nc)
    return EncodingResult(r2=r2, r=r, noise_ceiling=nc, r2_nc=r2_nc, r_nc=r_nc,
                          model=model, Y_pred=Y_pred)


def _subject_features(features, subj, aligned):
    F = check_array(features, "features", dtype=None)
    n_rows = subj.betas.shape[0]
    if aligned:
        if F.shape[0] != n_rows:
            raise ValueError(
                f"features has {F.shape[0]} rows but the subject has {n_rows} images "
                "(aligned=True expects one row per row of subj.betas).")
        return F
    idx = np.asarray(subj.image_index)
    if idx.max() >= F.shape[0]:
        raise ValueError(
            f"features has {F.shape[0]} rows but subj.image_index refers to row {idx.max()}: "
            "pass one row per image of the subset (subset.stimuli), or aligned=True.")
    return F[idx]


def encoding_scores(features, subj, *, alphas=None, cv=5, standardize=True, backend=None,
                    min_nc=1.0, aligned=False, random_state=None, **fit_params):
    """Fit on a subject's training images, score on the shared test images.

    Parameters
    ----------
    features : array-like of shape (n_images, n_features)
        One row per image of the subset (``subset.stimuli``); the subject's
        rows are picked with ``subj.image_index``. With ``aligned=True``, one
        row per row of ``subj.betas`` instead.
    subj : SubjectData
        Uses ``betas``, ``train``, ``test`` and ``noise_ceiling("test")``.
    alphas, cv, standardize, backend, random_state
        See :func:`fit_encoding`.
    min_nc : float
        See :func:`normalise_by_noise_ceiling`.
    aligned : bool
    **fit_params
        Passed to :func:`fit_encoding`.

    Returns
    -------
    result : EncodingResult
        With ``r2``, ``r``, their noise-ceiling-normalised versions, the
        noise ceiling and the fitted model.
    """
    F = _subject_features(features, subj, aligned)
    train, test = np.asarray(subj.train), np.asarray(subj.test)
    if test.sum() < 2:
        raise ValueError(f"the subject has {int(test.sum())} test images; scoring needs at least 2.")
    model = fit_encoding(F[train], subj.betas[train], alphas=alphas, cv=cv,
                         standardize=standardize, backend=backend, random_state=random_state,
                         **fit_params)
    return score_encoding(model, F[test], subj.betas[test], noise_ceiling=subj.noise_ceiling("test"),
                          min_nc=min_nc)


# --------------------------------------------------------------------------- layers
@dataclass
class LayerwiseResult:
    """Encoding scores of every layer, and the best layer of each voxel.

    Attributes
    ----------
    layers : list of str
    scores : ndarray of shape (n_layers, n_voxels)
        The chosen score (``score``) of each layer's model.
    best_layer : ndarray of shape (n_voxels,), int
        Index into ``layers`` of the best-predicting layer; -1 where no layer
        beats ``min_score``.
    best_score : ndarray of shape (n_voxels,)
    preferred_depth : ndarray of shape (n_voxels,)
        Score-weighted mean layer index (positive scores only), in [0, n_layers - 1];
        a smoother hierarchy map than the argmax. NaN where no score is positive.
    results : list of EncodingResult
    score : str
    """

    layers: list
    scores: np.ndarray
    best_layer: np.ndarray
    best_score: np.ndarray
    preferred_depth: np.ndarray
    results: list = field(repr=False)
    score: str = "r2"

    def best_layer_names(self, none=""):
        """ndarray of shape (n_voxels,), str: name of each voxel's best layer."""
        names = np.array(list(self.layers) + [none], dtype=object)
        return names[self.best_layer].astype(str)


def layerwise_encoding(features_by_layer, subj, *, score="r2", min_score=0.0, **kwargs):
    """One encoding model per layer; which layer predicts each voxel best.

    Parameters
    ----------
    features_by_layer : dict of str to array-like, or list of array-like
        Features of each layer, each of shape (n_images, n_features_l).
    subj : SubjectData
    score : {"r2", "r", "r2_nc", "r_nc"}
        Score used to rank layers.
    min_score : float
        Voxels whose best score is not above this get ``best_layer = -1``.
    **kwargs
        Passed to :func:`encoding_scores` (alphas, cv, backend, ...).

    Returns
    -------
    result : LayerwiseResult
    """
    if score not in ("r2", "r", "r2_nc", "r_nc"):
        raise ValueError(f"score must be one of 'r2', 'r', 'r2_nc', 'r_nc', got {score!r}.")
    if isinstance(features_by_layer, dict):
        layers = [str(k) for k in features_by_layer]
        feats = list(features_by_layer.values())
    else:
        feats = list(features_by_layer)
        layers = [f"layer{i}" for i in range(len(feats))]
    if not feats:
        raise ValueError("features_by_layer is empty; pass at least one layer.")
    results = [encoding_scores(F, subj, **kwargs) for F in feats]
    S = np.vstack([getattr(res, score) for res in results])
    return _layer_summary(layers, S, results, score, min_score)


def _layer_summary(layers, S, results, score, min_score):
    filled = np.where(np.isfinite(S), S, -np.inf)
    best = np.argmax(filled, axis=0)
    best_score = filled[best, np.arange(S.shape[1])]
    best = np.where(best_score > min_score, best, -1)
    best_score = np.where(np.isfinite(best_score), best_score, np.nan)
    pos = np.clip(np.where(np.isfinite(S), S, 0.0), 0, None)
    total = pos.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(total > 0, (np.arange(len(layers))[:, None] * pos).sum(axis=0) / total,
                         np.nan)
    return LayerwiseResult(layers=layers, scores=S, best_layer=best, best_score=best_score,
                           preferred_depth=depth, results=results, score=score)


# --------------------------------------------------------------------------- summaries
def summarise_by_label(scores, labels, *, statistic="mean", n_boot=1000, ci=0.95,
                       random_state=None, order=None):
    """Summarise per-voxel scores within each ROI or network, with bootstrap intervals.

    Voxels are resampled with replacement within each label. This interval
    describes the spread over voxels of one subject; it ignores spatial
    correlation between neighbouring voxels and the sampling of test images,
    so it is narrower than an interval over subjects or stimuli.

    Parameters
    ----------
    scores : array-like of shape (n_voxels,)
        NaN voxels are ignored.
    labels : array-like of shape (n_voxels,)
        ROI or network of each voxel (``subj.voxels.network``).
    statistic : {"mean", "median"}
    n_boot : int
        Bootstrap resamples.
    ci : float
        Coverage of the percentile interval.
    random_state : int or None
    order : list or None
        Labels to report, in this order (default: sorted unique labels).

    Returns
    -------
    table : pandas.DataFrame
        One row per label: ``label``, ``n_voxels`` (finite scores),
        ``value``, ``ci_low``, ``ci_high``.

    Raises
    ------
    ValueError
        If shapes differ or the statistic is unknown.
    """
    import pandas as pd

    scores = check_array(scores, "scores", ndim=1, allow_nan=True)
    labels = np.asarray(labels)
    if labels.shape != scores.shape:
        raise ValueError(f"labels has shape {labels.shape} but scores has {scores.shape}.")
    funcs = {"mean": np.mean, "median": np.median}
    if statistic not in funcs:
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}.")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}.")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}.")
    func = funcs[statistic]
    rng = check_random_state(random_state)
    keys = sorted(set(labels.tolist())) if order is None else list(order)
    rows = []
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    for key in keys:
        vals = scores[(labels == key) & np.isfinite(scores)]
        if vals.size == 0:
            rows.append((key, 0, np.nan, np.nan, np.nan))
            continue
        # resample in blocks so that n_boot x n_voxels indices never sit in memory at once
        block = max(1, int(2e6 // vals.size))
        boot = np.concatenate([
            func(vals[rng.integers(0, vals.size, size=(min(block, int(n_boot) - start), vals.size))],
                 axis=1)
            for start in range(0, int(n_boot), block)])
        rows.append((key, vals.size, float(func(vals)), float(np.percentile(boot, lo_q)),
                     float(np.percentile(boot, hi_q))))
    return pd.DataFrame(rows, columns=["label", "n_voxels", "value", "ci_low", "ci_high"])
