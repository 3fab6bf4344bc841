"""Which trial showed which image, and which trials a subset keeps.

NSD's trial order comes from ``nsd_expdesign.mat`` (``masterordering``,
``subjectim``, ``sharedix``; 1-based in MATLAB, 0-based here) or from a
subject's behavioural ``responses.tsv``; :func:`select_trials` then keeps
the shared1000 test images and a random draw of training images.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_random_state
from .layout import TRIALS_PER_SESSION

__all__ = ["trials_from_expdesign", "trials_from_responses", "select_trials"]

def trials_from_expdesign(path, subject, trials_per_session=TRIALS_PER_SESSION):
    """Map a subject's trials to 73k image ids with nsd_expdesign.mat.

    Parameters
    ----------
    path : str or Path
    subject : int
    trials_per_session : int

    Returns
    -------
    nsd_id : ndarray of shape (n_trials,)
        0-based 73k id of each trial, in acquisition order.
    session : ndarray of shape (n_trials,)
        1-based session of each trial (750 trials per session).
    shared : ndarray of shape (1000,)
        0-based 73k ids of the shared1000 images.
    """
    from scipy.io import loadmat

    mat = loadmat(path)
    master = np.asarray(mat["masterordering"]).ravel().astype(np.int64) - 1
    subjectim = np.asarray(mat["subjectim"])
    nsd_id = subjectim[subject - 1, master].astype(np.int64) - 1
    session = np.arange(len(master)) // int(trials_per_session) + 1
    shared = np.asarray(mat["sharedix"]).ravel().astype(np.int64) - 1
    return nsd_id, session, shared


def trials_from_responses(path):
    """Map a subject's trials to 73k image ids with its behavioural responses.tsv.

    Returns
    -------
    nsd_id : ndarray of shape (n_trials,)
    session : ndarray of shape (n_trials,)
    """
    import pandas as pd

    df = pd.read_csv(path, sep="\t")
    missing = {"SESSION", "73KID"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}; is it NSD's responses.tsv?")
    return df["73KID"].to_numpy(np.int64) - 1, df["SESSION"].to_numpy(np.int64)


def select_trials(nsd_id, session, shared_ids, sessions, n_train=None, test=True,
                  random_state=None):
    """Choose the trials of a subset: shared test images plus n_train training images.

    Parameters
    ----------
    nsd_id : array-like of shape (n_trials,)
    session : array-like of shape (n_trials,)
    shared_ids : array-like
        73k ids of the shared1000 images.
    sessions : list of int
    n_train : int or None
        Training images to draw (None: all seen in the sessions).
    test : bool
    random_state : int or None

    Returns
    -------
    keep : ndarray of shape (n_trials,), bool
    train_ids : ndarray
    test_ids : ndarray
    """
    rng = check_random_state(random_state)
    nsd_id, session = np.asarray(nsd_id), np.asarray(session)
    in_sess = np.isin(session, sessions)
    is_shared = np.isin(nsd_id, shared_ids)
    test_ids = np.unique(nsd_id[in_sess & is_shared]) if test else np.array([], dtype=np.int64)
    pool = np.unique(nsd_id[in_sess & ~is_shared])
    if n_train is None or n_train >= len(pool):
        train_ids = pool
    else:
        train_ids = np.sort(rng.choice(pool, size=int(n_train), replace=False))
    keep = in_sess & np.isin(nsd_id, np.concatenate([test_ids, train_ids]))
    return keep, train_ids, test_ids
