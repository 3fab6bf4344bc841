"""Overhead of scaleinv_utils.encoding.fit_encoding over calling himalaya directly.

Both fit ridge regression with one alpha per voxel chosen by K-fold CV over the
same grid, on the same standardised features and centred responses. The
wrapper adds validation, standardisation, NaN-voxel handling and restoring
himalaya's backend; this measures what that costs.

Run by hand, e.g.::

    .venv/bin/python benchmarks/bench_encoding.py --n-samples 9000 --n-features 512 \
        --n-voxels 15000 --n-alphas 15 --cv 5 --backend numpy

Results: benchmarks/results_encoding.md.
"""
import argparse
import json
import platform
import time

import numpy as np


def make_data(n_samples, n_features, n_voxels, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32).astype(dtype)
    W = rng.standard_normal((n_features, n_voxels), dtype=np.float32).astype(dtype)
    W /= np.sqrt(n_features)
    noise = rng.standard_normal((n_samples, n_voxels), dtype=np.float32).astype(dtype)
    Y = X @ W * np.linspace(0.05, 2, n_voxels, dtype=dtype) + noise
    return X, Y


def direct(X, Y, alphas, cv, backend):
    """himalaya as a user would call it, on data already z-scored / centred."""
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV

    set_backend(backend)
    Xs = (X - X.mean(0)) / X.std(0)
    Yc = Y - Y.mean(0)
    model = RidgeCV(alphas=alphas, cv=cv).fit(Xs, Yc)
    model.best_alphas_.sum() if backend == "numpy" else float(model.best_alphas_.sum())
    set_backend("numpy")
    return model


def wrapper(X, Y, alphas, cv, backend):
    from scaleinv_utils.encoding import fit_encoding

    return fit_encoding(X, Y, alphas=alphas, cv=cv, backend=backend)


def overhead_only(X, Y, alphas):
    """Time the wrapper's own steps (validation, NaN-voxel mask, standardisation, snapping).

    These are the only work fit_encoding does besides himalaya's RidgeCV; timing
    them alone is insensitive to machine load, unlike two long end-to-end runs.
    """
    from scaleinv_utils.encoding import _prepare

    t0 = time.perf_counter()
    _prepare(X, Y, standardize=True, fit_intercept=True)
    best = np.random.default_rng(0).choice(alphas, Y.shape[1])
    alphas[np.abs(np.log(best)[:, None] - np.log(alphas)[None, :]).argmin(axis=1)]
    t_wrapper = time.perf_counter() - t0
    t0 = time.perf_counter()
    Xs = (X - X.mean(0)) / X.std(0)
    Yc = Y - Y.mean(0)
    t_user = time.perf_counter() - t0
    del Xs, Yc
    return t_wrapper, t_user


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-samples", type=int, default=9000)
    p.add_argument("--n-features", type=int, default=512)
    p.add_argument("--n-voxels", type=int, default=15000)
    p.add_argument("--n-alphas", type=int, default=15)
    p.add_argument("--cv", type=int, default=5)
    p.add_argument("--backend", default="numpy")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--wrapper-first", action="store_true",
                   help="run the wrapper before himalaya in each repeat (to expose order effects)")
    p.add_argument("--overhead-only", action="store_true",
                   help="time only the wrapper's own preprocessing, not the ridge fits")
    args = p.parse_args()

    X, Y = make_data(args.n_samples, args.n_features, args.n_voxels, args.dtype)
    alphas = np.logspace(-1, 6, args.n_alphas)
    if args.overhead_only:
        t_w, t_u = overhead_only(X, Y, alphas)
        print(json.dumps({**vars(args), "wrapper_preprocessing_s": t_w,
                          "user_centering_in_direct_call_s": t_u}, indent=1))
        return
    times = {"himalaya": [], "wrapper": []}
    # alternate the two so that drifts in machine load hit both alike
    for _ in range(args.repeats):
        pair = (("himalaya", direct), ("wrapper", wrapper))
        for name, fn in (pair[::-1] if args.wrapper_first else pair):
            t0 = time.perf_counter()
            fn(X, Y, alphas, args.cv, args.backend)
            times[name].append(time.perf_counter() - t0)
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)
    best = {k: min(v) for k, v in times.items()}
    out = {**vars(args), "times_s": times, "ratio_wrapper_over_himalaya":
           best["wrapper"] / best["himalaya"], "machine": platform.processor() or platform.machine()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
