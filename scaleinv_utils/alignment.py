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
           "brain_alignment", "alignment_table", "relate_columns", "summarise_layers",
           "AcrossModels", "across_models", "across_models_table", "local_global_dimension",
           "dial_family", "known_answer_control", "data_ladder_control", "choose_real_models"]


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
        Where the neighbour queries (ID profiles, coarse-graining) and local
        PCA's Gram matrices run; None is the CPU.

    Returns
    -------
    measures : dict
        ``ks``, ``id_profile`` (n_scales,), ``mean_id``, ``id_cv`` (dimensional
        stability as a coefficient of variation: lower is more stable),
        ``cross_scale_similarity`` (higher is more scale invariant), and with
        a null ``id_cv_null`` (its SD over surrogates ``id_cv_null_sd``),
        ``id_cv_calibrated`` (negative: more stable than the spectrum gives),
        ``cross_scale_similarity_null`` (``cross_scale_similarity_null_sd``) and
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
                                 random_state=random_state, device=device)
    return {"ks": ks_used, "id_profile": ids, "mean_id": float(np.mean(ids)),
            "id_cv": float(dimensional_stability(ids, ks_used, method=stability)),
            "id_cv_null": float(stab.null_mean) if n_null else np.nan,
            "id_cv_null_sd": float(stab.null_sd) if n_null else np.nan,
            "id_cv_calibrated": float(stab.calibrated) if n_null else np.nan,
            "cross_scale_similarity": float(css.score),
            "cross_scale_similarity_null": float(css.null_mean),
            "cross_scale_similarity_null_sd": float(css.null_sd),
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


def _stimulus_rows(stimulus_index, wanted, name):
    """Positions in ``stimulus_index`` of the stimuli ``wanted`` (ValueError naming any missing)."""
    stimulus_index = np.asarray(stimulus_index)
    if stimulus_index.ndim != 1 or len(np.unique(stimulus_index)) != stimulus_index.size:
        raise ValueError(f"stimulus_index must be a 1-D array of distinct stimulus indices, got shape "
                         f"{stimulus_index.shape}.")
    order = np.argsort(stimulus_index)
    pos = np.searchsorted(stimulus_index[order], wanted)
    pos = np.minimum(pos, stimulus_index.size - 1)
    found = stimulus_index[order][pos] == wanted
    if not found.all():
        missing = np.asarray(wanted)[~found]
        raise ValueError(f"{name} lacks {missing.size} stimuli the subject uses (e.g. stimulus "
                         f"{int(missing[0])}); stimulus_index must contain them.")
    return order[pos]


def brain_alignment(X, subj, *, networks=None, min_nc=1.0, aligned=False, n_permutations=200,
                    random_state=None, backend=None, encoding=True, stimulus_index=None):
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
    encoding : bool
        Fit the voxelwise encoding models (the costly part: a ridge per voxel
        with its penalty chosen by cross-validation). Only the voxels of
        ``networks`` are fitted; each voxel's fit is independent of the others,
        so the scores equal those of a fit to every voxel. False: CKA only,
        which needs only the test images.
    stimulus_index : array-like of int of shape (n_rows,) or None
        The subset's stimulus index of each row of X (features computed on
        some stimuli only, e.g. ``subset.stimuli.images[subj.image_index]``);
        every stimulus the computation needs (the test images, and the
        training images when ``encoding``) must be present. None: row i is
        stimulus i (or, with ``aligned``, row i of ``subj.betas``).

    Returns
    -------
    scores : dict of str to float
        ``encoding[<network>]`` (when ``encoding``), ``cka[<network>]`` (calibrated),
        ``cka_raw[<network>]``, ``cka_null_sd[<network>]`` and ``cka_p[<network>]``
        (one-sided permutation p-value, :func:`scaleinv_utils.stats.permutation_pvalue`).
    """
    from .encoding import fit_encoding, score_encoding

    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}.")
    if aligned and stimulus_index is not None:
        raise ValueError("give aligned=True or stimulus_index, not both.")
    labels = subj.voxels.network
    networks = sorted(set(labels)) if networks is None else list(networks)
    for net in networks:
        if not (labels == net).any():
            raise ValueError(f"network {net!r} has no voxels; networks are {sorted(set(labels))}.")
    X = check_array(X, "X")
    train, test = np.asarray(subj.train), np.asarray(subj.test)
    if aligned:
        F = X
    elif stimulus_index is not None:
        need = subj.image_index if encoding else subj.image_index[test]
        rows = _stimulus_rows(stimulus_index, need, "X (stimulus_index)")
        F = np.full((subj.image_index.size, X.shape[1]), np.nan)
        F[np.flatnonzero(np.ones(subj.image_index.size, bool) if encoding else test)] = X[rows]
    else:
        if X.shape[0] <= int(np.max(subj.image_index)):
            raise ValueError(f"X has {X.shape[0]} rows; it needs one per stimulus of the subset "
                             f"(the subject uses rows up to {np.max(subj.image_index)}), or "
                             f"stimulus_index.")
        F = X[subj.image_index]
    F = np.asarray(F, dtype=np.float64)
    if F.shape[0] != subj.betas.shape[0]:
        raise ValueError(f"X has {F.shape[0]} rows for the subject's {subj.betas.shape[0]} images.")
    in_nets = np.isin(labels, networks)
    if encoding:
        model = fit_encoding(F[train], subj.betas[train][:, in_nets], backend=backend,
                             random_state=random_state)
        r_nc = np.full(labels.shape, np.nan)
        r_nc[in_nets] = score_encoding(model, F[test], subj.betas[test][:, in_nets],
                                       noise_ceiling=subj.noise_ceiling("test")[in_nets],
                                       min_nc=min_nc).r_nc
    rng = check_random_state(random_state)
    out = {}
    for net in networks:
        sel = labels == net
        if encoding:
            out[f"encoding[{net}]"] = float(np.nanmedian(r_nc[sel]))
        raw, null = _linear_cka_shuffle_null(F[test], np.asarray(subj.betas[test][:, sel],
                                                                     dtype=np.float64),
                                             n_permutations, rng)
        cal = _stats.calibrate(raw, null, alternative="greater")
        out[f"cka[{net}]"] = cal.calibrated
        out[f"cka_raw[{net}]"] = cal.raw
        out[f"cka_null_sd[{net}]"] = cal.null_sd
        out[f"cka_p[{net}]"] = cal.p_value
    return out


_INVARIANCE_COLUMNS = ("mean_id", "id_cv", "id_cv_null", "id_cv_null_sd", "id_cv_calibrated",
                       "cross_scale_similarity", "cross_scale_similarity_null",
                       "cross_scale_similarity_null_sd", "cross_scale_similarity_calibrated")


def alignment_table(representations, subj, *, brain_networks=("early visual", "mid-level", "category"),
                    networks=None, ks=None, estimator="gride", metadata=None, n_null=5,
                    n_permutations=200, n_anchors=500, encoding=True, stimulus_index=None,
                    random_state=0, progress=True, device=None):
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
    n_anchors : int
        Anchors of the cross-scale similarity (:func:`scale_invariance`).
    encoding : bool
        Fit voxelwise encoding models (:func:`brain_alignment`); False: CKA only.
    stimulus_index : array-like of int of shape (n_rows,) or None
        The subset's stimulus index of each row of every representation
        (features computed on the subject's images only, say); None: one row
        per stimulus of the subset.
    random_state : int or None
    progress : bool
    device : {None, "cpu", "cuda"}
        Device of the scale-invariance measures (:func:`scale_invariance`, the
        main cost); None is the CPU. The alignment columns do not take it: the
        encoding model picks its himalaya backend itself, and the CKA shuffle
        null works on test-image Gram matrices small enough for the CPU.

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
                             random_state=random_state, device=device)
    rows, profiles = {}, {}
    for name, X in tqdm(representations.items(), disable=not progress, desc="representations"):
        X = check_array(X, f"representations[{name!r}]")
        if stimulus_index is not None:
            if X.shape[0] != len(stimulus_index):
                raise ValueError(f"representations[{name!r}] has {X.shape[0]} rows for the "
                                 f"{len(stimulus_index)} entries of stimulus_index.")
            rows_subj = _stimulus_rows(stimulus_index, subj.image_index, f"representations[{name!r}]")
        elif X.shape[0] <= int(np.max(subj.image_index)):
            raise ValueError(f"representations[{name!r}] has {X.shape[0]} rows; it needs one per "
                             f"stimulus of the subset (the subject uses rows up to {np.max(subj.image_index)}).")
        else:
            rows_subj = subj.image_index
        inv = scale_invariance(X[rows_subj], brain["ks"], estimator=estimator, n_anchors=n_anchors,
                               n_null=n_null, random_state=random_state, device=device)
        profiles[name] = inv["id_profile"]
        row = {k: inv[k] for k in _INVARIANCE_COLUMNS}
        row["profile_similarity"] = float(compare_profiles(inv["id_profile"], brain["id_profile"]))
        row.update(brain_alignment(X, subj, networks=networks, n_permutations=n_permutations,
                                   encoding=encoding, stimulus_index=stimulus_index,
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


# ---------------------------------------------------------------------------
# across models, honestly: one point per model, partial correlations, subjects, BH

def summarise_layers(table, columns, *, model="model", layer="layer", by=("subject",), how="mean"):
    """One row per model: each score summarised over the model's layers.

    Layers of one model share weights, so they are not independent points of
    an across-model test; the test needs one point per model. Two summaries:
    the mean over the model's layers (the book's default: it uses every layer
    and chooses nothing on the scores being tested) or one named layer (e.g.
    ``"final"``). Picking each model's best-aligned layer on the alignment
    score itself would select on the outcome and bias the test.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per (model, layer[, subject]) with columns ``model``, ``layer``,
        the score ``columns`` and any metadata.
    columns : sequence of str
        Numeric columns to summarise.
    model, layer : str
        Names of the model and layer columns.
    by : sequence of str
        Further grouping columns kept in the output when present (e.g. "subject").
    how : str
        ``"mean"`` or the name of one layer.

    Returns
    -------
    summary : pandas.DataFrame
        One row per model (per ``by`` group), with ``model``, the ``by``
        columns, ``columns`` and ``n_layers``; metadata columns that are
        constant within a model are kept.

    Raises
    ------
    KeyError
        If a column is missing.
    ValueError
        If ``how`` names a layer that a model lacks.
    """
    columns = list(columns)
    for col in [model, layer] + columns:
        if col not in table.columns:
            raise KeyError(f"column {col!r} is not in the table; columns: {list(table.columns)}.")
    keys = [model] + [b for b in by if b in table.columns]
    if how == "mean":
        grouped = table.groupby(keys, sort=False)
        out = grouped[columns].mean()
        out["n_layers"] = grouped[layer].nunique()
    else:
        sub = table[table[layer] == how]
        missing = sorted(set(table[model]) - set(sub[model]))
        if missing:
            raise ValueError(f"how={how!r} names a layer that models {missing} lack; layers are "
                             f"{sorted(set(table[layer]))}.")
        out = sub.set_index(keys)[columns].copy()
        out["n_layers"] = 1
    rest = [c for c in table.columns if c not in set(columns) | set(keys) | {layer}]
    const = table.groupby(keys, sort=False)[rest].nunique(dropna=False).le(1).all()
    meta = table.groupby(keys, sort=False)[[c for c in rest if const[c]]].first()
    return out.join(meta).reset_index()


def _partial_batch(x, y, covariates, method):
    """(Partial) correlation of x and each row of y, batched over leading axes.

    x : (..., n), y : (..., n), covariates : (..., n, k) (k may be 0). Ranks
    first for Spearman; x and y are residualised on [1, covariates] by least
    squares and correlated with :func:`scaleinv_utils.stats.pearson`, which
    makes this :func:`scaleinv_utils.stats.partial_correlation` for one row.
    """
    if method == "spearman":
        x = stats.rankdata(x, axis=-1)
        y = stats.rankdata(y, axis=-1)
        if covariates.shape[-1]:
            covariates = stats.rankdata(covariates, axis=-2)
    shape = np.broadcast_shapes(x.shape[:-1], y.shape[:-1], covariates.shape[:-2])
    n = x.shape[-1]
    D = np.concatenate([np.ones(shape + (n, 1)), np.broadcast_to(covariates, shape + covariates.shape[-2:])],
                       axis=-1)
    H = np.eye(n) - D @ np.linalg.pinv(D)  # residual-maker of each design
    rx = np.einsum("...ij,...j->...i", H, np.broadcast_to(x, shape + (n,)))
    ry = np.einsum("...ij,...j->...i", H, np.broadcast_to(y, shape + (n,)))
    return np.asarray(_stats.pearson(rx, ry, axis=-1))


@dataclass(frozen=True)
class AcrossModels:
    """An across-model test: one point per model, replicated over subjects.

    Attributes
    ----------
    x, y : str
        The two scores (e.g. a scale-invariance measure and an alignment score).
    covariates : tuple of str
        Scores partialled out (e.g. ``("mean_id",)``); empty for a plain correlation.
    method : {"spearman", "pearson"}
    estimate : float
        Mean over subjects of each subject's (partial) correlation across models.
    low, high : float
        Percentile bootstrap interval of ``estimate``, resampling *models*
        (each resample uses the same models for every subject).
    p_value : float
        Two-sided permutation p-value of ``estimate``: models' y permuted (the
        same permutation in every subject); with covariates, y's residuals
        after regressing it on them are permuted (Freedman & Lane 1983).
    raw : float
        Mean over subjects of the plain correlation (no covariates).
    per_subject : dict of str to float
        Each subject's (partial) correlation.
    per_subject_p : dict of str to float
        Each subject's two-sided permutation p-value.
    n_models, n_subjects : int
    n_replicated : int
        Subjects whose own correlation has the sign of ``estimate`` and a
        p-value <= 0.05.
    """

    x: str
    y: str
    covariates: tuple
    method: str
    estimate: float
    low: float
    high: float
    p_value: float
    raw: float
    per_subject: dict
    per_subject_p: dict
    n_models: int
    n_subjects: int
    n_replicated: int

    def __str__(self):
        name = "rho" if self.method == "spearman" else "r"
        given = f" | {', '.join(self.covariates)}" if self.covariates else ""
        return (f"{name}({self.x}, {self.y}{given}) = {self.estimate:+.2f} "
                f"(95% CI {self.low:+.2f} to {self.high:+.2f}), permutation p = {self.p_value:.3g}; "
                f"plain {name} {self.raw:+.2f}; n = {self.n_models} models x {self.n_subjects} "
                f"subjects, replicated in {self.n_replicated}/{self.n_subjects}")

    def verdict(self, direction="greater", alpha=0.05, pvalue=None, claim="", p_label=None):
        """:func:`scaleinv_utils.stats.verdict` of this test.

        ``pvalue`` overrides the permutation p-value, e.g. with a BH q-value; it is then
        printed as "q" unless ``p_label`` says otherwise.
        """
        if p_label is None:
            p_label = "p" if pvalue is None else "q"
        return _stats.verdict(self.estimate, self.low, self.high,
                              self.p_value if pvalue is None else pvalue,
                              direction=direction, alpha=alpha, claim=claim, p_label=p_label)


def across_models(table, x, y, *, covariates=("mean_id",), model="model", subject="subject",
                  method="spearman", n_permutations=1999, n_bootstrap=1000, level=0.95,
                  random_state=None):
    """Correlate two scores across models, one point per model, replicated over subjects.

    For each subject, the (partial) rank correlation across models of ``x``
    and ``y`` given ``covariates``; the estimate is their mean over subjects;
    the permutation test and the bootstrap treat *models* as the units (a
    model keeps its rows in every subject). A plain correlation between a
    scale-invariance score and alignment can come from dimension alone (both
    track the mean ID); the partial correlation given mean ID asks whether
    scale invariance says anything beyond it.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per (model, subject) (see :func:`summarise_layers`), with
        columns ``model``, ``x``, ``y``, the covariates and, optionally,
        ``subject`` (absent: one subject). Every subject must have every model.
    x, y : str
    covariates : sequence of str
        Columns partialled out (empty: plain correlation).
    model, subject : str
        Column names.
    method : {"spearman", "pearson"}
    n_permutations, n_bootstrap : int
    level : float
        Coverage of the interval.
    random_state : int, numpy Generator or None

    Returns
    -------
    result : AcrossModels

    Raises
    ------
    KeyError
        If a column is missing.
    ValueError
        For an unknown method, non-finite scores, a model missing in a
        subject, or too few models (covariates + 4).
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}.")
    covariates = tuple(covariates)
    for col in (model, x, y) + covariates:
        if col not in table.columns:
            raise KeyError(f"column {col!r} is not in the table; columns: {list(table.columns)}.")
    t = table.copy()
    if subject not in t.columns:
        t[subject] = "all"
    subjects = list(dict.fromkeys(t[subject]))
    models = list(dict.fromkeys(t[model]))
    cols = [x, y] + list(covariates)
    if t.duplicated([model, subject]).any():
        raise ValueError(f"table has several rows for one (model, subject); summarise layers first "
                         f"(summarise_layers).")
    wide = t.set_index([subject, model])[cols]
    try:
        cube = np.stack([wide.loc[s].loc[models].to_numpy(float) for s in subjects], axis=1)
    except KeyError as err:
        raise ValueError(f"every subject needs every model; missing: {err}.") from None
    # cube: (n_models, n_subjects, 2 + k)
    if not np.isfinite(cube).all():
        bad = [c for i, c in enumerate(cols) if not np.isfinite(cube[..., i]).all()]
        raise ValueError(f"columns {bad} have NaN or infinite values; drop those models first.")
    n, k = len(models), len(covariates)
    if n < k + 4:
        raise ValueError(f"{n} models are too few for a correlation given {k} covariates "
                         f"(need at least {k + 4}).")
    rng = check_random_state(random_state)
    X = cube[..., 0].T  # (n_subjects, n_models)
    Y = cube[..., 1].T
    C = np.moveaxis(cube[..., 2:], 0, 1)  # (n_subjects, n_models, k)
    per = _partial_batch(X, Y, C, method)
    raw = _partial_batch(X, Y, C[..., :0], method)
    # Freedman-Lane: permute the residuals of (ranked) y on the covariates, same order in every subject.
    Yt = stats.rankdata(Y, axis=-1) if method == "spearman" else Y
    Xt = stats.rankdata(X, axis=-1) if method == "spearman" else X
    Ct = stats.rankdata(C, axis=-2) if (method == "spearman" and k) else C
    D = np.concatenate([np.ones(C.shape[:-1] + (1,)), Ct], axis=-1)
    H = np.eye(n) - D @ np.linalg.pinv(D)
    ry = np.einsum("sij,sj->si", H, Yt)  # (n_subjects, n_models)
    perms = np.argsort(rng.random((int(n_permutations), n)), axis=1)
    rows = np.concatenate([np.arange(n)[None], perms])  # row 0: the observed order
    Yperm = ry[:, rows]  # (n_subjects, n_perm + 1, n_models); residuals: ranks stay as computed
    null = _partial_batch(Xt[:, None, :], Yperm, Ct[:, None], "pearson")  # (n_subjects, n_perm + 1)
    pooled = null.mean(axis=0)
    p = float(_stats.permutation_pvalue(pooled[0], pooled[1:], alternative="two-sided"))
    p_sub = np.atleast_1d(_stats.permutation_pvalue(null[:, 0], null[:, 1:].T, alternative="two-sided"))
    estimate = float(np.mean(per))

    def stat(cb):  # cb: (n_resamples, n_models, n_subjects, 2 + k)
        Xb = np.moveaxis(cb[..., 0], -1, -2)
        Yb = np.moveaxis(cb[..., 1], -1, -2)
        Cb = np.moveaxis(cb[..., 2:], -2, -3)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(_partial_batch(Xb, Yb, Cb, method), axis=-1)

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # resamples with too few distinct models
        boot = _stats.bootstrap(stat, cube, n_resamples=int(n_bootstrap), level=level,
                                random_state=rng, vectorized=True)
    sign = np.sign(estimate)
    replicated = int(np.sum((np.sign(per) == sign) & (p_sub <= 0.05)))
    return AcrossModels(x=x, y=y, covariates=covariates, method=method, estimate=estimate,
                        low=float(boot.low), high=float(boot.high), p_value=p,
                        raw=float(np.mean(raw)), per_subject=dict(zip(subjects, map(float, per))),
                        per_subject_p=dict(zip(subjects, map(float, p_sub))), n_models=n,
                        n_subjects=len(subjects), n_replicated=replicated)


def across_models_table(table, xs, ys, *, directions=None, covariates=("mean_id",), alpha=0.05,
                        random_state=0, **kwargs):
    """:func:`across_models` for every (measure, alignment score) pair, BH-corrected, with verdicts.

    Parameters
    ----------
    table : pandas.DataFrame
        As :func:`across_models`.
    xs : sequence of str
        Scale-invariance (or other) measures.
    ys : sequence of str
        Alignment scores (e.g. one per network).
    directions : dict of str to {"greater", "less"} or None
        The claimed sign of each x's relation with alignment ("less" for a
        score where lower means more scale invariant, e.g. id_cv); default
        "greater".
    covariates : sequence of str
    alpha : float
        Level of the verdicts, applied to the Benjamini-Hochberg q-values
        over all len(xs) x len(ys) tests.
    random_state : int, numpy Generator or None
    **kwargs
        Passed to :func:`across_models`.

    Returns
    -------
    results : pandas.DataFrame
        One row per (x, y): ``estimate``, ``low``, ``high``, ``p_value``,
        ``q_value``, ``raw``, ``n_replicated``, ``n_subjects``, ``n_models``,
        ``direction``, ``verdict``; ``results.attrs["tests"]`` holds the
        :class:`AcrossModels` objects.
    """
    import pandas as pd

    directions = dict(directions or {})
    rng = check_random_state(random_state)
    rows, tests = [], {}
    for xc in xs:
        d = directions.get(xc, "greater")
        if d not in ("greater", "less"):
            raise ValueError(f"directions[{xc!r}] must be 'greater' or 'less', got {d!r}.")
        for yc in ys:
            res = across_models(table, xc, yc, covariates=covariates, random_state=rng, **kwargs)
            tests[(xc, yc)] = res
            rows.append(dict(x=xc, y=yc, estimate=res.estimate, low=res.low, high=res.high,
                             p_value=res.p_value, raw=res.raw, n_replicated=res.n_replicated,
                             n_subjects=res.n_subjects, n_models=res.n_models, direction=d))
    out = pd.DataFrame(rows)
    out["q_value"] = _stats.fdr_bh(out["p_value"].to_numpy())
    out["verdict"] = [_stats.verdict(r.estimate, r.low, r.high, r.q_value, direction=r.direction,
                                     alpha=alpha, p_label="q").verdict for r in out.itertuples()]
    out = out.set_index(["x", "y"])
    out.attrs["tests"] = tests
    return out


# ---------------------------------------------------------------------------
# the companion claim (Yu et al. 2026): local vs global dimension

def local_global_dimension(X, ks=None, *, n_local=3, profile=None, estimator="gride",
                           random_state=None, device=None):
    """A representation's *local* intrinsic dimension and a *global* dimension measure.

    Local ID: the mean ID over the ``n_local`` smallest scales of the ID
    profile (neighbourhoods of a few points). Global: the participation ratio
    of the covariance eigenspectrum, ``(sum lambda)^2 / sum lambda^2``, which
    sees only the overall spread. The companion paper of paper A (Yu et al.
    2026) reports that the first predicts brain alignment (lower is better)
    and global measures do not.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    ks : array-like of int of shape (n_scales,) or None
        Scale grid of the profile (ignored when ``profile`` is given).
    n_local : int
        How many of the smallest scales count as local.
    profile : array-like of shape (n_scales,) or None
        A profile already computed on ``X`` (e.g. from :func:`alignment_table`'s
        attrs), ordered by increasing scale.
    estimator : str
    random_state : int or None
    device : {None, "cpu", "cuda"}
        Device of the ID profile (see :func:`scaleinv_utils.dimension.id_profile`).

    Returns
    -------
    dims : dict
        ``local_id``, ``participation_ratio``.

    Raises
    ------
    ValueError
        If n_local is below 1 or above the number of scales.
    """
    from .dimension import id_profile, participation_ratio

    X = check_array(X, "X", min_samples=10)
    if profile is None:
        profile = id_profile(X, ks, estimators=(estimator,), random_state=random_state,
                             device=device).ids[estimator]
    profile = np.asarray(profile, dtype=float)
    if not 1 <= int(n_local) <= profile.size:
        raise ValueError(f"n_local must be between 1 and the {profile.size} scales of the profile, "
                         f"got {n_local}.")
    return {"local_id": float(np.mean(profile[:int(n_local)])),
            "participation_ratio": float(participation_ratio(X))}


# ---------------------------------------------------------------------------
# known-answer controls for the across-model test itself

def dial_family(noise, latent_dims, *, n_samples=300, n_features=24, n_brain_latents=2, n_voxels=40,
                frequency=2.0, brain_noise=0.3, random_state=None):
    """Representations whose scale invariance is a dial, and a toy brain that reads their common cause.

    The stimuli are points ``Z`` of the unit cube in ``max(latent_dims)``
    dimensions. Representation m is a smooth curved embedding (random Fourier
    features) of the first ``latent_dims[m]`` latent coordinates into
    ``n_features`` dimensions plus isotropic noise of relative amplitude
    ``noise[m]``: without noise its ID is the same at every scale (a smooth
    manifold); noise adds dimensions at small scales only, so the ID profile
    becomes less stable as ``noise`` grows (within the moderate range used
    here; very heavy noise is flat again, see the chapter's toy). The latent
    dimension is a second, independent dial that moves the mean ID. The toy
    brain is a smooth readout of the first ``n_brain_latents`` coordinates
    plus noise, so a noisier representation is less aligned with it.

    Parameters
    ----------
    noise : array-like of shape (n_models,)
        Noise amplitude of each representation, relative to its signal's RMS.
    latent_dims : array-like of int of shape (n_models,)
        Latent coordinates each representation embeds (>= n_brain_latents).
    n_samples, n_features, n_brain_latents, n_voxels : int
    frequency : float
        Scale of the random Fourier frequencies (higher: more curved).
    brain_noise : float
        Noise of the toy brain relative to its signal's RMS.
    random_state : int, numpy Generator or None

    Returns
    -------
    representations : list of ndarray of shape (n_samples, n_features)
    brain : ndarray of shape (n_samples, n_voxels)

    Raises
    ------
    ValueError
        If lengths differ, a noise is negative, or a latent dimension is below n_brain_latents.
    """
    noise = check_array(noise, "noise", ndim=1, min_samples=1)
    latent_dims = np.asarray(latent_dims)
    if latent_dims.shape != noise.shape:
        raise ValueError(f"noise and latent_dims must have the same length, got {noise.shape[0]} "
                         f"and {latent_dims.size}.")
    if (noise < 0).any():
        raise ValueError(f"noise must be >= 0, got min {noise.min()}.")
    if (latent_dims < n_brain_latents).any():
        raise ValueError(f"latent_dims must be >= n_brain_latents={n_brain_latents}, got min "
                         f"{latent_dims.min()}.")
    rng = check_random_state(random_state)
    q = int(latent_dims.max())
    Z = rng.random((n_samples, q))

    def embed(d, width):
        W = rng.normal(scale=frequency, size=(d, width))
        b = rng.uniform(0, 2 * np.pi, size=width)
        F = np.cos(Z[:, :d] @ W + b)
        F -= F.mean(axis=0)
        return F / np.sqrt((F ** 2).sum(axis=1).mean())  # unit RMS norm per sample

    brain = embed(n_brain_latents, n_voxels)
    brain = brain + brain_noise * rng.normal(size=brain.shape) / np.sqrt(n_voxels)
    reps = []
    for a, d in zip(noise, latent_dims):
        F = embed(int(d), n_features)
        reps.append(F + a * rng.normal(size=F.shape) / np.sqrt(n_features))
    return reps, brain


def _heldout_ridge_r(X, Y, alpha=1.0, train_fraction=0.7):
    """Median over columns of Y of the held-out Pearson r of a ridge fit from X (toy alignment)."""
    n_train = int(train_fraction * X.shape[0])
    mu, sd = X[:n_train].mean(axis=0), X[:n_train].std(axis=0) + 1e-12
    Xs = (X - mu) / sd
    ym = Y[:n_train].mean(axis=0)
    A = Xs[:n_train]
    W = np.linalg.solve(A.T @ A + alpha * np.eye(A.shape[1]), A.T @ (Y[:n_train] - ym))
    pred = Xs[n_train:] @ W + ym
    return float(np.median(_stats.pearson(pred, Y[n_train:], axis=0)))


def _dial_scores(rep, aligned_rep, brain, ks, n_local, rng):
    """One toy model's scale-invariance measures (of ``rep``) and alignment (of ``aligned_rep``)."""
    from .dimension import dimensional_stability, id_profile
    prof = id_profile(rep, ks, estimators=("gride",), random_state=rng)
    ids = prof.ids["gride"]
    return {"mean_id": float(np.mean(ids)),
            "id_cv": float(dimensional_stability(ids, prof.ks, method="cv")),
            **local_global_dimension(rep, profile=ids, n_local=n_local),
            "alignment": _heldout_ridge_r(aligned_rep, brain)}


#: what :func:`_dial_scores` measures of a toy model besides its alignment
_TOY_MEASURES = ("id_cv", "local_id", "participation_ratio", "mean_id")


def _check_control_kind(kind):
    if kind not in ("positive", "negative"):
        raise ValueError(f"kind must be 'positive' or 'negative', got {kind!r}.")


def _default_toy_scales(n_samples):
    from .neighbors import scale_grid
    return scale_grid(n_samples, n_scales=8, k_min=5, k_max=max(6, n_samples // 8))


def known_answer_control(kind="positive", n_models=12, *, noise_range=(0.0, 0.5), latent_range=(3, 3),
                         covariates=(), n_samples=300, ks=None, n_permutations=999, n_bootstrap=500,
                         x="id_cv", n_local=3, random_state=None, **family_kwargs):
    """Run the across-model pipeline on a family with a known answer.

    Each model's scale-invariance measures (mean ID and ``id_cv`` of its Gride
    profile) are computed from its representation in :func:`dial_family`;
    its alignment is the median held-out r of a ridge fit from it to the toy
    brain's voxels (fit on 70% of the stimuli, scored on the rest). ``"positive"``: the
    alignment is that of the model's own representation, so it depends on the
    noise dial that sets scale invariance; the pipeline must find
    rho(id_cv, alignment) < 0. ``"negative"``: the alignment is that
    of another member of the same family with its own, independently drawn
    dials, so alignment is unrelated to the measured scale invariance; the
    p-value must be uniform over seeds.

    Parameters
    ----------
    kind : {"positive", "negative"}
    n_models : int
    noise_range : (float, float)
        Noise dials are drawn uniformly in this range.
    latent_range : (int, int)
        Latent dimensions are drawn uniformly from these (inclusive).
    covariates : sequence of str
        Passed to :func:`across_models` (e.g. ``("mean_id",)``). In this
        family the noise dial moves stability and mean ID together, so a
        partial correlation given mean ID has (correctly) little left to find:
        the control of the plain test is ``covariates=()``.
    n_samples : int
    ks : array-like of int or None
        Scale grid; default a log grid from 5 to n_samples // 8.
    n_permutations, n_bootstrap : int
    x : {"id_cv", "local_id", "participation_ratio", "mean_id"}
        The measure tested against alignment. The noise dial raises the ID at
        small scales, so the positive control plants a negative relation for
        ``id_cv`` and for ``local_id`` (:func:`local_global_dimension`).
    n_local : int
        Smallest scales that make the local ID.
    random_state : int, numpy Generator or None
    **family_kwargs
        Passed to :func:`dial_family`.

    Returns
    -------
    scores : pandas.DataFrame
        One row per model: ``model``, ``noise``, ``latent_dim``, ``mean_id``,
        ``id_cv``, ``local_id``, ``participation_ratio``, ``alignment``.
    result : AcrossModels
        :func:`across_models` of ``x`` and ``alignment`` (given ``covariates``).

    Raises
    ------
    ValueError
        For an unknown kind or measure, or fewer than 5 models.
    """
    import pandas as pd

    _check_control_kind(kind)
    if int(n_models) < 5:
        raise ValueError(f"n_models must be at least 5 for a partial correlation, got {n_models}.")
    if x not in _TOY_MEASURES:
        raise ValueError(f"x must be one of {_TOY_MEASURES}, got {x!r}.")
    rng = check_random_state(random_state)
    n_models = int(n_models)
    noise = rng.uniform(*noise_range, size=n_models)
    dims = rng.integers(latent_range[0], latent_range[1] + 1, size=n_models)
    n_family = n_models if kind == "positive" else 2 * n_models
    if kind == "negative":  # a second, independent set of dials for the alignment members
        noise = np.concatenate([noise, rng.uniform(*noise_range, size=n_models)])
        dims = np.concatenate([dims, rng.integers(latent_range[0], latent_range[1] + 1, size=n_models)])
    reps, brain = dial_family(noise[:n_family], dims[:n_family], n_samples=n_samples, random_state=rng,
                              **family_kwargs)
    if ks is None:
        ks = _default_toy_scales(n_samples)
    rows = []
    for m in range(n_models):
        other = reps[m] if kind == "positive" else reps[n_models + m]
        rows.append({"model": f"toy-{m:02d}", "noise": float(noise[m]), "latent_dim": int(dims[m]),
                     **_dial_scores(reps[m], other, brain, ks, n_local, rng)})
    scores = pd.DataFrame(rows)
    result = across_models(scores, x, "alignment", covariates=covariates,
                           n_permutations=n_permutations, n_bootstrap=n_bootstrap, random_state=rng)
    return scores, result


def data_ladder_control(kind="positive", sizes=(1000, 2000, 4000, 8000), n_seeds=3, *,
                        noise_range=(0.05, 0.5), seed_jitter=0.03, latent_dim=3, n_samples=300,
                        ks=None, measures=("id_cv", "alignment"), n_permutations=999, n_bootstrap=500,
                        n_local=3, random_state=None, **family_kwargs):
    """Run A4's more-data test on a family whose answer is known.

    A4's "more data" rows correlate a measure with the (log) training-set size
    across a data ladder, seeds as separate models. Here each model of the
    ladder is a member of :func:`dial_family` (one stimulus set and toy brain
    for all). ``"positive"``: training-set size sets the noise dial, from
    ``noise_range[1]`` at the smallest size down to ``noise_range[0]`` at the
    largest (linear in log size, each seed jittered by up to ``seed_jitter``),
    so more data gives a more stable ID profile (lower ``id_cv``) and a
    better alignment: the test must find both. ``"negative"``: each model's
    noise is drawn uniformly from ``noise_range`` whatever its size, so size
    says nothing; the p-values must be uniform over seeds.

    Parameters
    ----------
    kind : {"positive", "negative"}
    sizes : sequence of int
        Training-set sizes of the ladder's rungs (>= 2 distinct, all > 0).
    n_seeds : int
        Models per rung.
    noise_range : (float, float)
    seed_jitter : float
    latent_dim : int
        Latent coordinates every member embeds.
    n_samples : int
    ks : array-like of int or None
        Scale grid; default as in :func:`known_answer_control`.
    measures : sequence of str
        Columns of ``scores`` tested against ``log_pairs``.
    n_permutations, n_bootstrap, n_local : int
    random_state : int, numpy Generator or None
    **family_kwargs
        Passed to :func:`dial_family`.

    Returns
    -------
    scores : pandas.DataFrame
        One row per model: ``model``, ``n_pairs``, ``log_pairs``, ``noise``,
        ``mean_id``, ``id_cv``, ``local_id``, ``participation_ratio``, ``alignment``.
    results : dict of str to AcrossModels
        For each measure, :func:`across_models` of ``log_pairs`` and the
        measure (no covariates, as in the chapter's A4 rows).

    Raises
    ------
    ValueError
        For an unknown kind or measure, fewer than 2 distinct sizes, a size
        <= 0, or fewer than 5 models in all.
    """
    import pandas as pd

    _check_control_kind(kind)
    sizes = np.asarray(sizes, dtype=float)
    if sizes.ndim != 1 or np.unique(sizes).size < 2 or (sizes <= 0).any():
        raise ValueError(f"sizes must be at least 2 distinct positive training-set sizes, got "
                         f"{sizes.tolist()}.")
    n_seeds = int(n_seeds)
    if sizes.size * n_seeds < 5:
        raise ValueError(f"sizes x n_seeds must give at least 5 models, got {sizes.size} x {n_seeds}.")
    known = _TOY_MEASURES + ("alignment",)
    unknown = [m for m in measures if m not in known]
    if unknown:
        raise ValueError(f"measures must be among {known}, got {unknown}.")
    rng = check_random_state(random_state)
    log_sizes = np.repeat(np.log10(sizes), n_seeds)
    lo, hi = noise_range
    if kind == "positive":
        frac = (log_sizes - log_sizes.min()) / (log_sizes.max() - log_sizes.min())
        noise = hi - (hi - lo) * frac + rng.uniform(-seed_jitter, seed_jitter, size=frac.size)
        noise = np.clip(noise, 0.0, None)
    else:
        noise = rng.uniform(lo, hi, size=log_sizes.size)
    reps, brain = dial_family(noise, np.full(noise.size, latent_dim), n_samples=n_samples,
                              random_state=rng, **family_kwargs)
    if ks is None:
        ks = _default_toy_scales(n_samples)
    rows = [{"model": f"toy-{round(10 ** ls)}-s{i % n_seeds}", "n_pairs": round(10 ** ls),
             "log_pairs": float(ls), "noise": float(a), **_dial_scores(rep, rep, brain, ks, n_local, rng)}
            for i, (ls, a, rep) in enumerate(zip(log_sizes, noise, reps))]
    scores = pd.DataFrame(rows)
    results = {m: across_models(scores, "log_pairs", m, covariates=(), n_permutations=n_permutations,
                                n_bootstrap=n_bootstrap, random_state=rng) for m in measures}
    return scores, results


# ---------------------------------------------------------------------------
# real-data mode: models chosen by property

def choose_real_models(names=None):
    """Group the pretrained catalogue by the properties paper A's claims vary.

    Parameters
    ----------
    names : sequence of str or None
        Catalogue names to choose from; default: the "pretrained" and
        "offline-pretrained" catalogue.

    Returns
    -------
    groups : dict of str to list of str
        ``"data_ladder"``: the CLIP rows with one image architecture (ViT-B/32,
        with or without QuickGELU), ordered by pretraining pairs: data size
        with the architecture fixed. ``"no_language"``: image models trained
        without language (ImageNet labels). ``"fused"``: models whose towers
        a cross-attention decoder fuses (CoCa). ``"other_clip"``: the other
        dual-encoder CLIPs (sizes, architectures). ``"image"``: every image
        model, in that order, for the across-model tests. ``"text_only"``:
        models without vision (MiniLM, run on captions), kept out of the image
        models' correlations.
    """
    from .models import list_models, model_info

    if names is None:
        names = list_models("pretrained") + list_models("offline-pretrained")
    infos = [model_info(n) for n in names]
    text_only = [i.name for i in infos if not i.has_vision]
    image = [i for i in infos if i.has_vision]
    ladder = sorted((i for i in image if i.has_language and i.fusion == "dual"
                     and i.architecture.replace("-quickgelu", "") == "ViT-B-32"),
                    key=lambda i: (i.n_pretraining_pairs or 0, i.name))
    no_language = [i.name for i in image if not i.has_language]
    fused = [i.name for i in image if i.fusion == "fused"]
    ladder = [i.name for i in ladder]
    other = [i.name for i in image if i.has_language and i.fusion == "dual" and i.name not in ladder]
    return {"data_ladder": ladder, "no_language": no_language, "fused": fused, "other_clip": other,
            "image": ladder + other + no_language + fused, "text_only": text_only}
