"""Does scale invariance go with brain alignment? Relations across models.

Paper A's claims A1 and A3 are statements about a *population of models*: models
with a higher scale-invariance score have a higher alignment score. With a
handful of models, the right tools are a rank correlation, an exact-style
permutation p-value and a bootstrap interval over models; this module provides
them, plus a small results table (one row per model) that can be saved and
reloaded so a chapter never recomputes what it already has.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from . import stats as _stats
from ._validation import check_array, check_consistent_samples, check_random_state

__all__ = ["Relation", "relate", "save_table", "load_table", "scale_invariance",
           "brain_alignment", "alignment_table", "relate_columns"]


@dataclass(frozen=True)
class Relation:
    """A correlation across models with its uncertainty.

    Attributes
    ----------
    statistic : float
        Spearman's rho (or Pearson's r).
    p_value : float
        Two-sided permutation p-value, (1 + #{|null| >= |observed|}) / (1 + n_permutations)
        (:func:`scaleinv_utils.stats.permutation_pvalue`).
    ci_low, ci_high : float
        Percentile bootstrap interval over models.
    n_models : int
    method : str
    """

    statistic: float
    p_value: float
    ci_low: float
    ci_high: float
    n_models: int
    method: str

    def __str__(self):
        name = "rho" if self.method == "spearman" else "r"
        return (f"{name} = {self.statistic:+.2f} (95% CI {self.ci_low:+.2f} to {self.ci_high:+.2f}), "
                f"permutation p = {self.p_value:.3g}, n = {self.n_models} models")


def relate(x, y, *, method="spearman", n_permutations=9999, n_bootstrap=2000, confidence=0.95,
           random_state=None):
    """Correlate two scores across models, with a permutation test and a bootstrap interval.

    Parameters
    ----------
    x : array-like of shape (n_models,)
        E.g. each model's dimensional-stability score.
    y : array-like of shape (n_models,)
        E.g. each model's brain-alignment score.
    method : {"spearman", "pearson"}
    n_permutations : int
        Shuffles of y for the null distribution.
    n_bootstrap : int
        Resamples of models (with replacement) for the interval.
    confidence : float
        Coverage of the interval.
    random_state : int or None

    Returns
    -------
    relation : Relation

    Raises
    ------
    ValueError
        If fewer than 4 models are given, lengths differ, values are not
        finite, or a score is constant.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}.")
    x = check_array(x, "x", ndim=1, min_samples=4)
    y = check_array(y, "y", ndim=1, min_samples=4)
    n = check_consistent_samples(x=x, y=y)
    for name, v in (("x", x), ("y", y)):
        if np.ptp(v) == 0:
            raise ValueError(f"{name} is constant across the {n} models; a correlation is undefined.")
    rng = check_random_state(random_state)
    corr = _stats.spearman if method == "spearman" else _stats.pearson
    # Permuting y's ranks is ranking a permuted y: rank once, then Pearson on each shuffle.
    tx, ty = (stats.rankdata(x), stats.rankdata(y)) if method == "spearman" else (x, y)
    perms = np.argsort(rng.random((n_permutations, n)), axis=1)
    # The observed order is row 0 of the same batched computation, so a shuffle that
    # reproduces it gets bit-identical r and counts as a tie (no tolerance needed).
    rows = np.concatenate([ty[None, :], ty[perms]])
    r_all = _stats.pearson(tx, rows, axis=-1)
    observed = float(r_all[0])
    p_value = _stats.permutation_pvalue(observed, r_all[1:], alternative="two-sided")
    # Bootstrap over models; resamples that drew one model n times have no correlation (NaN, dropped).
    boot = _stats.bootstrap(lambda a, b: corr(a, b, axis=-1), x, y, n_resamples=n_bootstrap,
                            level=confidence, random_state=rng, vectorized=True)
    lo, hi = boot.low, boot.high
    return Relation(observed, float(p_value), float(lo), float(hi), n, method)


def save_table(table, path):
    """Save a results table (pandas DataFrame, one row per model) as CSV, atomically.

    ``table.attrs`` (e.g. the scale grid and profiles of :func:`alignment_table`)
    is saved beside it as ``<path>.attrs.json`` and restored by :func:`load_table`.

    Parameters
    ----------
    table : pandas.DataFrame
    path : str or Path

    Returns
    -------
    path : pathlib.Path
    """
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # CSV cannot hold table.attrs (scale grid, profiles): they go to a JSON file beside it,
    # written first so a CSV never exists without its attrs.
    attrs_path = path.with_suffix(path.suffix + ".attrs.json")
    tmp = attrs_path.with_suffix(".part")
    tmp.write_text(json.dumps(table.attrs, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    tmp.replace(attrs_path)
    tmp = path.with_suffix(path.suffix + ".part")
    table.to_csv(tmp, index=True)
    tmp.replace(path)
    return path


def load_table(path):
    """Load a table written by :func:`save_table`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    """
    import pandas as pd

    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No results table at {path}; compute it first.")
    table = pd.read_csv(path, index_col=0)
    attrs_path = path.with_suffix(path.suffix + ".attrs.json")
    if attrs_path.is_file():
        table.attrs.update(json.loads(attrs_path.read_text()))
    return table


# ---------------------------------------------------------------------------
# the pipeline of paper A: per representation, scale invariance and alignment

def scale_invariance(X, ks=None, *, estimator="gride", stability="cv", n_anchors=500,
                     n_null=10, random_state=None, device=None):
    """Scale-invariance measures of one representation, raw and calibrated.

    Both within-representation scores are compared with ``n_null`` Gaussian
    surrogates of the same covariance (:func:`scaleinv_utils.stats.gaussian_surrogate`):
    the raw scores mostly reflect the eigenspectrum, and the calibrated ones
    (raw - null mean) what the geometry adds beyond it.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    ks : array-like of int of shape (n_scales,) or None
        Scales; default: a log grid from 5 to n_samples // 8 (Gride at scale k
        needs 2k neighbours).
    estimator : str
        ID estimator of :func:`scaleinv_utils.dimension.id_profile`.
    stability : str
        Method of :func:`scaleinv_utils.dimension.dimensional_stability`.
    n_anchors : int
        Anchor stimuli of :func:`scaleinv_utils.similarity.cross_scale_similarity`.
    n_null : int
        Surrogates per score (0: raw scores only, the null keys are NaN).
    random_state : int or None
    device : {None, "cpu", "cuda"}

    Returns
    -------
    measures : dict
        ``ks``, ``id_profile`` (n_scales,), ``mean_id``, ``id_cv`` (dimensional
        stability as a coefficient of variation: lower is more stable),
        ``cross_scale_similarity`` (higher is more scale invariant), and with
        a null ``id_cv_null``, ``id_cv_calibrated`` (negative: more stable
        than the spectrum gives), ``cross_scale_similarity_null`` and
        ``cross_scale_similarity_calibrated`` (positive: structure persists
        across scales beyond the spectrum).
    """
    from .dimension import calibrated_stability, dimensional_stability, id_profile
    from .neighbors import scale_grid
    from .similarity import cross_scale_similarity

    X = check_array(X, "X", min_samples=20)
    n = X.shape[0]
    if ks is None:
        ks = scale_grid(n, n_scales=12, k_min=5, k_max=max(6, n // 8))
    if n_null:
        stab = calibrated_stability(X, ks, estimator=estimator, method=stability, n_null=n_null,
                                    random_state=random_state, device=device)
        ks_used, ids = stab.ks, stab.ids
    else:
        profile = id_profile(X, ks, estimators=(estimator,), random_state=random_state,
                             device=device)
        ks_used, ids = profile.ks, profile.ids[estimator]
    css = cross_scale_similarity(X, ks=ks_used, n_anchors=min(n_anchors, n), n_null=n_null,
                                 random_state=random_state)
    return {"ks": ks_used, "id_profile": ids, "mean_id": float(np.mean(ids)),
            "id_cv": float(dimensional_stability(ids, ks_used, method=stability)),
            "id_cv_null": float(stab.null_mean) if n_null else np.nan,
            "id_cv_calibrated": float(stab.calibrated) if n_null else np.nan,
            "cross_scale_similarity": float(css.score),
            "cross_scale_similarity_null": float(css.null_mean),
            "cross_scale_similarity_calibrated": float(css.calibrated)}


def _linear_cka_shuffle_null(F, B, n_permutations, rng):
    """Biased linear CKA of F and B and its stimulus-shuffle null, from the two Gram matrices.

    Permuting B's rows permutes both axes of its centred Gram matrix and leaves
    its norm unchanged, so each shuffle costs O(n^2) instead of O(n p q).
    """
    Fc = F - F.mean(axis=0)
    Bc = B - B.mean(axis=0)
    K, L = Fc @ Fc.T, Bc @ Bc.T
    den = np.linalg.norm(K) * np.linalg.norm(L)
    if den <= 0:
        raise ValueError("a representation has no variance across the test stimuli; CKA is undefined.")
    n = K.shape[0]
    raw = float(np.sum(K * L) / den)
    null = np.array([np.sum(K * L[np.ix_(p, p)]) / den
                     for p in (rng.permutation(n) for _ in range(int(n_permutations)))])
    return raw, null


def brain_alignment(X, subj, *, networks=None, min_nc=1.0, aligned=False, n_permutations=200,
                    random_state=None, backend=None):
    """How well one representation aligns with a subject's responses, per network.

    Two views of alignment: a voxelwise encoding model (median over the
    network's voxels of the noise-ceiling-normalised test r) and linear CKA
    between the representation and the network's responses on the shared
    test images. Raw (biased) CKA grows with the dimension of either side even
    for unrelated data, so the score reported is calibrated against a
    stimulus-shuffle null: the CKA after permuting the brain's test images,
    ``cka = raw - mean(null)`` (0 on average for unrelated representations).

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        One row per stimulus of the subset (or per row of ``subj.betas`` with
        ``aligned=True``).
    subj : SubjectData
    networks : sequence of str or None
        Labels of ``subj.voxels.network`` to summarise; default: all.
    min_nc : float
        Voxels with a noise ceiling (percent) below this are left out.
    aligned : bool
    n_permutations : int
        Stimulus shuffles of the CKA null.
    random_state : int or None
    backend : str or None
        himalaya backend (None: GPU when present).

    Returns
    -------
    scores : dict of str to float
        ``encoding[<network>]``, ``cka[<network>]`` (calibrated),
        ``cka_raw[<network>]``, ``cka_null_sd[<network>]`` and ``cka_p[<network>]``
        (one-sided permutation p-value, :func:`scaleinv_utils.stats.permutation_pvalue`).
    """
    from .encoding import encoding_scores

    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}.")
    result = encoding_scores(X, subj, aligned=aligned, min_nc=min_nc, backend=backend,
                             random_state=random_state)
    F = np.asarray(X, dtype=np.float64)
    if not aligned:
        F = F[subj.image_index]
    labels = subj.voxels.network
    networks = sorted(set(labels)) if networks is None else list(networks)
    rng = check_random_state(random_state)
    out = {}
    for net in networks:
        sel = labels == net
        if not sel.any():
            raise ValueError(f"network {net!r} has no voxels; networks are {sorted(set(labels))}.")
        out[f"encoding[{net}]"] = float(np.nanmedian(result.r_nc[sel]))
        raw, null = _linear_cka_shuffle_null(F[subj.test], np.asarray(subj.betas[subj.test][:, sel],
                                                                     dtype=np.float64),
                                             n_permutations, rng)
        cal = _stats.calibrate(raw, null, alternative="greater")
        out[f"cka[{net}]"] = cal.calibrated
        out[f"cka_raw[{net}]"] = cal.raw
        out[f"cka_null_sd[{net}]"] = cal.null_sd
        out[f"cka_p[{net}]"] = cal.p_value
    return out


_INVARIANCE_COLUMNS = ("mean_id", "id_cv", "id_cv_null", "id_cv_calibrated", "cross_scale_similarity",
                       "cross_scale_similarity_null", "cross_scale_similarity_calibrated")


def alignment_table(representations, subj, *, brain_networks=("early visual", "mid-level", "category"),
                    networks=None, ks=None, estimator="gride", metadata=None, n_null=5,
                    n_permutations=200, random_state=0, progress=True):
    """Paper A's table: per representation, scale invariance, profile similarity to the brain, alignment.

    All measures use the same stimuli: the subject's images
    (``subj.image_index``), so the brain's ID profile and each model's are
    computed on one scale grid.

    Parameters
    ----------
    representations : dict of str to array-like of shape (n_images, n_features)
        Name -> features of every stimulus of the subset (a model, or a layer of one).
    subj : SubjectData
    brain_networks : sequence of str
        Networks whose voxels form "the brain's" representation for its scale profile.
    networks : sequence of str or None
        Networks for the alignment columns (default: all).
    ks : array-like of int or None
        Shared scale grid.
    estimator : str
    metadata : dict of str to dict or None
        Extra columns per representation (e.g. training-set size, has_language).
    n_null : int
        Covariance-matched Gaussian surrogates per representation for the
        calibrated scale-invariance columns (:func:`scale_invariance`; 0: raw
        only). Each costs about one ID profile plus one cross-scale score:
        about 8 s for 1000 stimuli on 2 busy cores, so the default is small.
    n_permutations : int
        Stimulus shuffles of the calibrated CKA (:func:`brain_alignment`).
    random_state : int or None
    progress : bool

    Returns
    -------
    table : pandas.DataFrame
        One row per representation: ``mean_id``, ``id_cv``, ``id_cv_null``,
        ``id_cv_calibrated``, ``cross_scale_similarity`` (raw),
        ``cross_scale_similarity_null``, ``cross_scale_similarity_calibrated``,
        ``profile_similarity`` (Pearson correlation of the model's ID profile
        with the brain's), ``encoding[...]``, ``cka[...]`` (linear CKA
        calibrated against shuffled stimuli; raw in ``cka_raw[...]``, with
        ``cka_null_sd[...]`` and ``cka_p[...]``), metadata columns. ``table.attrs`` holds the brain's
        profile, the scale grid and each representation's profile.
    """
    import pandas as pd
    from ._progress import tqdm

    from .similarity import compare_profiles

    if not representations:
        raise ValueError("representations is empty: give at least one name -> features entry.")
    sel = np.isin(subj.voxels.network, list(brain_networks))
    if not sel.any():
        raise ValueError(f"brain_networks {list(brain_networks)} match no voxel; networks are "
                         f"{sorted(set(subj.voxels.network))}.")
    brain = scale_invariance(subj.betas[:, sel], ks, estimator=estimator, n_null=n_null,
                             random_state=random_state)
    rows, profiles = {}, {}
    for name, X in tqdm(representations.items(), disable=not progress, desc="representations"):
        X = check_array(X, f"representations[{name!r}]")
        if X.shape[0] <= int(np.max(subj.image_index)):
            raise ValueError(f"representations[{name!r}] has {X.shape[0]} rows; it needs one per "
                             f"stimulus of the subset (the subject uses rows up to {np.max(subj.image_index)}).")
        inv = scale_invariance(X[subj.image_index], brain["ks"], estimator=estimator,
                               n_null=n_null, random_state=random_state)
        profiles[name] = inv["id_profile"]
        row = {k: inv[k] for k in _INVARIANCE_COLUMNS}
        row["profile_similarity"] = float(compare_profiles(inv["id_profile"], brain["id_profile"]))
        row.update(brain_alignment(X, subj, networks=networks, n_permutations=n_permutations,
                                   random_state=random_state))
        row.update((metadata or {}).get(name, {}))
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "representation"
    # Plain lists, not arrays: pandas compares attrs with == when tables are concatenated.
    table.attrs.update(ks=brain["ks"].tolist(), brain_profile=brain["id_profile"].tolist(),
                       profiles={k: v.tolist() for k, v in profiles.items()},
                       brain={k: brain[k] for k in _INVARIANCE_COLUMNS})
    return table


def relate_columns(table, x, y, **kwargs):
    """:func:`relate` two columns of an alignment table (rows with NaN dropped).

    Parameters
    ----------
    table : pandas.DataFrame
    x, y : str
        Column names.
    **kwargs
        Passed to :func:`relate`.

    Returns
    -------
    relation : Relation

    Raises
    ------
    KeyError
        If a column is missing.
    """
    for col in (x, y):
        if col not in table.columns:
            raise KeyError(f"column {col!r} is not in the table; columns: {list(table.columns)}.")
    pair = table[[x, y]].dropna()
    return relate(pair[x].to_numpy(float), pair[y].to_numpy(float), **kwargs)
