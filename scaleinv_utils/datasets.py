"""Finding subsets by name: ``load_subset`` and the demo world's cache.

:mod:`~scaleinv_utils.data` defines the subset format (it imports nothing of
the demo world); :mod:`~scaleinv_utils.demo` writes the demo world through it.
This module sits above both, so neither imports the other's user:

    data  <-  demo  <-  datasets  (load_subset)
      ^--------------------'
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from .config import data_dir
from .data import SubsetError, read_subset
from .demo import demo_subset_path, make_demo_world

__all__ = ["load_subset", "demo_subset_path", "subsets_dir"]


def subsets_dir(create=True):
    """Where subsets live: ``data_dir("subsets")`` (``$SCALEINV_DATA/subsets``)."""
    return data_dir("subsets", create=create)


def load_subset(name_or_path="demo", *, verify=True, **demo_kwargs):
    """Load a subset: the demo world by name, or any subset directory by path.

    This is the one line a chapter changes to switch data::

        subset = load_subset("demo")                       # synthetic, offline
        subset = load_subset("nsd-subj01-nsdgeneral-train1000")  # real NSD, by name

    Parameters
    ----------
    name_or_path : str or Path
        ``"demo"`` builds (first time, a few seconds) and caches the demo world
        under ``data_dir("subsets")``; any other value is a subset directory or
        the name of one inside ``data_dir("subsets")``.
    verify : bool
        Check the SHA-256 of every file against the manifest (default; sizes
        are always checked). ``verify=False`` skips it. A demo world that fails
        the check is rebuilt (it is synthetic and deterministic).
    **demo_kwargs
        Parameters of :func:`scaleinv_utils.demo.make_demo_world` (seed, sizes).

    Returns
    -------
    subset : Subset

    Raises
    ------
    SubsetError
        If the subset does not exist, is incomplete, corrupt, or of another
        format version.
    """
    if str(name_or_path) == "demo":
        path = demo_subset_path(**demo_kwargs)
        try:
            return read_subset(path, verify=verify)
        except SubsetError as exc:
            warnings.warn(f"the cached demo world failed its check ({exc}); rebuilding it.",
                          stacklevel=2)
            kwargs = dict(demo_kwargs)
            make_demo_world(path, seed=kwargs.pop("seed", 0), overwrite=True, **kwargs)
            return read_subset(path, verify=verify)
    if demo_kwargs:
        raise TypeError(f"Generator parameters {sorted(demo_kwargs)} apply only to 'demo'.")
    path = Path(os.path.expanduser(str(name_or_path)))
    if not path.exists() and not path.is_absolute() and len(path.parts) == 1:
        candidate = subsets_dir(create=False) / path
        if candidate.exists():
            path = candidate
        else:
            available = sorted(p.name for p in subsets_dir().glob("*")
                               if (p / "manifest.json").exists())
            hint = (" A real NSD subset must be built before it is loaded: `scaleinv-data prepare "
                    "...` (the NSD chapter, 'Building a real subset')."
                    if str(name_or_path).startswith("nsd-") else "")
            raise SubsetError(f"Unknown subset {str(name_or_path)!r}: no such directory. "
                              f"Available: {['demo'] + available}.{hint}")
    return read_subset(path, verify=verify)
