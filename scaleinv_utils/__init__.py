"""scaleinv_utils: the tested helpers of the book *Scale invariance in AI and brain representations*.

Data flows one way: a subset (:mod:`~scaleinv_utils.data`, the demo world of
:mod:`~scaleinv_utils.demo` or real NSD from :mod:`~scaleinv_utils.nsd`) ->
features of models -> analyses (dimension, similarity, encoding, neurons) ->
figures (:mod:`~scaleinv_utils.plotting`). Submodules are imported on demand,
so ``import scaleinv_utils`` stays fast and never imports torch.
"""
from .config import data_dir, get_device
from .data import load_subset, write_subset, verify_subset, Subset, SubjectData, SubsetError
from .neighbors import nearest_neighbors, scale_grid, NeighborGraph
from .record import record
from .reliability import compute_ncsnr, noise_ceiling, zscore_per_session, average_repeats

__version__ = "0.1.0"

__all__ = [
    "data_dir", "get_device", "load_subset", "write_subset", "verify_subset", "Subset",
    "SubjectData", "SubsetError", "nearest_neighbors", "scale_grid", "NeighborGraph",
    "record", "compute_ncsnr", "noise_ceiling", "zscore_per_session", "average_repeats",
]
