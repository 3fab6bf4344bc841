"""Checks for the book's exercises.

Each chapter's exercises live in a submodule named after the chapter's topic
(``exercises/dimension.py`` for "dimension.ex1", ...). A submodule registers its
checks with :func:`register`; readers call::

    from scaleinv_utils.exercises import check
    check("dimension.ex1", my_answer, X=X)

A check returns True or False and prints a short verdict: what is right, or
what is off ("expected a value near 2, got 7.3: did you pass distances squared?").
An unanswered stub (``None`` or ``...``) prints a reminder and returns False,
so a chapter with unsolved stubs still executes.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

__all__ = ["check", "register", "CheckResult", "list_exercises"]

_REGISTRY = {}
#: Topics whose submodule registers checks; imported on first use.
TOPICS = ("start", "nsd", "models", "dimension", "similarity", "encoding", "alignment", "neurons")


@dataclass
class CheckResult:
    """Verdict of one check.

    Attributes
    ----------
    correct : bool
    message : str
    """

    correct: bool
    message: str

    def __bool__(self):
        return self.correct

    def _ipython_display_(self):
        # check() has already printed the verdict; showing the return value again is noise.
        pass

    def __repr__(self):
        return ("Correct: " if self.correct else "Not yet: ") + self.message


def register(exercise_id):
    """Decorator registering a check function ``f(answer, **inputs) -> CheckResult``."""
    def wrap(func):
        _REGISTRY[exercise_id] = func
        return func
    return wrap


def _load(topic):
    if topic not in TOPICS:
        raise KeyError(f"Unknown exercise topic {topic!r}; topics are {TOPICS}.")
    try:
        importlib.import_module(f"{__name__}.{topic}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{topic}":
            raise


def list_exercises():
    """Ids of every registered exercise, e.g. ["dimension.ex1", ...]."""
    for topic in TOPICS:
        _load(topic)
    return sorted(_REGISTRY)


def check(exercise_id, answer, verbose=True, **inputs):
    """Check an answer to one exercise.

    Parameters
    ----------
    exercise_id : str
        "topic.exN", e.g. "dimension.ex2".
    answer : object
        The reader's answer (a number, an array, a function, ...).
    verbose : bool
        Print the verdict.
    **inputs
        Data the exercise was computed from, when the check needs it.

    Returns
    -------
    result : CheckResult
        Truthy when correct.

    Raises
    ------
    KeyError
        If the exercise id is unknown.
    """
    topic = exercise_id.split(".", 1)[0]
    _load(topic)
    if exercise_id not in _REGISTRY:
        known = sorted(k for k in _REGISTRY if k.startswith(topic + "."))
        raise KeyError(f"Unknown exercise {exercise_id!r}; known exercises: {known}.")
    pending = answer is None or answer is Ellipsis
    if pending:
        result = CheckResult(False, "no answer yet: replace the `...` in the stub with your code.")
    else:
        try:
            result = _REGISTRY[exercise_id](answer, **inputs)
        except TypeError as exc:
            if "argument" in str(exc):  # the chapter's call lacks an input the check needs
                raise TypeError(f"check({exercise_id!r}, ...) needs other inputs: {exc}") from exc
            result = CheckResult(False, f"the answer has the wrong type for this exercise ({exc}).")
        except (ValueError, IndexError) as exc:
            result = CheckResult(False, f"the answer has the wrong form for this exercise ({exc}).")
    if verbose:
        # marks every text font has (an emoji font may be missing): correct, wrong, not yet tried
        mark = "\u2713" if result.correct else ("\u270e" if pending else "\u2717")
        print(f"{mark} {exercise_id}: {result.message}")
    return result


def close_to(answer, expected, rtol=0.05, atol=0.0, what="value", hint=""):
    """Common check: a number or array close to the expected one."""
    import numpy as np
    try:
        a = np.asarray(answer, dtype=float)
        e = np.asarray(expected, dtype=float)
    except (TypeError, ValueError):
        return CheckResult(False, f"expected a number or array for the {what}, got {type(answer).__name__}.")
    if a.shape != e.shape:
        return CheckResult(False, f"expected the {what} with shape {e.shape}, got shape {a.shape}.")
    if np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=False):
        if e.size < 6:
            return CheckResult(True, f"correct: the {what} = {np.round(e, 3)}.")
        shape = " x ".join(str(n) for n in e.shape)
        return CheckResult(True, f"correct: the {what}, as expected ({shape} values).")
    msg = (f"the {what} is off: expected about {np.round(e, 3)}, got {np.round(a, 3)}."
           if e.size < 6 else f"the {what} differs from the expected array "
           f"(max abs difference {np.max(np.abs(a - e)):.3g}).")
    return CheckResult(False, msg + (" " + hint if hint else ""))
