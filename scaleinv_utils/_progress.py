"""Progress bars for long loops: tqdm.auto (a widget in Jupyter with ipywidgets, text
elsewhere), imported without the "IProgress not found" warning tqdm gives in a notebook
without ipywidgets, and switched off everywhere by ``SCALEINV_PROGRESS=0`` (the book's build
sets it: book/_ext/scaleinv_book.py), whatever a call's ``progress`` argument says.

Importing this module (``import scaleinv_utils`` does) imports tqdm.auto once with that
warning silenced; libraries the package loads later (huggingface_hub, under open_clip and
transformers) then reuse the imported module and print nothing either.
"""
from __future__ import annotations

import os
import warnings

__all__ = ["tqdm", "PROGRESS_ENV", "progress_enabled"]

PROGRESS_ENV = "SCALEINV_PROGRESS"


def progress_enabled():
    """False when ``$SCALEINV_PROGRESS`` is 0, false, no or off (any case)."""
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _import_auto_tqdm():
    from tqdm.std import TqdmWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)  # IProgress not found (no ipywidgets)
        from tqdm.auto import tqdm as auto_tqdm
    return auto_tqdm


_auto_tqdm = _import_auto_tqdm()


def tqdm(iterable=None, *, disable=False, **kwargs):
    """``tqdm.auto.tqdm(iterable, disable=..., **kwargs)``, also disabled by
    ``$SCALEINV_PROGRESS=0``.

    Parameters
    ----------
    iterable : iterable or None
    disable : bool
        The caller's choice (e.g. ``not progress``).
    **kwargs
        Passed to tqdm (desc, total, unit, ...).
    """
    return _auto_tqdm(iterable, disable=disable or not progress_enabled(), **kwargs)
