"""Artificial and biological neurons: paper B's framework on a stimulus axis.

Ren et al. (2025) treat each attention head of a vision-language model as an
*artificial neuron* (AN) and ask which voxels, *biological neurons* (BNs), its
activity predicts. This module transfers the framework from a movie's time
axis to NSD's stimulus axis and keeps every step array in / array out:

1. **AN activity.** A head's output at one layer, pooled over tokens, is a
   vector of ``head_dim`` numbers per stimulus. :func:`an_activity` reduces it
   to one number per stimulus (the head's "time course" over stimuli), and
   :func:`artificial_neurons` stacks every head of every layer into a
   stimulus x AN matrix.
2. **Atoms.** Sparse dictionary learning (:func:`learn_atoms`) writes each
   AN's time course as a sparse combination of a few shared *atoms*,
   the representative activation patterns of the network.
3. **Voxel maps and BN sets.** Each AN or atom is mapped to every voxel by
   encoding (:func:`map_to_voxels`: ridge regression with a per-voxel
   penalty chosen by cross-validation, from :mod:`scaleinv_utils.encoding`).
   The signed coefficients form a voxel map; a parametric or permutation test
   with Benjamini-Hochberg FDR correction keeps the voxels predicted
   significantly, split by the sign of the effect: positively and negatively
   driven BN sets (*polarity*).
4. **Measures.** Which networks the BN sets fall in
   (:func:`network_counts`), how much the BN sets of different ANs overlap
   compared with shuffled maps (:func:`redundancy`), how the balance of
   positive and negative BNs changes across layers (:func:`polarity_by_layer`,
   :func:`polarity_trend`), and which voxels are predicted by one tower only
   or by both (:func:`modality_specificity`).

Functions
---------
an_activity             (n_samples, n_heads, head_dim) -> (n_samples, n_heads)
artificial_neurons      every head of every layer -> stimulus x AN matrix
readout_reference       the tower's fixed readout (PC1 of its final embedding) over stimuli
orient_ans              flip ANs to correlate positively with one readout: signs comparable across layers
learn_atoms             sparse dictionary learning -> atoms and sparse loadings
match_components        match two sets of components up to permutation and sign
map_to_voxels           signed maps, one of four tests, FDR, BN sets of positive/negative polarity
glm_t_test, ridge_permutation_test, correlation_t_test, correlation_permutation_test
                        the four tests (joint/marginal x parametric/permutation)
map_subject             the same on a subject's train/test split
fdr_bh                  Benjamini-Hochberg q-values (from scaleinv_utils.stats)
dice, jaccard           overlap of two voxel sets
pairwise_overlap        overlap of every pair of BN sets
expected_dice           chance Dice of two random sets of given sizes
swap_null               BN sets with fixed sizes and voxel detection frequencies (curveball)
detectability_strata    network x noise-ceiling-decile labels
redundancy              observed overlap vs a swap (or size-only) null
overlap_vs_correlation  redundancy relative to the AN-AN correlation structure
network_counts          BN voxels of each AN in each network
network_polarity        each network's BN polarity against random voxel signs
polarity_by_layer       positive / negative BN counts per layer
polarity_trend          slopes of those counts across layers (a description)
mirrored_test           intervals and a p-value for mirrored trends (layer-order and sign-flip nulls)
modality_specificity    voxels predicted by tower A only, B only, or both
cross_modal_test        B4: AN-count-matched coverage, chance and a mismatched-caption null
compare_feature_sets    B1: noise-ceiling-normalised prediction of several AN sets vs baselines
verdict                 estimate + interval + p -> "supports" / "contradicts" / "inconclusive"
make_toy_neurons        a planted world with a known answer
make_independent_an_world   ANs without redundancy, voxels of uneven SNR (B2's null world)
make_polarity_world     networks with random-sign relations to latents (B3's recovery world)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from . import stats
from .stats import Verdict, verdict  # noqa: F401  (one implementation for both papers; chapter 7 calls nn.verdict)
from ._validation import check_array, check_consistent_samples, check_random_state

__all__ = [
    "AN_METHODS", "ArtificialNeurons", "Atoms", "VoxelMaps", "RedundancyResult", "MirrorResult",
    "Verdict", "an_activity", "artificial_neurons", "learn_atoms", "match_components",
    "map_to_voxels", "map_subject", "glm_t_test", "ridge_permutation_test", "correlation_t_test",
    "correlation_permutation_test", "fdr_bh", "dice", "jaccard", "pairwise_overlap",
    "expected_dice", "curveball_round", "swap_null", "detectability_strata", "redundancy",
    "overlap_vs_correlation", "network_counts", "polarity_by_layer", "polarity_trend",
    "mirrored_test", "readout_reference", "orient_ans", "network_polarity",
    "modality_specificity", "compare_feature_sets", "cross_modal_test", "FusionResult",
    "fusion_test", "verdict", "make_toy_neurons", "make_independent_an_world",
    "make_polarity_world", "make_fusion_world",
]

#: Ways to reduce a head's output vector to one number per stimulus.
AN_METHODS = ("pc1", "norm", "mean")


# --------------------------------------------------------------------------- AN activity
def an_activity(head_outputs, method="pc1"):
    """One activity value per stimulus for each attention head.

    A head's token-pooled output is a vector ``h_i`` of ``head_dim`` numbers
    for stimulus ``i``. Paper B needs a scalar per stimulus (its "time
    course"); three reductions are offered:

    ``"pc1"`` (default)
        The projection of ``h_i`` (centred over stimuli) on the head's first
        principal component: the single direction along which the head's
        output varies most across stimuli. It keeps the most variance of any
        linear scalar summary. A principal component has no sign of its own;
        it is oriented so that it correlates positively with the output norm
        ``||h_i||``, so "more activity" means "a larger output". The sign
        matters: polarity (positively vs negatively driven voxels) is read
        relative to it.
    ``"norm"``
        ``||h_i||``: how strongly the head responds, whatever the direction.
        Sign-free and simple, but it ignores what the head encodes.
    ``"mean"``
        The mean of the ``head_dim`` coordinates: a fixed, data-independent
        projection, as averaging a unit's channels would give.

    Parameters
    ----------
    head_outputs : array-like of shape (n_samples, n_heads, head_dim)
        Token-pooled outputs of one layer's heads (before the output
        projection), e.g. ``get_features(..., heads=True)[layer]``.
    method : {"pc1", "norm", "mean"}

    Returns
    -------
    activity : ndarray of shape (n_samples, n_heads)

    Raises
    ------
    ValueError
        If the array is not 3-D, has fewer than 2 samples or the method is unknown.
    """
    H = check_array(head_outputs, "head_outputs", ndim=3, min_samples=2, dtype=None)
    if not np.issubdtype(H.dtype, np.floating):
        H = H.astype(np.float64)
    if method not in AN_METHODS:
        raise ValueError(f"method must be one of {AN_METHODS}, got {method!r}.")
    if H.shape[1] < 1 or H.shape[2] < 1:
        raise ValueError(f"head_outputs needs at least one head and one dimension, got shape {H.shape}.")
    norm = np.linalg.norm(H, axis=2)
    if method == "norm":
        return norm.astype(np.float64)
    if method == "mean":
        return H.mean(axis=2).astype(np.float64)
    Hc = H.astype(np.float64) - H.mean(axis=0, keepdims=True)
    # One small (head_dim x head_dim) eigenproblem per head, batched.
    cov = np.einsum("nhd,nhe->hde", Hc, Hc)
    _, vecs = np.linalg.eigh(cov)
    top = vecs[:, :, -1]  # (n_heads, head_dim), eigh sorts ascending
    scores = np.einsum("nhd,hd->nh", Hc, top)
    nc = norm - norm.mean(axis=0)
    orient = np.sign((scores * nc).sum(axis=0))
    # A head whose norm is constant has no "more activity" direction; fall back to
    # the sign that makes the component's loadings sum to a positive number.
    fallback = np.sign(top.sum(axis=1))
    orient = np.where(orient == 0, np.where(fallback == 0, 1.0, fallback), orient)
    return scores * orient


def _quiet_nanmean(x, axis=0):
    """``np.nanmean``, NaN without a RuntimeWarning where a slice has no value (a network
    without any BN: its fraction is undefined, and the tables say so with NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


@dataclass
class ArtificialNeurons:
    """The stimulus x AN matrix of a model and what each column is.

    Attributes
    ----------
    activity : ndarray of shape (n_samples, n_ans)
    layer : ndarray of shape (n_ans,), str
        Layer name of each AN.
    layer_index : ndarray of shape (n_ans,), int
        Depth of the layer, 0 for the first layer given.
    head : ndarray of shape (n_ans,), int
    layers : list of str
        Layer names in depth order.
    method : str
    """

    activity: np.ndarray
    layer: np.ndarray
    layer_index: np.ndarray
    head: np.ndarray
    layers: list
    method: str = "pc1"

    @property
    def names(self):
        """list of str: ``"layer/h<head>"`` for each AN."""
        return [f"{l}/h{h}" for l, h in zip(self.layer, self.head)]

    @property
    def n_ans(self):
        return self.activity.shape[1]

    def __repr__(self):
        return (f"ArtificialNeurons(n_samples={self.activity.shape[0]}, n_ans={self.n_ans}, "
                f"layers={len(self.layers)}, method={self.method!r})")


def artificial_neurons(head_outputs_by_layer, method="pc1", layers=None):
    """Stack the heads of every layer into one stimulus x AN matrix.

    Parameters
    ----------
    head_outputs_by_layer : dict of str to array-like, or list of array-like
        Each of shape (n_samples, n_heads, head_dim), in depth order (as
        ``get_features(model, stimuli, layers=..., heads=True)`` returns).
    method : {"pc1", "norm", "mean"}
        See :func:`an_activity`.
    layers : list of str or None
        Keep only these layers (dict input), in this order.

    Returns
    -------
    ans : ArtificialNeurons

    Raises
    ------
    ValueError
        If no layer is given, a layer is missing or the layers disagree in n_samples.
    """
    if isinstance(head_outputs_by_layer, dict):
        names = [str(k) for k in head_outputs_by_layer] if layers is None else [str(l) for l in layers]
        missing = [l for l in names if l not in head_outputs_by_layer]
        if missing:
            raise ValueError(f"layers {missing} are not in head_outputs_by_layer; "
                             f"available: {list(head_outputs_by_layer)}.")
        arrays = [head_outputs_by_layer[l] for l in names]
    else:
        arrays = list(head_outputs_by_layer)
        names = [f"layer{i}" for i in range(len(arrays))] if layers is None else list(layers)
        if len(names) != len(arrays):
            raise ValueError(f"layers has {len(names)} names for {len(arrays)} arrays.")
    if not arrays:
        raise ValueError("head_outputs_by_layer is empty; pass at least one layer.")
    acts = [an_activity(a, method) for a in arrays]
    check_consistent_samples(**{n: a for n, a in zip(names, acts)})
    layer = np.concatenate([np.full(a.shape[1], n, dtype=object) for n, a in zip(names, acts)])
    layer_index = np.concatenate([np.full(a.shape[1], i) for i, a in enumerate(acts)])
    head = np.concatenate([np.arange(a.shape[1]) for a in acts])
    return ArtificialNeurons(activity=np.hstack(acts), layer=layer.astype(str),
                             layer_index=layer_index, head=head, layers=names, method=method)


# --------------------------------------------------------------------------- atoms
@dataclass
class Atoms:
    """Sparse dictionary of AN activity: each AN is a sparse mix of a few atoms.

    With ``Z`` the AN time courses (each centred and scaled to unit norm over
    stimuli), ``Z.T ~= loadings.T @ atoms.T``.

    Attributes
    ----------
    atoms : ndarray of shape (n_samples, n_atoms)
        Representative activation patterns over stimuli (unit norm each),
        ordered by how much the ANs use them, and oriented so that the ANs
        load on them positively on balance.
    loadings : ndarray of shape (n_atoms, n_ans)
        Sparse codes: how much each AN uses each atom.
    explained_variance : float
        Fraction of the (standardised) AN variance the sparse reconstruction keeps.
    sparsity : float
        Fraction of zero loadings.
    alpha : float
    """

    atoms: np.ndarray
    loadings: np.ndarray
    explained_variance: float
    sparsity: float
    alpha: float

    @property
    def n_atoms(self):
        return self.atoms.shape[1]

    def __repr__(self):
        return (f"Atoms(n_samples={self.atoms.shape[0]}, n_atoms={self.n_atoms}, "
                f"n_ans={self.loadings.shape[1]}, explained={self.explained_variance:.2f}, "
                f"sparsity={self.sparsity:.2f})")


def _unit_columns(A, name):
    A = A - A.mean(axis=0)
    norms = np.linalg.norm(A, axis=0)
    if np.any(norms == 0):
        raise ValueError(f"{name} has {int((norms == 0).sum())} constant columns; "
                         "drop them first (a constant AN carries no information).")
    return A / norms


def learn_atoms(activity, n_atoms, *, alpha=0.1, method="batch", max_iter=200, batch_size=16,
                random_state=None):
    """Sparse dictionary learning over the stimulus x AN matrix.

    Each AN's time course ``z_j`` (centred, unit norm over stimuli) is written
    as a sparse combination of ``n_atoms`` shared atoms ``d_k``::

        min_{D, C}  sum_j 1/2 ||z_j - D c_j||^2 + alpha ||c_j||_1,   ||d_k|| = 1

    (scikit-learn's DictionaryLearning with the ANs as samples). The atoms
    are the "representative activation patterns" of paper B; the sparse codes
    say which ANs use which atom.

    Parameters
    ----------
    activity : array-like of shape (n_samples, n_ans)
        AN activity (e.g. ``artificial_neurons(...).activity``).
    n_atoms : int
        Size of the dictionary; at most n_ans and at most n_samples.
    alpha : float
        Sparsity penalty on the codes. Because every AN time course has unit
        norm, it is on a fixed scale: 0 gives dense codes, about 0.1-0.3 one
        to three atoms per AN, 1 or more all-zero codes.
    method : {"batch", "minibatch"}
        ``DictionaryLearning`` (exact; fine up to a few thousand ANs) or
        ``MiniBatchDictionaryLearning`` (for many ANs).
    max_iter : int
    batch_size : int
        Mini-batch size in ANs (``method="minibatch"`` only); keep it well below n_ans,
        or each epoch is one batch and learning stops early.
    random_state : int or None
        Seeds scikit-learn's initialisation and the order of mini-batches.

    Returns
    -------
    atoms : Atoms

    Raises
    ------
    ValueError
        If n_atoms is out of range, alpha is negative, an AN is constant or the
        method is unknown.
    """
    from sklearn.decomposition import DictionaryLearning, MiniBatchDictionaryLearning

    A = check_array(activity, "activity", min_samples=2)
    n_samples, n_ans = A.shape
    if not isinstance(n_atoms, (int, np.integer)) or not 1 <= n_atoms <= min(n_ans, n_samples):
        raise ValueError(f"n_atoms must be an integer between 1 and min(n_ans={n_ans}, "
                         f"n_samples={n_samples}), got n_atoms={n_atoms!r}.")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a non-negative number, got alpha={alpha!r}.")
    if method not in ("batch", "minibatch"):
        raise ValueError(f"method must be 'batch' or 'minibatch', got {method!r}.")
    Z = _unit_columns(A, "activity")
    seed = int(check_random_state(random_state).integers(2**31 - 1))
    if method == "batch":
        model = DictionaryLearning(n_components=int(n_atoms), alpha=alpha, max_iter=max_iter,
                                   fit_algorithm="cd", transform_algorithm="lasso_cd",
                                   transform_alpha=alpha, random_state=seed)
    else:
        model = MiniBatchDictionaryLearning(n_components=int(n_atoms), alpha=alpha,
                                            max_iter=max_iter, batch_size=batch_size,
                                            fit_algorithm="cd", transform_algorithm="lasso_cd",
                                            transform_alpha=alpha, random_state=seed)
    # The objective only sees the ANs' span: the optimal atoms are combinations of the
    # AN time courses, and an orthonormal basis V of that span keeps norms and residuals.
    # Learning in coordinates (n_ans x rank instead of n_ans x n_samples) gives the same
    # solution, many times faster when there are many more stimuli than ANs.
    _, sv, Vt = np.linalg.svd(Z.T, full_matrices=False)
    rank = max(int((sv > sv[0] * 1e-10).sum()), int(n_atoms))
    Vt = Vt[:rank]
    coords = Z.T @ Vt.T  # (n_ans, rank)
    with warnings.catch_warnings():
        # Coordinate descent warns about convergence on tiny penalties; the
        # reconstruction score below reports the quality that matters.
        warnings.simplefilter("ignore")
        model.fit(coords)
        code = model.transform(coords)  # (n_ans, n_atoms)
    D = np.asarray(model.components_, dtype=np.float64) @ Vt  # (n_atoms, n_samples)
    norms = np.linalg.norm(D, axis=1)
    norms[norms == 0] = 1.0
    D = D / norms[:, None]
    code = code * norms[None, :]
    # Orientation and order make atoms comparable across runs: an atom is "what its
    # ANs do" (positive loadings on balance), and the most used atoms come first.
    sign = np.sign(code.sum(axis=0))
    sign[sign == 0] = 1.0
    D *= sign[:, None]
    code = code * sign[None, :]
    order = np.argsort(-np.abs(code).sum(axis=0), kind="stable")
    D, code = D[order], code[:, order]
    recon = code @ D
    explained = 1.0 - float(((Z.T - recon) ** 2).sum() / (Z ** 2).sum())
    return Atoms(atoms=D.T.copy(), loadings=code.T.copy(), explained_variance=explained,
                 sparsity=float(np.mean(code == 0)), alpha=float(alpha))


def match_components(A, B):
    """Match the columns of B to those of A, up to permutation and sign.

    Parameters
    ----------
    A : array-like of shape (n_samples, n_a)
        Reference components (e.g. planted sources).
    B : array-like of shape (n_samples, n_b)
        Estimated components (e.g. atoms).

    Returns
    -------
    index : ndarray of shape (n_a,), int
        ``B[:, index[i]]`` is matched to ``A[:, i]``; -1 for columns of A left
        without a partner (when n_b < n_a).
    sign : ndarray of shape (n_a,)
        +1 or -1: flip ``B[:, index[i]]`` by this to align it with ``A[:, i]`` (0 if unmatched).
    corr : ndarray of shape (n_a,)
        Absolute Pearson correlation of each matched pair (NaN if unmatched).

    Raises
    ------
    ValueError
        If A and B differ in n_samples.
    """
    from scipy.optimize import linear_sum_assignment

    A = check_array(A, "A", min_samples=2)
    B = check_array(B, "B", min_samples=2)
    check_consistent_samples(A=A, B=B)
    C = np.nan_to_num(_corr_columns(A, B))  # a constant column matches nothing
    rows, cols = linear_sum_assignment(-np.abs(C))
    index = -np.ones(A.shape[1], dtype=int)
    sign = np.zeros(A.shape[1])
    corr = np.full(A.shape[1], np.nan)
    index[rows] = cols
    sign[rows] = np.where(C[rows, cols] >= 0, 1.0, -1.0)
    corr[rows] = np.abs(C[rows, cols])
    return index, sign, corr


# --------------------------------------------------------------------------- voxel maps
#: Benjamini-Hochberg q-values: the package's one implementation, :func:`scaleinv_utils.stats.fdr_bh`.
fdr_bh = stats.fdr_bh


@dataclass
class VoxelMaps:
    """Signed voxel maps of ANs or atoms, their significance and BN sets.

    Attributes
    ----------
    coef : ndarray of shape (n_regressors, n_voxels)
        Ridge coefficients on standardised regressors (response units per SD of
        the regressor): the signed voxel map of each AN/atom.
    stat : ndarray of shape (n_regressors, n_voxels)
        The tested statistic (t for ``"parametric"``, the coefficient or
        correlation for ``"permutation"``); its sign is the polarity.
    pvalues, qvalues : ndarray of shape (n_regressors, n_voxels)
        Two-sided p-values and BH-FDR q-values (within each regressor's map).
    positive, negative : ndarray of shape (n_regressors, n_voxels), bool
        BN sets: q <= q and stat > 0 (resp. < 0).
    r_test : ndarray or None
        Held-out Pearson r: shape (n_voxels,) for a joint model, (n_regressors,
        n_voxels) for marginal maps (one univariate model per regressor).
    r2_test : ndarray or None
        Held-out R^2, same shape as ``r_test``.
    best_alphas : ndarray of shape (n_voxels,) or None
        Penalty chosen per voxel (joint model).
    names : list of str
    joint : bool
    significance : str
    q : float
    """

    coef: np.ndarray
    stat: np.ndarray
    pvalues: np.ndarray
    qvalues: np.ndarray
    positive: np.ndarray
    negative: np.ndarray
    r_test: np.ndarray = None
    r2_test: np.ndarray = None
    best_alphas: np.ndarray = None
    names: list = field(default_factory=list)
    joint: bool = True
    significance: str = "parametric"
    q: float = 0.05

    @property
    def significant(self):
        """ndarray of shape (n_regressors, n_voxels), bool: BN set of either polarity."""
        return self.positive | self.negative

    @property
    def n_positive(self):
        """ndarray of shape (n_regressors,): positively driven BNs per regressor."""
        return self.positive.sum(axis=1)

    @property
    def n_negative(self):
        """ndarray of shape (n_regressors,): negatively driven BNs per regressor."""
        return self.negative.sum(axis=1)

    def best_regressor(self):
        """Index of the regressor with the largest training |stat| for each voxel.

        Chosen on the training stimuli only, so the held-out score of the chosen
        regressor (:meth:`best_r_test`) is not inflated by the choice.

        Returns
        -------
        best : ndarray of shape (n_voxels,), int
        """
        return np.argmax(np.nan_to_num(np.abs(self.stat), nan=-1.0), axis=0)

    def best_r_test(self):
        """Held-out r of each voxel's model: the joint model, or the best regressor's.

        Returns
        -------
        r : ndarray of shape (n_voxels,)

        Raises
        ------
        ValueError
            If the maps were fitted without test stimuli.
        """
        if self.r_test is None:
            raise ValueError("these maps have no held-out scores; pass test= to map_to_voxels.")
        if self.r_test.ndim == 1:
            return self.r_test
        return self.r_test[self.best_regressor(), np.arange(self.r_test.shape[1])]

    def bn_sets(self, q=None):
        """Positive and negative BN sets at another FDR level.

        Returns
        -------
        positive, negative : ndarray of shape (n_regressors, n_voxels), bool
        """
        q = self.q if q is None else _check_q(q)
        sig = np.nan_to_num(self.qvalues, nan=1.0) <= q
        return sig & (self.stat > 0), sig & (self.stat < 0)

    def __repr__(self):
        return (f"VoxelMaps(n_regressors={self.coef.shape[0]}, n_voxels={self.coef.shape[1]}, "
                f"joint={self.joint}, significance={self.significance!r}, q={self.q}, "
                f"positive BNs={int(self.positive.sum())}, negative BNs={int(self.negative.sum())})")


def _check_q(q):
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got q={q}.")
    return float(q)


def _as_mask(mask, n, name):
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype == bool:
        if m.shape != (n,):
            raise ValueError(f"{name} must be a boolean mask of shape ({n},), got {m.shape}.")
        return m
    idx = np.zeros(n, dtype=bool)
    idx[m.astype(int)] = True
    return idx


def _standardise(X, mean=None, sd=None):
    mean = X.mean(axis=0) if mean is None else mean
    sd = X.std(axis=0) if sd is None else sd
    return (X - mean) / np.where(sd > 0, sd, 1.0), mean, sd


def _corr_columns(X, Y):
    """Pearson correlation of every column of X with every column of Y: (p, q).

    The all-pairs form of :func:`scaleinv_utils.stats.pearson` (which pairs
    columns one to one); written as one matrix product so no (n, p, q) array
    is built. Undefined (constant-column) correlations are NaN, as there.
    """
    Xc = X - X.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    den = np.linalg.norm(Xc, axis=0)[:, None] * np.linalg.norm(Yc, axis=0)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(den > 0, Xc.T @ Yc / den, np.nan), -1.0, 1.0)


def _ridge_path(Xs, Yc, alpha_of_voxel):
    """Ridge coefficients with one penalty per voxel, by one SVD: (k, n_voxels)."""
    U, s, Vt = np.linalg.svd(Xs, full_matrices=False)
    UtY = U.T @ Yc
    W = np.empty((Xs.shape[1], Yc.shape[1]))
    for a in np.unique(alpha_of_voxel):
        sel = alpha_of_voxel == a
        W[:, sel] = Vt.T @ ((s / (s ** 2 + a))[:, None] * UtY[:, sel])
    return W, U, s, Vt


# The four tests of map_to_voxels: (joint | marginal) x (parametric | permutation).
# Each takes the standardised training regressors Xs (n, k) and the centred
# training responses Yc (n, n_voxels) and returns (stat, pvalues), both (k, n_voxels).
def glm_t_test(Xs, Yc):
    """Joint, parametric: the GLM t-test of each least-squares coefficient.

    ``y_v = X b_v + c_v + e_v`` with Gaussian errors; ``t = b / se(b)``,
    ``se = sqrt(diag((X'X)^-1) * RSS / df)``, df = n - k - 1 (the intercept is
    the centring of X and Y).

    Parameters
    ----------
    Xs : array-like of shape (n_samples, n_regressors)
        Regressors, centred (standardised) over the samples.
    Yc : array-like of shape (n_samples, n_voxels)
        Responses, centred over the samples.

    Returns
    -------
    stat, pvalues : ndarray of shape (n_regressors, n_voxels)
        t statistics and two-sided p-values.

    Raises
    ------
    ValueError
        If the regressors are collinear or leave no degree of freedom.
    """
    from scipy import stats as sps

    n, k = Xs.shape
    df = n - k - 1
    if df < 1:
        raise ValueError(f"too few training stimuli: the GLM t-test needs n > k + 1, got "
                         f"n={n}, k={k}.")
    G = Xs.T @ Xs
    if np.linalg.matrix_rank(G) < k:
        raise ValueError("the regressors are collinear on the training stimuli, so the "
                         "GLM t-test is undefined; use joint=False, fewer regressors "
                         "(e.g. atoms) or significance='permutation'.")
    Ginv = np.linalg.inv(G)
    B = Ginv @ Xs.T @ Yc
    resid = Yc - Xs @ B
    se = np.sqrt(np.outer(np.diag(Ginv), (resid ** 2).sum(axis=0) / df))
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = np.where(se > 0, B / se, 0.0)
    return stat, 2 * sps.t.sf(np.abs(stat), df)


def ridge_permutation_test(Xs, Yc, best_alphas, n_permutations, random_state=None):
    """Joint, permutation: each ridge coefficient against response-label permutations.

    The rows of ``Yc`` are permuted (the regressors keep their mutual
    correlations), every voxel's ridge coefficients are refitted with its own
    penalty, and ``p = (1 + #|null| >= |observed|) / (1 + n_permutations)``
    (:func:`scaleinv_utils.stats.permutation_pvalue`, two-sided). It tests
    "the voxel depends on none of the regressors".

    Parameters
    ----------
    Xs : array-like of shape (n_samples, n_regressors)
    Yc : array-like of shape (n_samples, n_voxels)
    best_alphas : array-like of shape (n_voxels,)
        Ridge penalty of each voxel.
    n_permutations : int
    random_state : int, Generator or None

    Returns
    -------
    stat, pvalues : ndarray of shape (n_regressors, n_voxels)
        Ridge coefficients and permutation p-values.
    """
    rng = check_random_state(random_state)
    stat, U, s, Vt = _ridge_path(Xs, Yc, best_alphas)
    shrink = {a: Vt.T * (s / (s ** 2 + a))[None, :] for a in np.unique(best_alphas)}
    exceed = np.zeros_like(stat)
    for _ in range(int(n_permutations)):
        UtYp = U[rng.permutation(Xs.shape[0])].T @ Yc  # = U.T @ Yc[inverse permutation]
        null = np.empty_like(stat)
        for a, M in shrink.items():
            sel = best_alphas == a
            null[:, sel] = M @ UtYp[:, sel]
        exceed += np.abs(null) >= np.abs(stat)
    # the counting form of stats.permutation_pvalue, without storing every permutation
    return stat, (1.0 + exceed) / (1.0 + int(n_permutations))


def correlation_t_test(r, n_samples):
    """Marginal, parametric: the t-test of a Pearson correlation (df = n - 2).

    Parameters
    ----------
    r : array-like of shape (n_regressors, n_voxels)
        Correlations (NaN where undefined).
    n_samples : int

    Returns
    -------
    stat, pvalues : ndarray of shape (n_regressors, n_voxels)
        ``t = r sqrt(df / (1 - r^2))`` and two-sided p-values (NaN where r is).
    """
    from scipy import stats as sps

    r = np.asarray(r, dtype=np.float64)
    df = int(n_samples) - 2
    rr = np.clip(np.nan_to_num(r), -1 + 1e-15, 1 - 1e-15)
    stat = rr * np.sqrt(df / (1 - rr ** 2))
    pvalues = 2 * sps.t.sf(np.abs(stat), df)
    return stat, np.where(np.isfinite(r), pvalues, np.nan)


def correlation_permutation_test(Xs, Yc, r, n_permutations, random_state=None):
    """Marginal, permutation: each correlation against stimulus-label permutations.

    Parameters
    ----------
    Xs : array-like of shape (n_samples, n_regressors)
        Standardised regressors.
    Yc : array-like of shape (n_samples, n_voxels)
        Centred responses.
    r : array-like of shape (n_regressors, n_voxels)
        The observed correlations.
    n_permutations : int
    random_state : int, Generator or None

    Returns
    -------
    stat, pvalues : ndarray of shape (n_regressors, n_voxels)
        The correlations (NaN -> 0) and two-sided permutation p-values,
        ``(1 + #|null| >= |r|) / (1 + n_permutations)`` with a 1e-12 tolerance
        for the rounding of the same correlation computed twice.
    """
    rng = check_random_state(random_state)
    n = Xs.shape[0]
    stat = np.nan_to_num(np.asarray(r, dtype=np.float64))
    norms = np.linalg.norm(Yc, axis=0)
    Ys = Yc / np.where(norms > 0, norms, 1.0)
    Xn = Xs / np.sqrt(n)
    exceed = np.zeros_like(stat)
    for _ in range(int(n_permutations)):
        exceed += np.abs(Xn[rng.permutation(n)].T @ Ys) >= np.abs(stat) - 1e-12
    pvalues = (1.0 + exceed) / (1.0 + int(n_permutations))
    return stat, np.where(np.isfinite(r), pvalues, np.nan)


def _fit_joint(X, Y, train_m, test_m, alphas, cv, backend, seed):
    """Ridge fit with per-voxel penalties; coefficients, penalties and held-out scores."""
    from .encoding import fit_encoding, pearson_per_voxel, r2_per_voxel

    model = fit_encoding(X[train_m], Y[train_m], alphas=alphas, cv=cv, backend=backend,
                         random_state=seed)
    coef = np.asarray(model.coef, dtype=np.float64)
    best_alphas = np.asarray(model.best_alphas, dtype=np.float64)
    r_test = r2_test = None
    if test_m is not None and test_m.sum() >= 2:
        pred = model.predict(X[test_m])
        r_test = pearson_per_voxel(Y[test_m], pred)
        r2_test = r2_per_voxel(Y[test_m], pred)
    return coef, best_alphas, r_test, r2_test


def _fit_marginal(X, Y, train_m, test_m, x_mean, x_sd):
    """Univariate least squares per (regressor, voxel); correlations and held-out scores."""
    Xtr, Ytr = X[train_m], Y[train_m]
    r = _corr_columns(Xtr, Ytr)
    coef = r * Ytr.std(axis=0)[None, :]
    r_test = r2_test = None
    if test_m is not None and test_m.sum() >= 2:
        # The univariate prediction is affine in the regressor, so its held-out
        # correlation is the test-set correlation with the training slope's sign.
        r_test = np.sign(coef) * _corr_columns(X[test_m], Y[test_m])
        Xte = (X[test_m] - x_mean) / x_sd
        Yte = Y[test_m]
        # Prediction b * x + mean_train(y), expanded so no (k, n_test, n_voxels) array is
        # built: sum (e - b x)^2 = sum e^2 - 2 b sum x e + b^2 sum x^2, e = y - mean_train(y).
        E = Yte - Ytr.mean(axis=0)
        ss_res = ((E ** 2).sum(axis=0)[None, :] - 2 * coef * (Xte.T @ E)
                  + coef ** 2 * (Xte ** 2).sum(axis=0)[:, None])
        ss_tot = ((Yte - Yte.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r2_test = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.nan)
    return r, coef, r_test, r2_test


def map_to_voxels(regressors, Y, *, train=None, test=None, joint=True, significance="parametric",
                  q=0.05, alphas=None, cv=5, n_permutations=1000, names=None, backend=None,
                  random_state=None):
    """Map ANs or atoms to voxels: signed maps, tests, FDR and BN sets.

    Two designs:

    ``joint=True`` (atoms, a few ANs)
        One multiple regression per voxel with every regressor at once,
        ``y_v = X w_v + b_v``; ridge with a per-voxel penalty chosen by
        cross-validation (:func:`scaleinv_utils.encoding.fit_encoding`). A
        coefficient is a regressor's *unique* contribution.
    ``joint=False`` (many ANs)
        One univariate regression per regressor and voxel (paper B maps each
        AN separately). With one standardised regressor, ridge only shrinks
        the slope towards 0; sign, test and held-out correlation are those of
        the Pearson correlation, so the map is computed in closed form (the
        ordinary least-squares slope, i.e. the correlation in units of the voxel's SD).

    Significance (on the training stimuli), one of four tests, then
    Benjamini-Hochberg FDR (:func:`scaleinv_utils.stats.fdr_bh`) over the
    voxels of each regressor's map:

    ============  =============================  =====================================
    design        ``"parametric"``               ``"permutation"``
    ============  =============================  =====================================
    joint         :func:`glm_t_test`             :func:`ridge_permutation_test`
    marginal      :func:`correlation_t_test`     :func:`correlation_permutation_test`
    ============  =============================  =====================================

    The parametric tests are exact for Gaussian noise (GLM: df = n - k - 1, as
    in paper B's GLM; correlation: df = n - 2). The permutation tests permute
    the stimulus labels of the responses ``n_permutations`` times;
    p = (1 + #|null| >= |observed|) / (1 + n_permutations), so the smallest
    p is 1/(1 + n_permutations): use enough permutations for FDR over many
    voxels. The joint permutation test asks "the voxel depends on none of the
    regressors" per coefficient, so with strongly correlated regressors
    prefer the parametric test.

    Parameters
    ----------
    regressors : array-like of shape (n_samples, n_regressors)
        AN activity or atoms, one row per row of Y.
    Y : array-like of shape (n_samples, n_voxels)
        Voxel responses (finite).
    train, test : array-like of bool of shape (n_samples,) or indices, or None
        Rows used to fit and test (default: all rows fit, no held-out score).
    joint : bool
    significance : {"parametric", "permutation"}
    q : float
        FDR level defining the BN sets.
    alphas : array-like or None
        Ridge penalties searched (joint; default encoding.DEFAULT_ALPHAS).
    cv : int
        Folds for the penalty search (joint).
    n_permutations : int
    names : list of str or None
        Names of the regressors.
    backend : str or None
        himalaya backend (joint).
    random_state : int or None
        Seeds the permutations and the fold shuffling.

    Returns
    -------
    maps : VoxelMaps

    Raises
    ------
    ValueError
        If shapes disagree, q or the test is invalid, there are too few
        training stimuli, or (joint parametric) the regressors are collinear.
    """
    X = check_array(regressors, "regressors", min_samples=3)
    Y = check_array(Y, "Y", min_samples=3)
    n = check_consistent_samples(regressors=X, Y=Y)
    q = _check_q(q)
    if significance not in ("parametric", "permutation"):
        raise ValueError(f"significance must be 'parametric' or 'permutation', got {significance!r}.")
    if significance == "permutation" and int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}.")
    k = X.shape[1]
    if names is None:
        names = [f"regressor{j}" for j in range(k)]
    elif len(names) != k:
        raise ValueError(f"names has {len(names)} entries for n_regressors={k}.")
    train_m = _as_mask(train, n, "train")
    test_m = _as_mask(test, n, "test")
    train_m = np.ones(n, dtype=bool) if train_m is None else train_m
    n_tr = int(train_m.sum())
    min_needed = k + 2 if joint else 3
    if n_tr < min_needed:
        raise ValueError(f"too few training stimuli: need at least {min_needed} for "
                         f"{k} regressor(s) (joint={joint}), got {n_tr}.")
    rng = check_random_state(random_state)
    Xs, x_mean, x_sd = _standardise(X[train_m])
    if np.any(x_sd == 0):
        raise ValueError(f"regressors has {int((x_sd == 0).sum())} constant column(s) on the "
                         "training stimuli; drop them first.")
    Yc = Y[train_m] - Y[train_m].mean(axis=0)
    best_alphas = None
    if joint:
        coef, best_alphas, r_test, r2_test = _fit_joint(X, Y, train_m, test_m, alphas, cv, backend,
                                                        int(rng.integers(2**31 - 1)))
        if significance == "parametric":
            stat, pvalues = glm_t_test(Xs, Yc)
        else:
            stat, pvalues = ridge_permutation_test(Xs, Yc, best_alphas, n_permutations, rng)
    else:
        r, coef, r_test, r2_test = _fit_marginal(X, Y, train_m, test_m, x_mean, x_sd)
        if significance == "parametric":
            stat, pvalues = correlation_t_test(r, n_tr)
        else:
            stat, pvalues = correlation_permutation_test(Xs, Yc, r, n_permutations, rng)
    qvalues = fdr_bh(pvalues, axis=1)
    sig = np.nan_to_num(qvalues, nan=1.0) <= q
    return VoxelMaps(coef=coef, stat=stat, pvalues=pvalues, qvalues=qvalues,
                     positive=sig & (stat > 0), negative=sig & (stat < 0), r_test=r_test,
                     r2_test=r2_test, best_alphas=best_alphas, names=list(names), joint=joint,
                     significance=significance, q=q)


def map_subject(regressors, subj, *, aligned=False, **kwargs):
    """:func:`map_to_voxels` on a subject: fit and test on its training images, score on the shared test images.

    Parameters
    ----------
    regressors : array-like of shape (n_images, n_regressors)
        One row per image of the subset (rows picked with ``subj.image_index``),
        or one row per row of ``subj.betas`` with ``aligned=True``.
    subj : SubjectData
    aligned : bool
    **kwargs
        Passed to :func:`map_to_voxels`.

    Returns
    -------
    maps : VoxelMaps
    """
    X = check_array(regressors, "regressors")
    if aligned:
        if X.shape[0] != subj.betas.shape[0]:
            raise ValueError(f"regressors has {X.shape[0]} rows but the subject has "
                             f"{subj.betas.shape[0]} images (aligned=True).")
    else:
        idx = np.asarray(subj.image_index)
        if idx.max() >= X.shape[0]:
            raise ValueError(f"regressors has {X.shape[0]} rows but subj.image_index refers to row "
                             f"{idx.max()}: pass one row per image of the subset, or aligned=True.")
        X = X[idx]
    return map_to_voxels(X, subj.betas, train=np.asarray(subj.train), test=np.asarray(subj.test),
                         **kwargs)


# --------------------------------------------------------------------------- overlap
def _check_masks(masks, name="masks"):
    M = np.asarray(masks)
    if M.ndim == 1:
        M = M[None, :]
    if M.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_sets, n_voxels), got shape {M.shape}.")
    if M.dtype != bool:
        if not np.isin(M, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got values other than 0 and 1.")
        M = M.astype(bool)
    return M


def _two_voxel_sets(a, b):
    """Two boolean voxel sets of the same shape, checked."""
    a, b = _check_masks(a, "a")[0], _check_masks(b, "b")[0]
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}.")
    return a, b


def dice(a, b):
    """Dice overlap 2|A & B| / (|A| + |B|) of two voxel sets (NaN if both are empty).

    Parameters
    ----------
    a, b : array-like of shape (n_voxels,), bool

    Returns
    -------
    dice : float
    """
    a, b = _two_voxel_sets(a, b)
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else float("nan")


def jaccard(a, b):
    """Jaccard overlap |A & B| / |A | B| of two voxel sets (NaN if both are empty).

    Parameters
    ----------
    a, b : array-like of shape (n_voxels,), bool

    Returns
    -------
    jaccard : float
    """
    a, b = _two_voxel_sets(a, b)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else float("nan")


def pairwise_overlap(masks, metric="dice"):
    """Overlap of every pair of BN sets.

    Parameters
    ----------
    masks : array-like of shape (n_sets, n_voxels), bool
    metric : {"dice", "jaccard"}

    Returns
    -------
    overlap : ndarray of shape (n_sets, n_sets)
        NaN where both sets are empty; 1 on the diagonal of non-empty sets.
    """
    if metric not in ("dice", "jaccard"):
        raise ValueError(f"metric must be 'dice' or 'jaccard', got {metric!r}.")
    M = _check_masks(masks).astype(np.float64)
    inter = M @ M.T
    size = M.sum(axis=1)
    den = size[:, None] + size[None, :]
    if metric == "jaccard":
        den = den - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, (2 if metric == "dice" else 1) * inter / den, np.nan)
    return out


def expected_dice(size_a, size_b, n_voxels):
    """Chance Dice of two sets placed uniformly at random among n_voxels.

    E|A & B| = |A||B| / N exactly (hypergeometric mean), and the denominator
    |A| + |B| is fixed, so E[Dice] = 2|A||B| / (N (|A| + |B|)).

    Parameters
    ----------
    size_a, size_b : int or array-like
    n_voxels : int

    Returns
    -------
    dice : float or ndarray
    """
    a = np.asarray(size_a, dtype=float)
    b = np.asarray(size_b, dtype=float)
    if n_voxels < 1 or np.any(a > n_voxels) or np.any(b > n_voxels) or np.any(a < 0) or np.any(b < 0):
        raise ValueError(f"set sizes must lie in [0, n_voxels={n_voxels}].")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a + b > 0, 2 * a * b / (n_voxels * (a + b)), np.nan)


@dataclass
class RedundancyResult:
    """How much the BN sets of different ANs overlap, against a null baseline.

    Attributes
    ----------
    observed : float
        The redundancy statistic: the mean over non-empty sets of the overlap
        with their best-matching other set (``statistic="max"``), or the mean
        overlap over all pairs of non-empty sets (``statistic="mean"``).
    null : ndarray of shape (n_shuffles,)
        The same on each null sample (see ``null_model``).
    chance : float
        Mean of ``null``.
    ratio : float
        observed / chance.
    z : float
        (observed - chance) / SD(null).
    pvalue : float
        One-sided: (1 + #null >= observed) / (1 + n_shuffles).
    overlap : ndarray of shape (n_sets, n_sets)
    pair_chance : ndarray of shape (n_sets, n_sets)
        Mean overlap of each pair over the null samples.
    multiplicity : ndarray of shape (n_voxels,), int
        How many sets contain each voxel: "how many ANs predict this BN"
        (its detection frequency; the ``"swap"`` null keeps it).
    partners : ndarray of shape (n_sets,), int
        For each set, the number of other sets whose overlap with it exceeds
        the 95th percentile of null pair overlaps.
    metric : str
    statistic : str
    null_model : str
        ``"swap"`` or ``"sizes"``.
    stratified : bool
    """

    observed: float
    null: np.ndarray = field(repr=False)
    chance: float
    ratio: float
    z: float
    pvalue: float
    overlap: np.ndarray = field(repr=False)
    pair_chance: np.ndarray = field(repr=False)
    multiplicity: np.ndarray = field(repr=False)
    partners: np.ndarray = field(repr=False)
    metric: str = "dice"
    statistic: str = "max"
    null_model: str = "swap"
    stratified: bool = False


def _pair_values(O):
    iu = np.triu_indices(O.shape[0], 1)
    vals = O[iu]
    return vals[np.isfinite(vals)]


def _redundancy_stat(O, statistic):
    if statistic == "mean":
        vals = _pair_values(O)
        return float(vals.mean()) if vals.size else float("nan")
    off = O.copy()
    np.fill_diagonal(off, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: empty sets
        best = np.nanmax(off, axis=1)
    best = best[np.isfinite(best)]
    return float(best.mean()) if best.size else float("nan")


def _shuffle_sets(M, rng, strata_codes):
    """Each set's voxels permuted independently (within strata): keeps set sizes only."""
    if strata_codes is None:
        keys = rng.random(M.shape)
        return np.take_along_axis(M, np.argsort(keys, axis=1), axis=1)
    out = np.empty_like(M)
    for idx in strata_codes:
        keys = rng.random((M.shape[0], idx.size))
        out[:, idx] = np.take_along_axis(M[:, idx], np.argsort(keys, axis=1), axis=1)
    return out


def _strata_layout(labels, n_voxels):
    """Column order grouping strata, each column's stratum and the block starts."""
    if labels is None:
        codes = np.zeros(n_voxels, dtype=int)
    else:
        _, codes = np.unique(np.asarray(labels), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    return order, sorted_codes, starts


def curveball_round(M, rng, sorted_codes=None, starts=None):
    """One round of curveball trades: a random pairing of the sets, every pair traded.

    For two sets A and B, the voxels in exactly one of them are pooled and
    dealt back at random, A receiving as many as it gave (Strona et al.
    2014). Set sizes (row sums) and each voxel's multiplicity (column sums)
    are unchanged; with strata, trades stay within each stratum, so each
    set's count per stratum is kept too. The chain is reversible and its
    stationary law is uniform over the 0/1 matrices with these margins.

    Parameters
    ----------
    M : ndarray of shape (n_sets, n_voxels) or (n_chains, n_sets, n_voxels), bool
        Columns grouped by stratum (contiguous blocks), when strata are used.
        Several chains are traded at once, each with its own pairing.
    rng : numpy.random.Generator
    sorted_codes : ndarray of shape (n_voxels,), int, or None
        Stratum of each column, non-decreasing.
    starts : ndarray of int or None
        First column of each stratum block.

    Returns
    -------
    M : ndarray of the input's shape, bool
        A new matrix (matrices) with the same margins.
    """
    single = M.ndim == 2
    X = M[None] if single else M
    n_chains, n_sets, n_vox = X.shape
    if sorted_codes is None:
        sorted_codes = np.zeros(n_vox, dtype=int)
        starts = np.array([0])
    perm = np.argsort(rng.random((n_chains, n_sets)), axis=1) + n_sets * np.arange(n_chains)[:, None]
    half = n_sets // 2
    ia, ib = perm[:, :half].ravel(), perm[:, half:2 * half].ravel()
    flat = X.reshape(n_chains * n_sets, n_vox)
    A, B = flat[ia], flat[ib]
    only_a = A & ~B
    pool = only_a | (B & ~A)
    # Order each pair's columns by (stratum, pooled first, random key): inside each
    # stratum block, the first n_a(stratum) pooled columns go to A, the rest to B.
    # Deal each pair's pooled voxels back at random, stratum by stratum: sort the pooled
    # entries by (pair, stratum, random key); in each (pair, stratum) group the first
    # n_a go to A, where n_a is how many of the group A gave. Only pooled entries are
    # touched, so the cost follows the sets' sizes, not the number of voxels.
    n_strata = starts.size
    rows, cols = np.nonzero(pool)
    group = rows * n_strata + sorted_codes[cols]
    order = np.lexsort((rng.random(rows.size), group))
    rows, cols, group = rows[order], cols[order], group[order]
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    size = np.diff(np.r_[first, group.size])
    rank = np.arange(group.size) - np.repeat(first, size)
    n_a = np.bincount(group, weights=only_a[rows, cols], minlength=group.max() + 1 if group.size else 0)
    give_a = rank < n_a[group]
    new_a = A & B
    new_b = new_a.copy()
    new_a[rows[give_a], cols[give_a]] = True
    new_b[rows[~give_a], cols[~give_a]] = True
    out = flat.copy()
    out[ia] = new_a
    out[ib] = new_b
    out = out.reshape(X.shape)
    return out[0] if single else out


def swap_null(masks, n_samples, *, n_rounds=20, strata=None, random_state=None):
    """Null samples of BN sets with the observed set sizes and voxel multiplicities.

    Fixed-margin swap randomisation (curveball trades, :func:`curveball_round`)
    in the parallel scheme of Besag & Clifford (1989): the chain is run
    ``n_rounds`` rounds from the observed matrix to a hub, then every sample
    is ``n_rounds`` independent rounds from the hub. Because the chain is
    reversible, the observed matrix and the samples are exchangeable under
    the null "the sets are random given their margins", so a p-value against
    them is exact however well the chain mixes (more rounds give more power).

    Parameters
    ----------
    masks : array-like of shape (n_sets, n_voxels), bool
    n_samples : int
    n_rounds : int
        Rounds of pairwise trades between hub and sample (each round trades
        every set once).
    strata : array-like of shape (n_voxels,) or None
        Trade only within these labels (each set's count per stratum is kept).
    random_state : int, Generator or None

    Returns
    -------
    samples : ndarray of shape (n_samples, n_sets, n_voxels), bool
    """
    M = _check_masks(masks)
    if int(n_rounds) < 1:
        raise ValueError(f"n_rounds must be at least 1, got {n_rounds}.")
    if strata is not None and np.asarray(strata).shape != (M.shape[1],):
        raise ValueError(f"strata must have shape ({M.shape[1]},), got {np.asarray(strata).shape}.")
    rng = check_random_state(random_state)
    order, codes, starts = _strata_layout(strata, M.shape[1])
    inverse = np.argsort(order)
    hub = M[:, order]
    for _ in range(int(n_rounds)):
        hub = curveball_round(hub, rng, codes, starts)
    out = np.empty((int(n_samples),) + M.shape, dtype=bool)
    chunk = max(1, int(4e6 // M.size))  # chains traded together, bounded memory
    for s in range(0, int(n_samples), chunk):
        X = np.repeat(hub[None], min(chunk, int(n_samples) - s), axis=0)
        for _ in range(int(n_rounds)):
            X = curveball_round(X, rng, codes, starts)
        out[s:s + X.shape[0]] = X[:, :, inverse]
    return out


def detectability_strata(noise_ceiling, networks=None, *, n_bins=10):
    """Labels grouping voxels of similar detectability: network x noise-ceiling bin.

    A voxel with a high noise ceiling is detected by many ANs whatever they
    encode; shuffling BN sets only within these strata keeps that, so overlap
    beyond "both sets contain the reliable voxels" is what is tested.

    Parameters
    ----------
    noise_ceiling : array-like of shape (n_voxels,)
        E.g. ``subj.noise_ceiling()``; NaN voxels form their own bin.
    networks : array-like of shape (n_voxels,) or None
        Quantiles are taken within each network.
    n_bins : int
        Quantile bins (10: deciles).

    Returns
    -------
    strata : ndarray of shape (n_voxels,), str
        ``"<network>|nc<bin>"``.
    """
    nc = check_array(noise_ceiling, "noise_ceiling", ndim=1, allow_nan=True)
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}.")
    net = np.full(nc.shape, "all", dtype=object) if networks is None else np.asarray(networks)
    if net.shape != nc.shape:
        raise ValueError(f"networks must have shape {nc.shape}, got {net.shape}.")
    bins = np.full(nc.shape, -1)
    for key in np.unique(net.astype(str)):
        sel = (net.astype(str) == key) & np.isfinite(nc)
        if sel.sum() == 0:
            continue
        ranks = np.argsort(np.argsort(nc[sel], kind="stable"), kind="stable")
        bins[sel] = (ranks * int(n_bins)) // sel.sum()
    return np.array([f"{n}|nc{b}" for n, b in zip(net.astype(str), bins)])


def redundancy(masks, *, metric="dice", statistic="max", n_shuffles=200, null="swap", strata=None,
               n_rounds=20, random_state=None):
    """Functional redundancy: do different ANs predict overlapping BN sets?

    The observed overlap statistic is compared with BN sets drawn from a null
    that keeps what overlap by chance depends on. Two nulls:

    ``"swap"`` (default)
        Fixed-margin swap randomisation (:func:`swap_null`): every set keeps
        its size and every voxel keeps its *detection frequency* (how many
        sets contain it). Reliable voxels are detected by many ANs whether or
        not the ANs share anything, so a null that lets them move to other
        voxels calls independent ANs "redundant"; this one does not.
    ``"sizes"``
        Each set's voxels shuffled independently: keeps set sizes only. It
        confuses reliability with redundancy; kept for comparison.

    Either can be stratified (``strata``): trades or shuffles stay within
    labels such as :func:`detectability_strata` (network x noise-ceiling
    decile) or networks, so each set also keeps its count per stratum.

    Two statistics:

    ``"max"`` (default)
        For each AN, the overlap of its BN set with the most similar other
        AN's set, averaged over ANs: "does every AN have a near-duplicate?".
    ``"mean"``
        The mean overlap over all pairs. Under the swap null it is nearly
        fixed by the voxels' multiplicities (the total pairwise intersection
        is ``sum_v C(m_v, 2)``), so its ratio stays near 1 even when its
        p-value is small; prefer ``"max"`` there.

    Parameters
    ----------
    masks : array-like of shape (n_sets, n_voxels), bool
        BN sets, one per AN (e.g. ``maps.significant`` or ``maps.positive``).
    metric : {"dice", "jaccard"}
    statistic : {"max", "mean"}
    n_shuffles : int
        Null samples.
    null : {"swap", "sizes"}
    strata : array-like of shape (n_voxels,) or None
    n_rounds : int
        Curveball rounds per swap sample (``null="swap"``).
    random_state : int or None

    Returns
    -------
    result : RedundancyResult

    Raises
    ------
    ValueError
        If fewer than two sets are non-empty or the inputs are malformed.
    """
    if metric not in ("dice", "jaccard"):
        raise ValueError(f"metric must be 'dice' or 'jaccard', got {metric!r}.")
    if statistic not in ("max", "mean"):
        raise ValueError(f"statistic must be 'max' or 'mean', got {statistic!r}.")
    if null not in ("swap", "sizes"):
        raise ValueError(f"null must be 'swap' or 'sizes', got {null!r}.")
    M = _check_masks(masks)
    n_nonempty = int((M.sum(axis=1) > 0).sum())
    if n_nonempty < 2:
        raise ValueError(f"redundancy needs at least 2 non-empty sets, got {n_nonempty}.")
    if int(n_shuffles) < 2:
        raise ValueError(f"n_shuffles must be at least 2, got {n_shuffles}.")
    codes = None
    if strata is not None:
        labels = np.asarray(strata)
        if labels.shape != (M.shape[1],):
            raise ValueError(f"strata must have shape ({M.shape[1]},), got {labels.shape}.")
        codes = [np.flatnonzero(labels == u) for u in np.unique(labels)]
    rng = check_random_state(random_state)
    O = pairwise_overlap(M, metric)
    observed = _redundancy_stat(O, statistic)
    if null == "swap":
        samples = swap_null(M, int(n_shuffles), n_rounds=n_rounds, strata=strata, random_state=rng)
    else:
        samples = (_shuffle_sets(M, rng, codes) for _ in range(int(n_shuffles)))
    null_stat = np.empty(int(n_shuffles))
    pair_sum = np.zeros_like(O)
    pair_null = []
    for s, Ms in enumerate(samples):
        Os = pairwise_overlap(Ms, metric)
        null_stat[s] = _redundancy_stat(Os, statistic)
        pair_sum += np.nan_to_num(Os)
        if s < 50:
            pair_null.append(_pair_values(Os))
    pair_chance = np.where(np.isfinite(O), pair_sum / int(n_shuffles), np.nan)
    chance = float(null_stat.mean())
    sd = float(null_stat.std(ddof=1))
    thresh = np.percentile(np.concatenate(pair_null), 95)
    off = np.where(np.isfinite(O), O, -np.inf)
    np.fill_diagonal(off, -np.inf)
    partners = (off > thresh).sum(axis=1).astype(int)
    z = (observed - chance) / sd if sd > 0 else float("nan")
    ratio = observed / chance if chance > 0 else float("nan")
    pvalue = float(stats.permutation_pvalue(observed, null_stat, alternative="greater"))
    return RedundancyResult(observed=observed, null=null_stat, chance=chance, ratio=float(ratio),
                            z=float(z), pvalue=pvalue, overlap=O, pair_chance=pair_chance,
                            multiplicity=M.sum(axis=0).astype(int), partners=partners,
                            metric=metric, statistic=statistic, null_model=null,
                            stratified=strata is not None)


def overlap_vs_correlation(result, activity, *, bins=(0.0, 0.2, 0.5, 1.0), n_permutations=1000,
                           random_state=None):
    """Redundancy relative to the AN-AN correlation structure.

    Two ANs whose activities correlate predict overlapping BN sets for that
    reason alone. This splits the pairs of ANs by their absolute correlation
    over stimuli and reports, per bin, the observed mean overlap, its chance
    level under the null of ``result`` and their ratio; and the Spearman
    correlation between each pair's excess overlap (observed - chance) and
    its |r|, with a Mantel-type p-value (ANs relabelled at random in the
    correlation matrix). Overlap above chance among weakly correlated pairs
    is redundancy that the ANs' shared activity does not explain.

    Parameters
    ----------
    result : RedundancyResult
        From :func:`redundancy` on the BN sets of these ANs.
    activity : array-like of shape (n_samples, n_sets)
        The ANs' activity (columns in the order of the BN sets).
    bins : sequence of float
        Edges of the |r| bins (the last bin includes its right edge).
    n_permutations : int
    random_state : int or None

    Returns
    -------
    table : pandas.DataFrame
        One row per bin: ``n_pairs``, ``observed``, ``chance``, ``ratio``.
    rho : float
        Spearman correlation of excess overlap with |r| over pairs.
    pvalue : float
        One-sided (greater) Mantel p-value of ``rho``.
    """
    import pandas as pd

    A = check_array(activity, "activity", min_samples=3)
    O, C = result.overlap, result.pair_chance
    if A.shape[1] != O.shape[0]:
        raise ValueError(f"activity has {A.shape[1]} columns but result has {O.shape[0]} BN sets.")
    R = np.abs(_corr_columns(A, A))
    iu = np.triu_indices(O.shape[0], 1)
    ok = np.isfinite(O[iu]) & np.isfinite(R[iu])
    r_pairs, o_pairs, c_pairs = R[iu][ok], O[iu][ok], C[iu][ok]
    edges = np.asarray(bins, dtype=float)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (r_pairs >= lo) & ((r_pairs < hi) | ((hi == edges[-1]) & (r_pairs <= hi)))
        obs = float(o_pairs[sel].mean()) if sel.any() else np.nan
        ch = float(c_pairs[sel].mean()) if sel.any() else np.nan
        rows.append({"|r| bin": f"[{lo:g}, {hi:g}{']' if hi == edges[-1] else ')'}",
                     "n_pairs": int(sel.sum()), "observed": obs, "chance": ch,
                     "ratio": obs / ch if ch and ch > 0 else np.nan})
    excess = o_pairs - c_pairs
    rho = float(stats.spearman(excess, r_pairs)) if ok.sum() > 2 else float("nan")
    rng = check_random_state(random_state)
    null = np.empty(int(n_permutations))
    idx_ok = (iu[0][ok], iu[1][ok])
    for b in range(int(n_permutations)):
        p = rng.permutation(O.shape[0])
        null[b] = stats.spearman(excess, R[p][:, p][idx_ok])
    pvalue = float(stats.permutation_pvalue(rho, null, alternative="greater"))
    return pd.DataFrame(rows).set_index("|r| bin"), rho, pvalue


# --------------------------------------------------------------------------- networks and layers
def network_counts(masks, networks, *, names=None, normalise=False, order=None):
    """How many BN voxels of each set fall in each network.

    Parameters
    ----------
    masks : array-like of shape (n_sets, n_voxels), bool
    networks : array-like of shape (n_voxels,)
        Network (or atlas region) of each voxel, e.g. ``subj.voxels.network``.
    names : list of str or None
        Row names (e.g. ``maps.names``).
    normalise : bool
        Divide by the network's number of voxels (fraction of the network covered).
    order : list or None
        Networks to report, in this order.

    Returns
    -------
    table : pandas.DataFrame of shape (n_sets, n_networks)
    """
    import pandas as pd

    M = _check_masks(masks)
    labels = np.asarray(networks)
    if labels.shape != (M.shape[1],):
        raise ValueError(f"networks must have shape ({M.shape[1]},), got {labels.shape}.")
    keys = sorted(set(labels.tolist())) if order is None else list(order)
    cols = {}
    for key in keys:
        sel = labels == key
        c = M[:, sel].sum(axis=1).astype(float)
        cols[key] = c / max(int(sel.sum()), 1) if normalise else c.astype(int)
    index = names if names is not None else [f"set{j}" for j in range(M.shape[0])]
    if len(index) != M.shape[0]:
        raise ValueError(f"names has {len(index)} entries for {M.shape[0]} sets.")
    return pd.DataFrame(cols, index=list(index))


def polarity_by_layer(positive, negative, layer, *, networks=None, order=None):
    """Positive and negative BN counts per layer (averaged over the layer's ANs).

    Parameters
    ----------
    positive, negative : array-like of shape (n_ans, n_voxels), bool
        BN sets (``maps.positive``, ``maps.negative``).
    layer : array-like of shape (n_ans,)
        Layer of each AN (``ans.layer``); layers are reported in ``order``
        or in order of first appearance.
    networks : array-like of shape (n_voxels,) or None
        With labels, the table has one row per (layer, network).
    order : list or None

    Returns
    -------
    table : pandas.DataFrame
        Columns ``layer``, ``depth`` (0, 1, ...), [``network``], ``n_ans``,
        ``positive`` and ``negative`` (mean BN count per AN), ``balance`` =
        (positive - negative) / (positive + negative), in [-1, 1] (NaN if no BN).
    """
    import pandas as pd

    P = _check_masks(positive, "positive")
    N = _check_masks(negative, "negative")
    if P.shape != N.shape:
        raise ValueError(f"positive and negative must have the same shape, got {P.shape} and {N.shape}.")
    layer = np.asarray(layer).astype(str)
    if layer.shape != (P.shape[0],):
        raise ValueError(f"layer must have shape ({P.shape[0]},), got {layer.shape}.")
    if np.any(P & N):
        raise ValueError("a voxel is both positive and negative for the same AN; "
                         "pass disjoint BN sets.")
    layers = list(dict.fromkeys(layer.tolist())) if order is None else [str(o) for o in order]
    groups = [(None, np.ones(P.shape[1], bool))]
    if networks is not None:
        labels = np.asarray(networks)
        if labels.shape != (P.shape[1],):
            raise ValueError(f"networks must have shape ({P.shape[1]},), got {labels.shape}.")
        groups = [(u, labels == u) for u in sorted(set(labels.tolist()))]
    rows = []
    for d, name in enumerate(layers):
        sel = layer == name
        for net, vox in groups:
            pos = float(P[sel][:, vox].sum(axis=1).mean()) if sel.any() else np.nan
            neg = float(N[sel][:, vox].sum(axis=1).mean()) if sel.any() else np.nan
            tot = pos + neg
            row = {"layer": name, "depth": d}
            if net is not None:
                row["network"] = net
            row.update(n_ans=int(sel.sum()), positive=pos, negative=neg,
                       balance=(pos - neg) / tot if tot > 0 else np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def polarity_trend(table):
    """Least-squares trends of positive and negative BN counts across layers.

    A description, not a test: with a handful of layers two slopes have
    opposite signs about half the time by chance. :func:`mirrored_test`
    gives intervals and a p-value for "mirrored".

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`polarity_by_layer` (without networks, or one network's rows).

    Returns
    -------
    trend : dict
        ``slope_positive``, ``slope_negative`` (least-squares change per
        layer), ``slope_balance`` and ``correlation`` (Pearson r between the
        positive and negative series over layers).
    """
    if "network" in table.columns and table["network"].nunique() > 1:
        raise ValueError("table has several networks; select one network's rows first.")
    if len(table) < 2:
        raise ValueError(f"a trend needs at least 2 layers, got {len(table)}.")
    depth = table["depth"].to_numpy(float)
    pos = table["positive"].to_numpy(float)
    neg = table["negative"].to_numpy(float)
    bal = table["balance"].to_numpy(float)
    sp = float(np.polyfit(depth, pos, 1)[0])
    sn = float(np.polyfit(depth, neg, 1)[0])
    ok = np.isfinite(bal)
    sb = float(np.polyfit(depth[ok], bal[ok], 1)[0]) if ok.sum() >= 2 else float("nan")
    corr = float(stats.pearson(pos, neg))
    return {"slope_positive": sp, "slope_negative": sn, "slope_balance": sb, "correlation": corr}


def _layer_slopes(pos, neg, codes, depth):
    """Slopes over depth of the per-layer mean counts; pos, neg (..., n_ans)."""
    n_layers = depth.size
    onehot = np.zeros((codes.size, n_layers))
    onehot[np.arange(codes.size), codes] = 1.0
    onehot /= onehot.sum(axis=0, keepdims=True)
    mp, mn = pos @ onehot, neg @ onehot  # (..., n_layers)
    dc = depth - depth.mean()
    den = (dc ** 2).sum()
    return mp @ dc / den, mn @ dc / den


@dataclass
class MirrorResult:
    """Are the trends of positive and negative BN counts across layers mirrored?

    Attributes
    ----------
    slope_positive, slope_negative : float
        Least-squares change per layer of the mean BN count per AN.
    slope_positive_ci, slope_negative_ci : tuple of float
        Bootstrap percentile intervals (ANs resampled within each layer).
    statistic : float
        ``-slope_positive * slope_negative``: positive when one polarity
        grows as the other shrinks, larger for steeper opposite trends.
    statistic_ci : tuple of float
        Its bootstrap percentile interval.
    null : ndarray of shape (n_permutations,)
        The statistic under the layer-order null (the sign-flip null for
        ``null_model="flip"``).
    pvalue : float
        One-sided: (1 + #null >= statistic) / (1 + n_permutations); for
        ``"both"`` the larger of the two nulls' p-values.
    pvalue_layers, pvalue_flip : float
        Each null's p-value (NaN when not run).
    null_model : str
    """

    slope_positive: float
    slope_negative: float
    slope_positive_ci: tuple
    slope_negative_ci: tuple
    statistic: float
    statistic_ci: tuple
    null: np.ndarray = field(repr=False)
    pvalue: float = float("nan")
    pvalue_layers: float = float("nan")
    pvalue_flip: float = float("nan")
    null_model: str = "both"


def mirrored_test(positive, negative, layer, *, order=None, null="both", n_permutations=1000,
                  n_boot=1000, level=0.95, random_state=None):
    """Test paper B's "mirrored trends" of positive and negative BNs across layers.

    The statistic is ``m = -s+ s-``, with ``s+`` and ``s-`` the least-squares
    slopes over layer depth of the mean positive and negative BN counts per
    AN. Null samples destroy what a mirror needs:

    ``"layers"``
        The layer order is permuted (every AN keeps its counts): no trend.
    ``"flip"``
        Each AN's sign is flipped at random (its positive and negative sets
        swap): polarity carries no information.
    ``"both"`` (default)
        Both, as an intersection-union test: p is the larger of the two
        p-values. Each null alone is fooled by one polarity trending while
        the other stays flat (m near 0 sits above a null whose slopes share
        the trend, for the flip null; simulated, the flip null calls that
        "mirrored" nearly always, the combined one about as often as alpha).

    Each ``p = (1 + #(m_null >= m)) / (1 + n_permutations)``. The slopes get
    bootstrap intervals, ANs resampled with replacement within each layer.
    The test is only meaningful when AN signs mean the same thing in every
    layer (:func:`orient_ans`); with signs fixed per head by an arbitrary
    convention, a flip in one layer moves counts between the two series.

    Parameters
    ----------
    positive, negative : array-like of shape (n_ans, n_voxels), bool
        BN sets (``maps.positive``, ``maps.negative``), or counts of shape (n_ans,).
    layer : array-like of shape (n_ans,)
        Layer of each AN; depth follows ``order`` or first appearance.
    order : list or None
    null : {"both", "layers", "flip"}
    n_permutations, n_boot : int
    level : float
        Coverage of the slope intervals.
    random_state : int or None

    Returns
    -------
    result : MirrorResult

    Raises
    ------
    ValueError
        For fewer than 3 layers, mismatched shapes or an unknown null.
    """
    if null not in ("both", "layers", "flip"):
        raise ValueError(f"null must be 'both', 'layers' or 'flip', got {null!r}.")
    P, N = np.asarray(positive), np.asarray(negative)
    if P.shape != N.shape:
        raise ValueError(f"positive and negative must have the same shape, got {P.shape} and {N.shape}.")
    pos = P.sum(axis=1).astype(float) if P.ndim == 2 else P.astype(float)
    neg = N.sum(axis=1).astype(float) if N.ndim == 2 else N.astype(float)
    layer = np.asarray(layer).astype(str)
    if layer.shape != pos.shape:
        raise ValueError(f"layer must have shape {pos.shape}, got {layer.shape}.")
    names = list(dict.fromkeys(layer.tolist())) if order is None else [str(o) for o in order]
    missing = set(layer.tolist()) - set(names)
    if missing:
        raise ValueError(f"layers {sorted(missing)} are not in order={names}.")
    if len(names) < 3:
        raise ValueError(f"a mirrored trend needs at least 3 layers, got {len(names)}.")
    codes = np.array([names.index(l) for l in layer])
    depth = np.arange(len(names), dtype=float)
    rng = check_random_state(random_state)
    sp, sn = _layer_slopes(pos, neg, codes, depth)
    observed = float(-sp * sn)
    n_perm = int(n_permutations)
    nulls = {}
    if null in ("layers", "both"):
        # every AN keeps its counts, the layers are put in a random order
        perm_codes = np.array([rng.permutation(len(names)) for _ in range(n_perm)])[:, codes]
        sl = np.array([_layer_slopes(pos, neg, perm_codes[b], depth) for b in range(n_perm)])
        nulls["layers"] = -sl[:, 0] * sl[:, 1]
    if null in ("flip", "both"):
        # every AN's positive and negative sets swap with probability 1/2
        flip = rng.random((n_perm, pos.size)) < 0.5
        sp_f, sn_f = _layer_slopes(np.where(flip, neg, pos), np.where(flip, pos, neg), codes, depth)
        nulls["flip"] = -sp_f * sn_f
    pvalues = {k: float(stats.permutation_pvalue(observed, v, alternative="greater"))
               for k, v in nulls.items()}
    # Intersection-union: "mirrored" needs both a trend (layers null) and meaningful
    # signs (flip null); each null alone calls "one polarity trends, the other is
    # flat" mirrored too often (the flip null almost always), the larger p does not.
    pvalue = max(pvalues.values())
    null_stat = nulls["layers"] if "layers" in nulls else nulls["flip"]
    # bootstrap: resample ANs within each layer
    boot = np.empty((int(n_boot), 2))
    members = [np.flatnonzero(codes == c) for c in range(len(names))]
    for b in range(int(n_boot)):
        idx = np.concatenate([rng.choice(m, size=m.size, replace=True) for m in members])
        boot[b] = _layer_slopes(pos[idx], neg[idx], codes[idx], depth)
    lo, hi = stats.percentile_interval(boot, level=level, axis=0)
    m_lo, m_hi = stats.percentile_interval(-boot[:, 0] * boot[:, 1], level=level)
    return MirrorResult(slope_positive=float(sp), slope_negative=float(sn),
                        statistic_ci=(float(m_lo), float(m_hi)),
                        slope_positive_ci=(float(lo[0]), float(hi[0])),
                        slope_negative_ci=(float(lo[1]), float(hi[1])), statistic=observed,
                        null=null_stat, pvalue=pvalue, pvalue_layers=pvalues.get("layers", np.nan),
                        pvalue_flip=pvalues.get("flip", np.nan), null_model=null)


def readout_reference(final_features):
    """The fixed readout direction of a tower as one signal over stimuli.

    The first principal component of the tower's final embedding (the
    representation every layer writes towards), oriented so that its
    loadings sum to a positive number. It is one convention for the whole
    tower, so AN signs oriented against it (:func:`orient_ans`) mean the same
    thing in every layer.

    Parameters
    ----------
    final_features : array-like of shape (n_samples, n_features)
        E.g. ``get_features(model, stimuli, layers="final")["final"]``.

    Returns
    -------
    reference : ndarray of shape (n_samples,)
    """
    F = check_array(final_features, "final_features", ndim=2, min_samples=3)
    Fc = F - F.mean(axis=0)
    _, _, Vt = np.linalg.svd(Fc, full_matrices=False)
    u = Vt[0]
    if u.sum() < 0:
        u = -u
    return Fc @ u


def orient_ans(activity, reference):
    """Flip each AN so that it correlates positively with one reference signal.

    A head's first principal component has no sign of its own. Orienting
    every AN of every layer against the *same* stimulus-level readout (e.g.
    :func:`readout_reference`) makes "positive" mean the same in every layer,
    so positive and negative BN counts can be compared across layers.

    Parameters
    ----------
    activity : array-like of shape (n_samples, n_ans)
    reference : array-like of shape (n_samples,)

    Returns
    -------
    oriented : ndarray of shape (n_samples, n_ans)
    sign : ndarray of shape (n_ans,)
        +1 or -1 (+1 where the correlation is 0 or undefined).
    agreement : ndarray of shape (n_ans,)
        Pearson r of each oriented AN with the reference (>= 0): how much the
        orientation is worth; near 0 the sign is a coin flip.
    """
    A = check_array(activity, "activity", min_samples=3)
    ref = check_array(reference, "reference", ndim=1, min_samples=3)
    check_consistent_samples(activity=A, reference=ref)
    r = np.asarray(stats.pearson(A, ref[:, None], axis=0), dtype=float).reshape(-1)
    sign = np.where(np.nan_to_num(r) < 0, -1.0, 1.0)
    return A * sign, sign, np.abs(np.nan_to_num(r))


def network_polarity(coef, significant, networks, *, order=None, n_permutations=1000,
                     random_state=None):
    """The polarity of each network's BNs, tested against random voxel signs.

    For each network, ``balance = (n+ - n-) / (n+ + n-)`` over all its
    significant (AN, voxel) pairs. The null flips the sign of each voxel's
    coefficients at random (the same flip for all ANs, so the ANs' mutual
    dependence is kept): "the network's voxels do not share a polarity".
    p is two-sided; NaN for a network without BNs.

    Parameters
    ----------
    coef : array-like of shape (n_ans, n_voxels)
        Signed maps (``maps.coef`` or ``maps.stat``).
    significant : array-like of shape (n_ans, n_voxels), bool
    networks : array-like of shape (n_voxels,)
    order : list or None
    n_permutations : int
    random_state : int or None

    Returns
    -------
    table : pandas.DataFrame
        Index network; ``n_positive``, ``n_negative``, ``balance``, ``pvalue``.
    """
    import pandas as pd

    C = check_array(coef, "coef", allow_nan=True)
    S = _check_masks(significant, "significant")
    if S.shape != C.shape:
        raise ValueError(f"significant has shape {S.shape} but coef has {C.shape}.")
    net = np.asarray(networks)
    if net.shape != (C.shape[1],):
        raise ValueError(f"networks must have shape ({C.shape[1]},), got {net.shape}.")
    sgn = np.where(S, np.sign(np.nan_to_num(C)), 0.0)
    per_voxel = sgn.sum(axis=0)           # n+ - n- of each voxel
    count = np.abs(sgn).sum(axis=0)       # n+ + n- of each voxel
    rng = check_random_state(random_state)
    keys = sorted(set(net.tolist())) if order is None else list(order)
    flips = np.where(rng.random((int(n_permutations), C.shape[1])) < 0.5, -1.0, 1.0)
    rows = []
    for key in keys:
        sel = net == key
        tot = count[sel].sum()
        if tot == 0:
            rows.append({"network": key, "n_positive": 0, "n_negative": 0, "balance": np.nan,
                         "pvalue": np.nan})
            continue
        obs = per_voxel[sel].sum() / tot
        null = flips[:, sel] @ per_voxel[sel] / tot
        rows.append({"network": key, "n_positive": int((sgn[:, sel] > 0).sum()),
                     "n_negative": int((sgn[:, sel] < 0).sum()), "balance": float(obs),
                     "pvalue": float(stats.permutation_pvalue(obs, null, alternative="two-sided"))})
    return pd.DataFrame(rows).set_index("network")


def modality_specificity(masks_a, masks_b, networks, *, labels=("image", "text"), order=None):
    """Voxels predicted by one tower only, by the other only, or by both.

    Each tower's BN sets are pooled (a voxel belongs to tower A if any of A's
    ANs predicts it significantly). Dual encoders (CLIP) are expected to give
    more modality-specific BNs, fused models (CoCa, METER) more cross-modal ones.

    Parameters
    ----------
    masks_a, masks_b : array-like of shape (n_sets_a, n_voxels), (n_sets_b, n_voxels), bool
        BN sets of the two towers (or models).
    networks : array-like of shape (n_voxels,)
    labels : tuple of 2 str
        Names of A and B in the output columns.
    order : list or None

    Returns
    -------
    table : pandas.DataFrame
        One row per network plus "all": counts ``<a> only``, ``<b> only``,
        ``both``, ``neither`` and ``cross-modal fraction`` = both / (A or B).
    """
    import pandas as pd

    A = _check_masks(masks_a, "masks_a").any(axis=0)
    B = _check_masks(masks_b, "masks_b").any(axis=0)
    if A.shape != B.shape:
        raise ValueError(f"masks_a and masks_b cover {A.size} and {B.size} voxels; they must match.")
    net = np.asarray(networks)
    if net.shape != A.shape:
        raise ValueError(f"networks must have shape {A.shape}, got {net.shape}.")
    keys = sorted(set(net.tolist())) if order is None else list(order)
    la, lb = labels
    rows = []
    for key, sel in [(k, net == k) for k in keys] + [("all", np.ones_like(A))]:
        a, b = A[sel], B[sel]
        both = int((a & b).sum())
        union = int((a | b).sum())
        rows.append({"network": key, f"{la} only": int((a & ~b).sum()),
                     f"{lb} only": int((b & ~a).sum()), "both": both,
                     "neither": int((~a & ~b).sum()),
                     "cross-modal fraction": both / union if union else np.nan})
    return pd.DataFrame(rows).set_index("network")


def _best_an_test_r(X, Y, train_m, test_m):
    """Each voxel's training-chosen best AN (largest training |r|) and its test predictions.

    Returns the sign-corrected best-AN activity on the test rows (n_test, n_voxels),
    so that its Pearson r with the test responses is the held-out r of the voxel's
    univariate model.
    """
    r_train = _corr_columns(X[train_m], Y[train_m])
    best = np.argmax(np.nan_to_num(np.abs(r_train), nan=-1.0), axis=0)
    sign = np.sign(np.nan_to_num(r_train[best, np.arange(Y.shape[1])]))
    return X[test_m][:, best] * sign[None, :]


def _network_medians(values, codes, n_codes):
    """Median of values (..., n_voxels) within each code: (..., n_codes)."""
    out = np.full(values.shape[:-1] + (n_codes,), np.nan)
    for c in range(n_codes):
        sel = codes == c
        if sel.any():
            out[..., c] = np.nanmedian(values[..., sel], axis=-1)
    return out


def compare_feature_sets(feature_sets, Y, *, train, test, networks, noise_ceiling=None,
                         baseline=None, order=None, n_boot=200, n_shuffles=200, level=0.95,
                         random_state=None):
    """B1 against baselines: held-out prediction of several AN sets, per network.

    For every feature set (trained model, random-init seeds, unimodal towers)
    each voxel's best AN is chosen on the training stimuli (largest |r|) and
    scored on the test stimuli (held-out Pearson r of its univariate model),
    divided by the voxel's noise ceiling on r, ``sqrt(NC / 100)`` (NC in
    percent of variance, :meth:`SubjectData.noise_ceiling`); the network's
    score is the median over its voxels. Three things come with it:

    - a percentile interval from resampling the **test stimuli** (the same
      resamples for every set, so differences are paired);
    - a **stimulus-shuffle null**: the test responses' stimulus labels
      permuted (the same permutation for all voxels), so
      ``p = (1 + #null >= observed) / (1 + n_shuffles)`` asks whether the
      set predicts anything;
    - with ``baseline``, the paired difference from that set, its interval
      and a one-sided bootstrap p-value ``(1 + #diff* <= 0) / (1 + n_boot)``
      for "above the baseline". A list of keys is a **seed ensemble** (random
      initialisations of one architecture): the baseline score is the mean
      over its sets, each bootstrap replicate resamples the seeds with
      replacement as well as the test stimuli (so the interval holds the
      seed-to-seed spread), and ``baseline_min`` / ``baseline_max`` give the
      range of the seeds' own scores.

    Parameters
    ----------
    feature_sets : dict of str to array-like of shape (n_samples, n_ans)
        AN activity of each set, rows aligned with ``Y``.
    Y : array-like of shape (n_samples, n_voxels)
    train, test : array-like of bool of shape (n_samples,) or indices
    networks : array-like of shape (n_voxels,)
    noise_ceiling : array-like of shape (n_voxels,) or None
        In percent; None reports raw r. Voxels with NC <= 0 are dropped.
    baseline : str, list of str or None
        Key of ``feature_sets`` to compare every other set with, or several keys
        (seeds of one architecture) whose mean is the baseline.
    order : list or None
        Networks to report, in this order.
    n_boot, n_shuffles : int
    level : float
    random_state : int or None

    Returns
    -------
    table : pandas.DataFrame
        One row per (set, network): ``score``, ``ci_low``, ``ci_high``,
        ``null_high`` (the ``level`` quantile of the shuffle null),
        ``pvalue``; with a baseline also ``baseline_score``,
        ``baseline_min``, ``baseline_max`` (over the baseline's sets),
        ``diff``, ``diff_low``, ``diff_high``, ``p_above_baseline``.

    Raises
    ------
    ValueError
        For an empty dict, an unknown baseline or misaligned shapes.
    """
    import pandas as pd

    if not feature_sets:
        raise ValueError("feature_sets is empty; pass at least one AN feature set.")
    base_keys = [] if baseline is None else (
        [baseline] if isinstance(baseline, str) else list(baseline))
    if baseline is not None and (not base_keys or any(b not in feature_sets for b in base_keys)):
        raise ValueError(f"baseline {baseline!r} must be a key of feature_sets or a non-empty "
                         f"list of keys ({list(feature_sets)}).")
    Y = check_array(Y, "Y", min_samples=4)
    n = Y.shape[0]
    train_m, test_m = _as_mask(train, n, "train"), _as_mask(test, n, "test")
    if train_m is None or test_m is None or test_m.sum() < 4:
        raise ValueError("train and test must both be given, with at least 4 test stimuli.")
    net = np.asarray(networks)
    if net.shape != (Y.shape[1],):
        raise ValueError(f"networks must have shape ({Y.shape[1]},), got {net.shape}.")
    scale = np.ones(Y.shape[1])
    if noise_ceiling is not None:
        nc = check_array(noise_ceiling, "noise_ceiling", ndim=1, allow_nan=True)
        if nc.shape != (Y.shape[1],):
            raise ValueError(f"noise_ceiling must have shape ({Y.shape[1]},), got {nc.shape}.")
        scale = np.where(nc > 0, np.sqrt(np.clip(nc, 0, None) / 100.0), np.nan)
    keys = sorted(set(net.tolist())) if order is None else list(order)
    codes = np.full(net.shape, -1)
    for c, key in enumerate(keys):
        codes[net == key] = c
    rng = check_random_state(random_state)
    n_test = int(test_m.sum())
    boot_idx = rng.integers(0, n_test, size=(int(n_boot), n_test))
    shuffles = np.array([rng.permutation(n_test) for _ in range(int(n_shuffles))],
                        dtype=int).reshape(int(n_shuffles), n_test)
    Yte = Y[test_m]
    est, boots, nulls = {}, {}, {}
    for name, A in feature_sets.items():
        X = check_array(A, f"feature_sets[{name!r}]", min_samples=4)
        check_consistent_samples(**{f"feature_sets[{name!r}]": X, "Y": Y})
        P = _best_an_test_r(X, Y, train_m, test_m)
        est[name] = _network_medians(stats.pearson(Yte, P, axis=0) / scale, codes, len(keys))
        boots[name] = _network_medians(stats.pearson_bootstrap(Yte, P, boot_idx) / scale, codes,
                                       len(keys))
        nulls[name] = _network_medians(stats.pearson_permuted(P, Yte, shuffles) / scale, codes,
                                       len(keys))
    if base_keys:
        base_est = np.mean([est[b] for b in base_keys], axis=0)
        base_each = np.array([est[b] for b in base_keys])
        if len(base_keys) == 1:
            base_boot = boots[base_keys[0]]
        else:   # resample the seeds too: replicate b averages a draw of seeds on stimuli b
            draw = rng.integers(0, len(base_keys), size=(int(n_boot), len(base_keys)))
            stack = np.array([boots[b] for b in base_keys])     # (n_seeds, n_boot, n_codes)
            base_boot = stack[draw, np.arange(int(n_boot))[:, None]].mean(axis=1)
    rows = []
    for name in feature_sets:
        lo, hi = stats.percentile_interval(boots[name], level)
        null_hi = np.nanquantile(nulls[name], level, axis=0)
        p = stats.permutation_pvalue(est[name], nulls[name], alternative="greater")
        for c, key in enumerate(keys):
            row = {"set": name, "network": key, "score": est[name][c], "ci_low": lo[c],
                   "ci_high": hi[c], "null_high": null_hi[c], "pvalue": p[c]}
            if base_keys:
                d = boots[name][:, c] - base_boot[:, c]
                dlo, dhi = stats.percentile_interval(d, level)
                row.update(baseline_score=base_est[c], baseline_min=base_each[:, c].min(),
                           baseline_max=base_each[:, c].max(),
                           diff=est[name][c] - base_est[c], diff_low=dlo, diff_high=dhi,
                           p_above_baseline=float((1 + np.sum(d <= 0)) / (1 + d.size)))
            rows.append(row)
    return pd.DataFrame(rows).set_index(["set", "network"])


def _pooled_coverage(masks, codes, n_codes):
    """Fraction of each code's voxels in the union of masks: (n_codes,)."""
    union = masks.any(axis=0)
    return np.array([union[codes == c].mean() if (codes == c).any() else np.nan
                     for c in range(n_codes)]), union


def cross_modal_test(activity_by_family, Y, *, train, networks, families=None, shuffle=None,
                     n_ans=None, n_subsamples=20, n_shuffles=20, q=0.05, order=None, level=0.95,
                     random_state=None):
    """B4: modality-specific and cross-modal BNs, normalised and against mismatched captions.

    Two AN families (e.g. an image tower and a text tower, or a fused
    model's heads) are mapped one AN at a time (:func:`map_to_voxels`,
    parametric, FDR ``q``). A voxel is *covered* by a family when at least one
    of its ANs predicts it; *cross-modal* when both families cover it. Raw
    pooled coverage grows with the number of ANs, so:

    - **AN count.** Each family is reduced to ``n_ans`` ANs (default: the
      smaller family's count), drawn ``n_subsamples`` times; values are means
      over draws, intervals percentiles over draws.
    - **BN-set size.** The cross-modal fraction ``both / (A or B)`` is set
      against its chance level if the two covers were placed independently,
      ``ab / (a + b - ab)`` for covered fractions ``a``, ``b``.
    - **Mismatched captions.** The rows of family ``shuffle``'s activity are
      permuted across the training stimuli (each caption paired with another
      image), the maps recomputed, ``n_shuffles`` times: cross-modal BNs that
      survive are not about the stimulus the two families share.
      ``p = (1 + #mismatched >= observed) / (1 + n_shuffles)``.

    Parameters
    ----------
    activity_by_family : dict of str to array-like of shape (n_samples, n_ans)
        Exactly two families, rows aligned with ``Y``.
    Y : array-like of shape (n_samples, n_voxels)
    train : array-like of bool of shape (n_samples,) or indices
        Stimuli the maps are fitted and tested on.
    networks : array-like of shape (n_voxels,)
    families : tuple of 2 str or None
        Which two keys, in this order (default: the dict's order).
    shuffle : str or None
        The family whose stimulus pairing is shuffled (default: the second).
    n_ans : int or None
    n_subsamples, n_shuffles : int
    q : float
    order : list or None
    level : float
    random_state : int or None

    Returns
    -------
    table : pandas.DataFrame
        One row per network plus "all": ``coverage <a>``, ``coverage <b>``,
        ``cross-modal fraction`` with ``ci_low``/``ci_high`` (over AN
        draws), ``chance (independent)``, ``ratio to chance``,
        ``mismatched`` (mean over shuffles), ``mismatched_high`` (its
        ``level`` quantile) and ``pvalue``.
    """
    import pandas as pd

    fams = list(activity_by_family) if families is None else list(families)
    if len(fams) != 2:
        raise ValueError(f"cross_modal_test compares exactly 2 families, got {fams}.")
    missing = [f for f in fams if f not in activity_by_family]
    if missing:
        raise ValueError(f"families {missing} are not keys of activity_by_family.")
    shuffle = fams[1] if shuffle is None else shuffle
    if shuffle not in fams:
        raise ValueError(f"shuffle must be one of {fams}, got {shuffle!r}.")
    Y = check_array(Y, "Y", min_samples=4)
    acts = {f: check_array(activity_by_family[f], f"activity_by_family[{f!r}]", min_samples=4)
            for f in fams}
    check_consistent_samples(Y=Y, **acts)
    train_m = _as_mask(train, Y.shape[0], "train")
    net = np.asarray(networks)
    if net.shape != (Y.shape[1],):
        raise ValueError(f"networks must have shape ({Y.shape[1]},), got {net.shape}.")
    keys = sorted(set(net.tolist())) if order is None else list(order)
    codes = np.full(net.shape, -1)
    for c, key in enumerate(keys):
        codes[net == key] = c
    codes_all = np.where(codes >= 0, len(keys), -1)
    k = min(a.shape[1] for a in acts.values()) if n_ans is None else int(n_ans)
    if not 1 <= k <= min(a.shape[1] for a in acts.values()):
        raise ValueError(f"n_ans must be between 1 and the smaller family's AN count, got {n_ans}.")
    rng = check_random_state(random_state)
    draws = {f: [rng.choice(acts[f].shape[1], size=k, replace=False) for _ in range(int(n_subsamples))]
             for f in fams}

    def masks_of(A):
        return map_to_voxels(A, Y, train=train_m, joint=False, q=q).significant

    def fractions(MA, MB):
        out = []
        for d in range(int(n_subsamples)):
            a = MA[draws[fams[0]][d]].any(axis=0)
            b = MB[draws[fams[1]][d]].any(axis=0)
            row = []
            for cc, c in [(codes, ci) for ci in range(len(keys))] + [(codes_all, len(keys))]:
                sel = cc == c
                ca, cb = a[sel].mean(), b[sel].mean()
                both, union = (a & b)[sel].sum(), (a | b)[sel].sum()
                chance = ca * cb / (ca + cb - ca * cb) if ca + cb > 0 else np.nan
                row.append((ca, cb, both / union if union else np.nan, chance))
            out.append(row)
        return np.array(out, dtype=float)  # (n_subsamples, n_rows, 4)

    masks = {f: masks_of(acts[f]) for f in fams}
    obs = fractions(masks[fams[0]], masks[fams[1]])
    tr = np.flatnonzero(train_m)
    null = []
    for _ in range(int(n_shuffles)):
        A = acts[shuffle].copy()
        A[tr] = A[rng.permutation(tr)]
        shuffled = dict(masks)
        shuffled[shuffle] = masks_of(A)
        null.append(_quiet_nanmean(fractions(shuffled[fams[0]], shuffled[fams[1]])[:, :, 2]))
    null = np.array(null)
    mean = _quiet_nanmean(obs)
    lo, hi = stats.percentile_interval(obs[:, :, 2], level)
    p = stats.permutation_pvalue(mean[:, 2], null, alternative="greater")
    rows = []
    for i, key in enumerate(keys + ["all"]):
        rows.append({"network": key, f"coverage {fams[0]}": mean[i, 0],
                     f"coverage {fams[1]}": mean[i, 1], "cross-modal fraction": mean[i, 2],
                     "ci_low": lo[i], "ci_high": hi[i], "chance (independent)": mean[i, 3],
                     "ratio to chance": mean[i, 2] / mean[i, 3] if mean[i, 3] > 0 else np.nan,
                     "mismatched": float(np.nanmean(null[:, i])),
                     "mismatched_high": float(np.nanquantile(null[:, i], level)),
                     "pvalue": float(p[i])})
    return pd.DataFrame(rows).set_index("network")


@dataclass
class FusionResult:
    """B4: do a fused model's two AN families share more BNs than a dual encoder's?

    Attributes
    ----------
    fused, dual : float
        Cross-modal fraction ``both / either`` of the voxels covered by the
        fused model's families (image side, fusion heads) and by the dual
        encoder's (image tower, text tower), AN counts matched.
    fused_ci, dual_ci : tuple of float
        Percentile intervals over ANs resampled with replacement.
    diff, diff_ci, pvalue : float, tuple, float
        ``fused - dual``, its paired interval and the one-sided p-value of
        the exchange null (ANs reassigned between the two models).
    mismatched, diff_mismatched, diff_mismatched_ci, pvalue_mismatched
        The fused fraction with the fusion heads computed from mismatched
        captions, ``fused - mismatched``, its interval and p-value (NaN when
        no mismatched activity was given).
    n_ans : int
        ANs per family (each fraction is a mean over ``n_subsamples`` draws).
    n_boot : int
    """

    fused: float
    fused_ci: tuple
    dual: float
    dual_ci: tuple
    diff: float
    diff_ci: tuple
    pvalue: float
    mismatched: float = float("nan")
    diff_mismatched: float = float("nan")
    diff_mismatched_ci: tuple = (float("nan"), float("nan"))
    pvalue_mismatched: float = float("nan")
    n_ans: int = 0
    n_boot: int = 0

    def table(self, decimals=3):
        """The numbers as a one-column DataFrame of text, for display: fractions and
        p-values with ``decimals`` decimals each (so that a column reads at one precision),
        the AN count an integer."""
        import pandas as pd

        values = {"fused: cross-modal fraction": self.fused,
                  "dual: cross-modal fraction": self.dual,
                  "fused - dual": self.diff, "interval low": self.diff_ci[0],
                  "interval high": self.diff_ci[1], "p (fused > dual)": self.pvalue,
                  "fused, mismatched captions": self.mismatched,
                  "fused - mismatched": self.diff_mismatched,
                  "p (fused > mismatched)": self.pvalue_mismatched}
        values = {k: f"{float(v):.{decimals}f}" for k, v in values.items()}
        return pd.Series({**values, "ANs per family": int(self.n_ans)}, dtype=object).to_frame("value")


def fusion_test(dual, fused, Y, *, train=None, mismatched=None, n_ans=None, n_subsamples=20,
                n_boot=1000, n_permutations=1000, q=0.05, level=0.95, random_state=None):
    """B4 as one test: cross-modal BNs of a fused model against a dual encoder's.

    Paper B's claim B4 is that a fused architecture yields *unified
    cross-modal* BNs where a dual encoder's independent towers yield
    modality-specific ones. Each family is mapped one AN at a time
    (:func:`map_to_voxels`, parametric, FDR ``q``, on the training stimuli);
    a voxel is covered by a family when one of its ANs predicts it, and the
    cross-modal fraction of two families is ``both / either``. The test:

    - **AN count matched**: each family is reduced to ``n_ans`` ANs (default:
      the smallest family's count); the estimate is the mean over
      ``n_subsamples`` draws without replacement.
    - **Interval**: the ANs of every family resampled with replacement
      (``n_boot`` times, ``n_ans`` each), the difference paired within a
      replicate. ANs are the units the claim generalises over ("fusion
      heads"). Resampling the stimuli instead is not sound here: a bootstrap
      sample adds its own sampling noise to every correlation, so thresholded
      BN sets grow and the fractions move away from the estimate (the
      package's tests show the estimate falling outside such an interval).
    - **p-value**: an exchange null. Under "the fused model's families share
      no more than the dual encoder's", the image-side ANs of the two models
      are exchangeable, and so are the fusion heads and the text-tower heads;
      ``n_permutations`` random reassignments give
      ``p = (1 + #null >= observed) / (1 + n_permutations)``.
    - **Mismatched captions**: with ``mismatched`` (the fusion heads computed
      from each image paired with another image's caption), ``fused -
      mismatched`` the same way: cross-modal BNs that depend on the pairing of
      an image with its own caption.

    The positive and negative controls of this test are
    :func:`make_fusion_world` with ``planted=True`` and ``planted=False``.

    Parameters
    ----------
    dual : dict of str to array-like of shape (n_samples, n_ans)
        The dual encoder's two families, image side first.
    fused : dict of str to array-like of shape (n_samples, n_ans)
        The fused model's two families, image side first, fusion heads second.
    Y : array-like of shape (n_samples, n_voxels)
    train : array-like of bool or indices, or None
        The stimuli used (default: all).
    mismatched : array-like or None
        Same shape as the fused model's second family.
    n_ans, n_subsamples, n_boot, n_permutations : int
    q, level : float
    random_state : int or None

    Returns
    -------
    result : FusionResult

    Raises
    ------
    ValueError
        For families that are not pairs, misaligned rows or a bad ``n_ans``.
    """
    fams = {}
    for label, d in (("dual", dual), ("fused", fused)):
        if not isinstance(d, dict) or len(d) != 2:
            raise ValueError(f"{label} must be a dict of exactly 2 AN families, got "
                             f"{type(d).__name__} of length {len(d) if hasattr(d, '__len__') else '?'}.")
        for k_, A in d.items():
            fams[(label, k_)] = check_array(A, f"{label}[{k_!r}]", min_samples=4)
    Y = check_array(Y, "Y", min_samples=4)
    dual_keys, fused_keys = list(dual), list(fused)
    if mismatched is not None:
        M = check_array(mismatched, "mismatched", min_samples=4)
        if M.shape != fams[("fused", fused_keys[1])].shape:
            raise ValueError("mismatched must have the shape of the fused model's second family "
                             f"{fams[('fused', fused_keys[1])].shape}, got {M.shape}.")
        fams[("mismatched", fused_keys[1])] = M
    check_consistent_samples(Y=Y, **{f"{a}[{b}]": A for (a, b), A in fams.items()})
    train_m = _as_mask(train, Y.shape[0], "train")
    smallest = min(A.shape[1] for A in fams.values())
    k = smallest if n_ans is None else int(n_ans)
    if not 1 <= k <= smallest:
        raise ValueError(f"n_ans must be between 1 and the smallest family's AN count "
                         f"({smallest}), got {n_ans}.")
    rng = check_random_state(random_state)
    keys = list(fams)
    # one marginal map of every family's ANs at once: FDR runs over each AN's map (row),
    # so stacking the families changes nothing but the cost
    sig = map_to_voxels(np.hstack([fams[key] for key in keys]), Y, train=train_m, joint=False,
                        q=q).significant
    bounds = np.cumsum([0] + [fams[key].shape[1] for key in keys])
    masks = {key: sig[bounds[i]:bounds[i + 1]] for i, key in enumerate(keys)}

    def fraction(MA, MB, replace):
        a = MA[rng.choice(len(MA), size=k, replace=replace)].any(axis=0)
        b = MB[rng.choice(len(MB), size=k, replace=replace)].any(axis=0)
        union = (a | b).sum()
        return (a & b).sum() / union if union else 0.0

    def compare(pair_x, pair_y):
        """Estimate of x, of y, x - y, its AN-bootstrap interval and exchange p-value."""
        fx = np.mean([fraction(*pair_x, False) for _ in range(int(n_subsamples))])
        fy = np.mean([fraction(*pair_y, False) for _ in range(int(n_subsamples))])
        boot_x = np.array([fraction(*pair_x, True) for _ in range(int(n_boot))])
        boot_y = np.array([fraction(*pair_y, True) for _ in range(int(n_boot))])
        pooled = [np.vstack([pair_x[i], pair_y[i]]) for i in range(2)]
        sizes = [len(pair_x[i]) for i in range(2)]
        null = np.empty(int(n_permutations))
        for t in range(int(n_permutations)):
            perm = [rng.permutation(len(P)) for P in pooled]
            px = [pooled[i][perm[i][:sizes[i]]] for i in range(2)]
            py = [pooled[i][perm[i][sizes[i]:]] for i in range(2)]
            null[t] = fraction(*px, False) - fraction(*py, False)
        diff = fx - fy
        ci = tuple(float(v) for v in stats.percentile_interval(boot_x - boot_y, level))
        p = float((1 + np.sum(null >= diff)) / (1 + null.size))
        return (float(fx), tuple(float(v) for v in stats.percentile_interval(boot_x, level)),
                float(fy), tuple(float(v) for v in stats.percentile_interval(boot_y, level)),
                float(diff), ci, p)

    fused_pair = (masks[("fused", fused_keys[0])], masks[("fused", fused_keys[1])])
    dual_pair = (masks[("dual", dual_keys[0])], masks[("dual", dual_keys[1])])
    f, f_ci, d, d_ci, diff, diff_ci, p = compare(fused_pair, dual_pair)
    out = dict(fused=f, fused_ci=f_ci, dual=d, dual_ci=d_ci, diff=diff, diff_ci=diff_ci,
               pvalue=p, n_ans=k, n_boot=int(n_boot))
    if mismatched is not None:
        wrong_pair = (fused_pair[0], masks[("mismatched", fused_keys[1])])
        _, _, m, _, dm, dm_ci, pm = compare(fused_pair, wrong_pair)
        out.update(mismatched=m, diff_mismatched=dm, diff_mismatched_ci=dm_ci,
                   pvalue_mismatched=pm)
    return FusionResult(**out)


# --------------------------------------------------------------------------- verdicts



# --------------------------------------------------------------------------- toy world
def make_toy_neurons(n_samples=600, *, n_layers=4, n_heads=8, head_dim=16, n_sources=5,
                     n_voxels=400, noise=0.3, voxel_noise=1.0, random_state=0):
    """A planted world: sparse sources -> heads -> voxels with known signs.

    Sources ``s_k`` (independent, unit variance over stimuli) drive both the
    model and the "brain":

    - each head's activity is a sparse mix (one or two sources, positive
      weights) of the sources, and deeper layers draw on later sources, so
      what each layer encodes is known;
    - each head's output is ``a_i * u + 3 u + noise`` along a random unit
      direction ``u`` (so the first principal component is the activity and
      the norm grows with it);
    - each voxel is driven by exactly one source with a known sign, plus
      Gaussian noise. Voxel networks are named after their source and sign,
      e.g. ``"s0+"``.

    Parameters
    ----------
    n_samples, n_layers, n_heads, head_dim, n_sources, n_voxels : int
    noise : float
        SD of the head-output noise (per coordinate).
    voxel_noise : float
        SD of the voxel noise (signals have unit variance).
    random_state : int or None

    Returns
    -------
    toy : dict
        ``head_outputs`` {layer name: (n_samples, n_heads, head_dim)},
        ``activity`` (n_samples, n_layers * n_heads) planted AN activity,
        ``sources`` (n_samples, n_sources), ``codes`` (n_layers * n_heads,
        n_sources) planted non-negative sparse loadings, ``Y`` (n_samples,
        n_voxels), ``voxel_source`` (n_voxels,), ``voxel_sign`` (n_voxels,)
        of +1/-1, ``weights`` (n_sources, n_voxels), ``networks`` (n_voxels,).
    """
    rng = check_random_state(random_state)
    if n_sources < 1 or n_layers < 1 or n_heads < 1 or head_dim < 1:
        raise ValueError("n_layers, n_heads, head_dim and n_sources must be at least 1.")
    S = rng.standard_normal((n_samples, n_sources))
    S = (S - S.mean(0)) / S.std(0)
    n_ans = n_layers * n_heads
    codes = np.zeros((n_ans, n_sources))
    for j in range(n_ans):
        depth = (j // n_heads) / max(n_layers - 1, 1)
        # Deeper layers prefer later sources: a known "what each layer encodes".
        centre = depth * (n_sources - 1)
        p = np.exp(-0.5 * ((np.arange(n_sources) - centre) / 1.0) ** 2)
        p /= p.sum()
        k = rng.choice(n_sources, size=1 + int(rng.random() < 0.4), replace=False, p=p)
        codes[j, k] = rng.uniform(0.7, 1.3, size=k.size)
    activity = S @ codes.T
    outputs = {}
    for l in range(n_layers):
        H = np.empty((n_samples, n_heads, head_dim))
        for h in range(n_heads):
            u = rng.standard_normal(head_dim)
            u /= np.linalg.norm(u)
            a = activity[:, l * n_heads + h]
            H[:, h] = (a[:, None] + 3.0) * u[None, :] + noise * rng.standard_normal((n_samples, head_dim))
        outputs[f"layer{l}"] = H
    voxel_source = rng.integers(n_sources, size=n_voxels)
    voxel_sign = np.where(rng.random(n_voxels) < 0.5, 1.0, -1.0)
    W = np.zeros((n_sources, n_voxels))
    W[voxel_source, np.arange(n_voxels)] = voxel_sign * rng.uniform(0.5, 1.0, n_voxels)
    Y = S @ W + voxel_noise * rng.standard_normal((n_samples, n_voxels))
    networks = np.array([f"s{k}{'+' if s > 0 else '-'}" for k, s in zip(voxel_source, voxel_sign)])
    return {"head_outputs": outputs, "activity": activity, "sources": S, "codes": codes, "Y": Y,
            "voxel_source": voxel_source, "voxel_sign": voxel_sign, "weights": W,
            "networks": networks}


def make_independent_an_world(n_samples=400, *, n_ans=24, n_voxels=600, n_shared=0,
                              group_size=4, noise=0.3, random_state=0):
    """ANs with no redundancy by construction, voxels of mixed selectivity and uneven SNR.

    Every AN carries its own independent source (plus noise), so no two ANs
    share anything. Each voxel mixes one to four sources with random signs,
    and its signal-to-noise ratio is drawn from a wide log-normal: reliable
    voxels are detected by every AN whose source they carry, unreliable ones
    by none. Overlap between BN sets then reflects the voxels' detectability,
    not redundancy; a sound null must give uniform p-values here.

    With ``n_shared > 0``, ``n_shared`` groups of ``group_size`` ANs share a
    common driver (planted redundancy): each AN of a group is its driver plus
    its own source at a third of the weight.

    Parameters
    ----------
    n_samples, n_ans, n_voxels : int
    n_shared, group_size : int
    noise : float
        SD of each AN's own noise.
    random_state : int or None

    Returns
    -------
    world : dict
        ``activity`` (n_samples, n_ans), ``Y`` (n_samples, n_voxels),
        ``noise_ceiling`` (n_voxels,) in percent (signal variance over total),
        ``group`` (n_ans,) the AN's shared-driver group or -1.
    """
    rng = check_random_state(random_state)
    if n_shared * group_size > n_ans:
        raise ValueError(f"n_shared * group_size = {n_shared * group_size} exceeds n_ans={n_ans}.")
    S = rng.standard_normal((n_samples, n_ans))
    group = -np.ones(n_ans, dtype=int)
    activity = S + noise * rng.standard_normal((n_samples, n_ans))
    drivers = rng.standard_normal((n_samples, max(n_shared, 1)))
    for g in range(n_shared):
        members = np.arange(g * group_size, (g + 1) * group_size)
        group[members] = g
        activity[:, members] = drivers[:, [g]] + S[:, members] / 3 \
            + noise * rng.standard_normal((n_samples, group_size))
    sources = np.column_stack([S, drivers[:, :n_shared]])
    n_src = sources.shape[1]
    W = np.zeros((n_src, n_voxels))
    for v in range(n_voxels):
        k = rng.choice(n_src, size=rng.integers(1, 5), replace=False)
        W[k, v] = rng.choice([-1.0, 1.0], size=k.size) * rng.uniform(0.5, 1.0, size=k.size)
    signal = sources @ W
    signal /= signal.std(axis=0)
    snr = np.exp(rng.normal(-1.5, 1.0, n_voxels))
    Y = signal * snr + rng.standard_normal((n_samples, n_voxels))
    nc = 100 * snr ** 2 / (snr ** 2 + 1)
    return {"activity": activity, "Y": Y, "noise_ceiling": nc, "group": group}


def make_polarity_world(n_samples=600, *, n_latents=3, n_layers=4, n_heads=6, head_dim=8,
                        n_networks=6, voxels_per_network=60, null=False, random_state=0):
    """Networks with random-sign relations to latent scene variables, and a model that sees them.

    Latent scene variables ``z_k`` (independent) drive both sides:

    - network ``i`` is tied to latent ``i mod n_latents`` with a random sign
      ``network_sign[i]`` (each voxel ``s_i w z_k + noise``, w in [0.4, 0.8]);
      with ``null=True`` the voxels are pure noise (nothing to find);
    - each head of each layer carries one latent with a *random sign* along a
      random direction, with no offset, so its output norm does not tell
      which sign is "more" (the norm convention of :func:`an_activity` is a
      coin flip here);
    - the final embedding mixes the latents with positive weights, so its
      first principal component (:func:`readout_reference`) is a readout
      against which every head's sign is defined.

    After :func:`orient_ans`, an AN carrying latent k is ``+z_k`` and network
    i's BNs have polarity ``network_sign[i]``.

    Returns
    -------
    world : dict
        ``head_outputs`` {layer: (n_samples, n_heads, head_dim)}, ``final``
        (n_samples, 16), ``latents``, ``head_latent`` (n_layers * n_heads,),
        ``head_sign``, ``Y`` (n_samples, n_networks * voxels_per_network),
        ``networks`` (names ``"net<i>"``), ``network_sign`` (n_networks,),
        ``network_latent`` (n_networks,).
    """
    rng = check_random_state(random_state)
    Z = rng.standard_normal((n_samples, n_latents))
    n_ans = n_layers * n_heads
    head_latent = rng.integers(n_latents, size=n_ans)
    head_sign = rng.choice([-1.0, 1.0], size=n_ans)
    outputs = {}
    for l in range(n_layers):
        H = np.empty((n_samples, n_heads, head_dim))
        for h in range(n_heads):
            j = l * n_heads + h
            u = rng.standard_normal(head_dim)
            u /= np.linalg.norm(u)
            a = head_sign[j] * Z[:, head_latent[j]] + 0.3 * rng.standard_normal(n_samples)
            H[:, h] = a[:, None] * u[None, :] + 0.2 * rng.standard_normal((n_samples, head_dim))
        outputs[f"layer{l}"] = H
    Wf = rng.uniform(0.5, 1.0, size=(n_latents, 16))
    final = Z @ Wf + 0.3 * rng.standard_normal((n_samples, 16))
    network_sign = rng.choice([-1.0, 1.0], size=n_networks)
    network_latent = np.arange(n_networks) % n_latents
    n_vox = n_networks * voxels_per_network
    net_of_voxel = np.repeat(np.arange(n_networks), voxels_per_network)
    w = rng.uniform(0.4, 0.8, size=n_vox)
    signal = (network_sign[net_of_voxel] * w) * Z[:, network_latent[net_of_voxel]]
    Y = rng.standard_normal((n_samples, n_vox)) + (0.0 if null else signal)
    return {"head_outputs": outputs, "final": final, "latents": Z, "head_latent": head_latent,
            "head_sign": head_sign, "Y": Y,
            "networks": np.array([f"net{i}" for i in net_of_voxel]),
            "network_sign": network_sign, "network_latent": network_latent}


def make_fusion_world(n_samples=600, *, n_voxels=400, n_latents=2, n_ans=24, signal=0.5,
                      an_noise=0.3, planted=True, random_state=0):
    """A world with (``planted=True``) or without planted image x caption fusion in the brain.

    Three kinds of latent per stimulus, independent standard normals of
    ``n_latents`` columns each: ``u`` seen in the image only, ``w`` said in
    the caption only, ``z`` in both. Four AN families, ``n_ans`` heads each,
    every head one latent plus noise (SD ``an_noise``), cycling through its
    family's latents:

    - a **dual encoder**: image tower ``u, z``; text tower ``w, z``;
    - a **fused model**: image side ``u, z``; fusion heads ``w, z`` and the
      interaction ``u * w`` (a head that reads the caption and attends to
      the image), and the same fusion heads computed from **mismatched
      captions** (``w``, ``z`` of another stimulus, ``u * w`` with that
      ``w``).

    A quarter of the voxels each is driven by one ``u`` (image), one ``w``
    (text), one ``z`` (shared), and, in the fourth quarter, by ``u (1 + w)``
    when ``planted`` (an image feature whose drive the caption modulates:
    only a fused representation carries the product) or by ``u`` alone when
    not. Each voxel's drive is standardised and scaled by ``signal``, plus
    unit noise; signs are random.

    So the dual encoder's towers share the ``z`` voxels; the fused model's
    families share the ``z`` voxels and, only when ``planted``, the fourth
    quarter too. :func:`fusion_test` must find ``fused > dual`` in the first
    world and not in the second.

    Parameters
    ----------
    n_samples, n_voxels, n_latents, n_ans : int
    signal, an_noise : float
    planted : bool
    random_state : int or None

    Returns
    -------
    world : dict
        ``dual`` and ``fused`` (dicts of two (n_samples, n_ans) families),
        ``mismatched`` (n_samples, n_ans), ``Y`` (n_samples, n_voxels),
        ``voxel_type`` (n_voxels,) of "image", "text", "shared", "fusion".
    """
    if n_voxels < 4 or n_ans < 3 or n_latents < 1:
        raise ValueError(f"need n_voxels >= 4, n_ans >= 3 and n_latents >= 1, got "
                         f"{n_voxels}, {n_ans}, {n_latents}.")
    rng = check_random_state(random_state)
    u, w, z = (rng.standard_normal((n_samples, n_latents)) for _ in range(3))
    perm = rng.permutation(n_samples)
    while n_samples > 1 and np.any(perm == np.arange(n_samples)):
        perm = rng.permutation(n_samples)

    def family(columns):
        cols = [columns[i % len(columns)] for i in range(n_ans)]
        return np.column_stack(cols) + an_noise * rng.standard_normal((n_samples, n_ans))

    def latents(*arrays):
        return [a[:, j] for j in range(n_latents) for a in arrays]

    uw = u * w
    dual = {"image": family(latents(u, z)), "text": family(latents(w, z))}
    fused = {"image": family(latents(u, z)), "fusion": family(latents(w, z, uw))}
    mismatched = family(latents(w[perm], z[perm], u * w[perm]))
    kinds = np.array(["image", "text", "shared", "fusion"])
    voxel_type = kinds[np.arange(n_voxels) * 4 // n_voxels]
    j = rng.integers(n_latents, size=n_voxels)
    drive = np.empty((n_samples, n_voxels))
    for v, (t, jj) in enumerate(zip(voxel_type, j)):
        if t == "image":
            drive[:, v] = u[:, jj]
        elif t == "text":
            drive[:, v] = w[:, jj]
        elif t == "shared":
            drive[:, v] = z[:, jj]
        else:
            drive[:, v] = u[:, jj] * (1 + w[:, jj]) if planted else u[:, jj]
    drive = (drive - drive.mean(axis=0)) / drive.std(axis=0)
    sign = rng.choice([-1.0, 1.0], size=n_voxels)
    Y = signal * drive * sign + rng.standard_normal((n_samples, n_voxels))
    return {"dual": dual, "fused": fused, "mismatched": mismatched, "Y": Y,
            "voxel_type": voxel_type}
