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
learn_atoms             sparse dictionary learning -> atoms and sparse loadings
match_components        match two sets of components up to permutation and sign
map_to_voxels           ridge maps, tests, FDR, BN sets of positive/negative polarity
map_subject             the same on a subject's train/test split
fdr_bh                  Benjamini-Hochberg adjusted p-values
dice, jaccard           overlap of two voxel sets
pairwise_overlap        overlap of every pair of BN sets
expected_dice           chance Dice of two random sets of given sizes
redundancy              observed overlap vs a shuffled baseline
network_counts          BN voxels of each AN in each network
polarity_by_layer       positive / negative BN counts per layer
polarity_trend          slopes of those counts across layers: mirrored or not
modality_specificity    voxels predicted by tower A only, B only, or both
make_toy_neurons        a planted world with a known answer
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_array, check_consistent_samples, check_random_state

__all__ = [
    "AN_METHODS", "ArtificialNeurons", "Atoms", "VoxelMaps", "RedundancyResult",
    "an_activity", "artificial_neurons", "learn_atoms", "match_components",
    "map_to_voxels", "map_subject", "fdr_bh", "dice", "jaccard", "pairwise_overlap",
    "expected_dice", "redundancy", "network_counts", "polarity_by_layer", "polarity_trend",
    "modality_specificity", "make_toy_neurons",
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
    Ac = A - A.mean(axis=0)
    Bc = B - B.mean(axis=0)
    den = np.linalg.norm(Ac, axis=0)[:, None] * np.linalg.norm(Bc, axis=0)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        C = np.where(den > 0, Ac.T @ Bc / den, 0.0)
    rows, cols = linear_sum_assignment(-np.abs(C))
    index = -np.ones(A.shape[1], dtype=int)
    sign = np.zeros(A.shape[1])
    corr = np.full(A.shape[1], np.nan)
    index[rows] = cols
    sign[rows] = np.where(C[rows, cols] >= 0, 1.0, -1.0)
    corr[rows] = np.abs(C[rows, cols])
    return index, sign, corr


# --------------------------------------------------------------------------- voxel maps
def fdr_bh(pvalues, axis=-1):
    """Benjamini-Hochberg adjusted p-values (q-values), along one axis.

    Voxels with q <= 0.05 form a set whose expected false discovery
    proportion is at most 5% (for independent or positively dependent tests).

    Parameters
    ----------
    pvalues : array-like
        NaN entries are ignored (they stay NaN and do not count as tests).
    axis : int
        Axis holding one family of tests (the voxels of one map).

    Returns
    -------
    qvalues : ndarray of the same shape

    Raises
    ------
    ValueError
        If any p-value is outside [0, 1].
    """
    p = np.asarray(pvalues, dtype=np.float64)
    finite = p[np.isfinite(p)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(f"p-values must lie in [0, 1], found range [{finite.min():.3g}, "
                         f"{finite.max():.3g}].")
    p = np.moveaxis(p, axis, -1)
    flat = p.reshape(-1, p.shape[-1]) if p.ndim else p.reshape(1, 1)
    q = np.full(flat.shape, np.nan)
    for r, row in enumerate(flat):
        ok = np.flatnonzero(np.isfinite(row))
        m = ok.size
        if m == 0:
            continue
        order = ok[np.argsort(row[ok], kind="stable")]
        ranked = row[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        q[r, order] = np.minimum(ranked, 1.0)
    return np.moveaxis(q.reshape(p.shape), -1, axis)


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
    """Pearson correlation of every column of X with every column of Y: (p, q)."""
    Xc = X - X.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    den = np.linalg.norm(Xc, axis=0)[:, None] * np.linalg.norm(Yc, axis=0)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, Xc.T @ Yc / den, np.nan)


def _ridge_path(Xs, Yc, alpha_of_voxel):
    """Ridge coefficients with one penalty per voxel, by one SVD: (k, n_voxels)."""
    U, s, Vt = np.linalg.svd(Xs, full_matrices=False)
    UtY = U.T @ Yc
    W = np.empty((Xs.shape[1], Yc.shape[1]))
    for a in np.unique(alpha_of_voxel):
        sel = alpha_of_voxel == a
        W[:, sel] = Vt.T @ ((s / (s ** 2 + a))[:, None] * UtY[:, sel])
    return W, U, s, Vt


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

    Significance (on the training stimuli), then Benjamini-Hochberg FDR over
    the voxels of each regressor's map:

    ``"parametric"``
        joint: the classical GLM t-test of each least-squares coefficient
        (df = n - k - 1, as in paper B's GLM); marginal: the t-test of the
        Pearson correlation (df = n - 2). Exact for Gaussian noise.
    ``"permutation"``
        The stimulus labels of the responses are permuted ``n_permutations``
        times (regressors keep their mutual correlations) and the statistic
        (joint: ridge coefficient with each voxel's chosen penalty; marginal:
        correlation) recomputed; p = (1 + #|null| >= |observed|) / (1 + n_permutations).
        For joint models this tests "the voxel depends on none of the
        regressors" per coefficient, so with strongly correlated regressors
        prefer the parametric test. The smallest p is 1/(1 + n_permutations):
        use enough permutations for FDR over many voxels.

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
    from scipy import stats

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
    Xtr, Ytr = X[train_m], Y[train_m]
    n_tr = Xtr.shape[0]
    min_needed = k + 2 if joint else 3
    if n_tr < min_needed:
        raise ValueError(f"too few training stimuli: need at least {min_needed} for "
                         f"{k} regressor(s) (joint={joint}), got {n_tr}.")
    rng = check_random_state(random_state)
    Xs, x_mean, x_sd = _standardise(Xtr)
    if np.any(x_sd == 0):
        raise ValueError(f"regressors has {int((x_sd == 0).sum())} constant column(s) on the "
                         "training stimuli; drop them first.")
    Yc = Ytr - Ytr.mean(axis=0)
    best_alphas = None
    r_test = r2_test = None

    if joint:
        from .encoding import fit_encoding, pearson_per_voxel, r2_per_voxel

        model = fit_encoding(Xtr, Ytr, alphas=alphas, cv=cv, backend=backend,
                             random_state=int(rng.integers(2**31 - 1)))
        coef = np.asarray(model.coef, dtype=np.float64)
        best_alphas = np.asarray(model.best_alphas, dtype=np.float64)
        if test_m is not None and test_m.sum() >= 2:
            pred = model.predict(X[test_m])
            r_test = pearson_per_voxel(Y[test_m], pred)
            r2_test = r2_per_voxel(Y[test_m], pred)
        if significance == "parametric":
            df = n_tr - k - 1
            G = Xs.T @ Xs
            if np.linalg.matrix_rank(G) < k:
                raise ValueError("the regressors are collinear on the training stimuli, so the "
                                 "GLM t-test is undefined; use joint=False, fewer regressors "
                                 "(e.g. atoms) or significance='permutation'.")
            Ginv = np.linalg.inv(G)
            B = Ginv @ Xs.T @ Yc
            resid = Yc - Xs @ B
            sigma2 = (resid ** 2).sum(axis=0) / df
            se = np.sqrt(np.outer(np.diag(Ginv), sigma2))
            with np.errstate(invalid="ignore", divide="ignore"):
                stat = np.where(se > 0, B / se, 0.0)
            pvalues = 2 * stats.t.sf(np.abs(stat), df)
        else:
            stat, U, s, Vt = _ridge_path(Xs, Yc, best_alphas)
            shrink = {a: Vt.T * (s / (s ** 2 + a))[None, :] for a in np.unique(best_alphas)}
            exceed = np.zeros_like(stat)
            for _ in range(int(n_permutations)):
                UtYp = U[rng.permutation(n_tr)].T @ Yc  # = U.T @ Yc[inverse permutation]
                null = np.empty_like(stat)
                for a, M in shrink.items():
                    sel = best_alphas == a
                    null[:, sel] = M @ UtYp[:, sel]
                exceed += np.abs(null) >= np.abs(stat)
            pvalues = (1.0 + exceed) / (1.0 + n_permutations)
    else:
        r = _corr_columns(Xs, Ytr)
        y_sd = Ytr.std(axis=0)
        coef = r * y_sd[None, :]
        if test_m is not None and test_m.sum() >= 2:
            # The univariate prediction is affine in the regressor, so its held-out
            # correlation is the test-set correlation with the training slope's sign.
            r_te = _corr_columns(X[test_m], Y[test_m])
            r_test = np.sign(coef) * r_te
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
        if significance == "parametric":
            df = n_tr - 2
            rr = np.clip(np.nan_to_num(r), -1 + 1e-15, 1 - 1e-15)
            stat = rr * np.sqrt(df / (1 - rr ** 2))
            pvalues = 2 * stats.t.sf(np.abs(stat), df)
            pvalues = np.where(np.isfinite(r), pvalues, np.nan)
        else:
            stat = np.nan_to_num(r)
            Ys = Yc / np.where(np.linalg.norm(Yc, axis=0) > 0, np.linalg.norm(Yc, axis=0), 1.0)
            Xn = Xs / np.sqrt(n_tr)
            exceed = np.zeros_like(stat)
            for _ in range(int(n_permutations)):
                exceed += np.abs(Xn[rng.permutation(n_tr)].T @ Ys) >= np.abs(stat) - 1e-12
            pvalues = (1.0 + exceed) / (1.0 + n_permutations)
            pvalues = np.where(np.isfinite(r), pvalues, np.nan)
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
    """How much the BN sets of different ANs overlap, against a shuffled baseline.

    Attributes
    ----------
    observed : float
        The redundancy statistic: the mean over non-empty sets of the overlap
        with their best-matching other set (``statistic="max"``), or the mean
        overlap over all pairs of non-empty sets (``statistic="mean"``).
    null : ndarray of shape (n_shuffles,)
        The same after shuffling each set's voxels independently (sizes kept).
    chance : float
        Mean of ``null``.
    ratio : float
        observed / chance.
    z : float
        (observed - chance) / SD(null).
    pvalue : float
        One-sided: (1 + #null >= observed) / (1 + n_shuffles).
    overlap : ndarray of shape (n_sets, n_sets)
    multiplicity : ndarray of shape (n_voxels,), int
        How many sets contain each voxel: "how many ANs predict this BN".
    partners : ndarray of shape (n_sets,), int
        For each set, the number of other sets whose overlap with it exceeds
        the 95th percentile of shuffled pair overlaps.
    metric : str
    statistic : str
    """

    observed: float
    null: np.ndarray = field(repr=False)
    chance: float
    ratio: float
    z: float
    pvalue: float
    overlap: np.ndarray = field(repr=False)
    multiplicity: np.ndarray = field(repr=False)
    partners: np.ndarray = field(repr=False)
    metric: str = "dice"
    statistic: str = "max"


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
    if strata_codes is None:
        keys = rng.random(M.shape)
        return np.take_along_axis(M, np.argsort(keys, axis=1), axis=1)
    out = np.empty_like(M)
    for idx in strata_codes:
        keys = rng.random((M.shape[0], idx.size))
        out[:, idx] = np.take_along_axis(M[:, idx], np.argsort(keys, axis=1), axis=1)
    return out


def redundancy(masks, *, metric="dice", statistic="max", n_shuffles=200, strata=None,
               random_state=None):
    """Functional redundancy: do different ANs predict overlapping BN sets?

    The observed overlap statistic is compared with a baseline in which each
    set's voxels are shuffled independently, which keeps every set's size (a
    big set overlaps others by chance) and destroys shared structure.

    Two statistics:

    ``"max"`` (default)
        For each AN, the overlap of its BN set with the most similar other
        AN's set, averaged over ANs: "does every AN have a near-duplicate?".
        It is high when ANs come in redundant groups, however many groups
        there are.
    ``"mean"``
        The mean overlap over all pairs. With a few large, disjoint groups of
        BN sets it can fall *below* chance even though every AN has a perfect
        duplicate, so it suits sparse BN sets best.

    Parameters
    ----------
    masks : array-like of shape (n_sets, n_voxels), bool
        BN sets, one per AN (e.g. ``maps.significant`` or ``maps.positive``).
    metric : {"dice", "jaccard"}
    statistic : {"max", "mean"}
    n_shuffles : int
    strata : array-like of shape (n_voxels,) or None
        Shuffle only within these labels (e.g. ``subj.voxels.network``): a
        stricter baseline that keeps how many voxels each set has in each
        network, so overlap beyond "both prefer the same network" is tested.
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
    null = np.empty(int(n_shuffles))
    pair_null = []
    for s in range(int(n_shuffles)):
        Os = pairwise_overlap(_shuffle_sets(M, rng, codes), metric)
        null[s] = _redundancy_stat(Os, statistic)
        if s < 50:
            pair_null.append(_pair_values(Os))
    chance = float(null.mean())
    sd = float(null.std(ddof=1))
    thresh = np.percentile(np.concatenate(pair_null), 95)
    off = np.where(np.isfinite(O), O, -np.inf)
    np.fill_diagonal(off, -np.inf)
    partners = (off > thresh).sum(axis=1).astype(int)
    z = (observed - chance) / sd if sd > 0 else float("nan")
    ratio = observed / chance if chance > 0 else float("nan")
    pvalue = float((1 + np.sum(null >= observed)) / (1 + null.size))
    return RedundancyResult(observed=observed, null=null, chance=chance, ratio=float(ratio),
                            z=float(z), pvalue=pvalue, overlap=O,
                            multiplicity=M.sum(axis=0).astype(int), partners=partners,
                            metric=metric, statistic=statistic)


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
    """Trends of positive and negative BN counts across layers.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`polarity_by_layer` (without networks, or one network's rows).

    Returns
    -------
    trend : dict
        ``slope_positive``, ``slope_negative`` (least-squares change per
        layer), ``correlation`` (Pearson r between the positive and negative
        series over layers), ``slope_balance`` and ``mirrored`` (True when the
        two slopes have opposite signs: one polarity grows as the other shrinks).
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
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = float(np.corrcoef(pos, neg)[0, 1]) if pos.std() > 0 and neg.std() > 0 else float("nan")
    return {"slope_positive": sp, "slope_negative": sn, "slope_balance": sb,
            "correlation": corr, "mirrored": bool(sp * sn < 0)}


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
