"""Recording the key numbers a chapter reports, so CI notices when they change.

A chapter calls ``record("dimension.gaussian_id", value)`` next to the number it
shows the reader. When the book is built by ``make book``, the environment
variable ``SCALEINV_RECORD`` names a JSON-lines file and every call appends to
it; ``tests/test_chapter_numbers.py`` then compares the recorded values with
``tests/chapter_numbers.json`` within tolerance. Outside a build (a reader's
notebook) the call only returns the value.

The value comes back as a :class:`Recorded` (a float) that a notebook does not echo: a
``record(...)`` call as a cell's last line leaves no stray number under the cell (the
chapter shows the number where its text needs it).
"""
from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["record", "Recorded", "RECORD_ENV"]

RECORD_ENV = "SCALEINV_RECORD"


class Recorded(float):
    """A recorded number: a float that equals the value, and that Jupyter does not display
    when it is a cell's result (as :class:`scaleinv_utils.exercises.CheckResult`)."""

    def _ipython_display_(self):
        pass


def record(key, value):
    """Record one reported number (and return it unchanged).

    Parameters
    ----------
    key : str
        "chapter_topic.what", e.g. "start.median_nc_early_visual".
    value : float or int
        A finite scalar.

    Returns
    -------
    value : Recorded
        The value as a float (equal to the input), not echoed as a notebook cell's result.

    Raises
    ------
    ValueError
        If value is not a finite scalar.
    """
    scalar = np.asarray(value, dtype=float)
    if scalar.ndim != 0 or not np.isfinite(scalar):
        raise ValueError(f"record({key!r}) needs a finite scalar, got {value!r}.")
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"key": key, "value": float(scalar)}) + "\n")
    return Recorded(scalar)
