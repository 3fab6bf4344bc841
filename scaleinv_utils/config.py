"""Where data lives and which device computes: the package's only two settings.

Both are read from the environment at call time (never cached at import), so a
chapter or a test can change them without reloading the package.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "get_device", "DATA_DIR_ENV"]

#: Environment variable that moves the data cache (datasets, features, models).
DATA_DIR_ENV = "SCALEINV_DATA"


def data_dir(*parts, create=True):
    """Return the data directory, or a path inside it.

    The directory is ``$SCALEINV_DATA`` when set, else ``~/.cache/scaleinv``.
    Demo subsets, downloaded NSD files, prepared subsets, model weights and
    cached features all live below it.

    Parameters
    ----------
    *parts : str
        Sub-path components, e.g. ``data_dir("subsets", "demo")``.
    create : bool
        Create the directory if it does not exist.

    Returns
    -------
    path : pathlib.Path
    """
    value = os.environ.get(DATA_DIR_ENV)
    # "~" and relative paths would otherwise mean a different place in every working directory.
    root = (Path(os.path.expandvars(value)).expanduser().resolve() if value
            else Path.home() / ".cache" / "scaleinv")
    path = root.joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def get_device(prefer="cuda"):
    """Pick the compute device: ``"cuda"`` when a GPU is visible, else ``"cpu"``.

    Parameters
    ----------
    prefer : {"cuda", "cpu"}
        Ask for the CPU explicitly with ``"cpu"``.

    Returns
    -------
    device : str
    """
    if prefer == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
