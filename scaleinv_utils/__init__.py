"""scaleinv_utils: the tested helpers of the book *Scale invariance in AI and brain representations*.

Data flows one way: a subset (:mod:`~scaleinv_utils.data`, the demo world of
:mod:`~scaleinv_utils.demo` or real NSD from :mod:`~scaleinv_utils.nsd`) ->
features of models -> analyses (dimension, similarity, encoding, neurons) ->
figures (:mod:`~scaleinv_utils.plotting`). Heavy libraries are imported on demand,
so ``import scaleinv_utils`` stays fast (no torch, nilearn or himalaya at import).
"""
from . import _progress  # noqa: F401  (tqdm.auto imported once, without its IProgress warning)
from .config import data_dir, get_device
from .data import write_subset, verify_subset, Subset, SubjectData, SubsetError
from .datasets import load_subset
from .neighbors import nearest_neighbors, scale_grid, NeighborGraph
from .record import record
from .reliability import compute_ncsnr, noise_ceiling, zscore_per_session, average_repeats

# The analysis modules, as attributes (su.dimension.id_profile, su.encoding.encoding_scores, ...).
# None of them imports torch, nilearn or himalaya at import time.
from . import (alignment, data, datasets, demo, dimension, encoding, exercises, features, models,
               neurons, nsd, plotting, reliability, similarity, stats)
from .dimension import id_profile, dimensional_stability
from .similarity import (linear_cka, rbf_cka, rsa, knn_overlap, similarity_profile,
                         cross_scale_similarity, permutation_test, bootstrap_ci, compare_profiles)
from .encoding import encoding_scores, layerwise_encoding, summarise_by_label
from .features import get_features
from .models import list_models, load_model

__version__ = "0.1.0"

__all__ = [
    "data_dir", "get_device", "load_subset", "write_subset", "verify_subset", "Subset",
    "SubjectData", "SubsetError", "nearest_neighbors", "scale_grid", "NeighborGraph",
    "record", "compute_ncsnr", "noise_ceiling", "zscore_per_session", "average_repeats",
]
