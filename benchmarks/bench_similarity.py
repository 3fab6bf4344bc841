"""Speed of scaleinv_utils.similarity against the field's tools (run by hand).

    .venv/bin/python benchmarks/bench_similarity.py            # everything (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_similarity.py --only rdm  # one part: rdm, profile, cka

Parts
-----
rdm      correlation RDM of 5,000 stimuli x 768 features: rsatoolbox vs similarity.rdm,
         and the largest difference between the two matrices.
profile  mutual-kNN and Jaccard overlap at 20 scales (k = 5 .. N/4) plus RBF-CKA at the
         same scales for N = 10,000 (768 and 512 features) from one neighbour query per
         representation, vs recomputing the neighbours per scale with scikit-learn's
         NearestNeighbors; the profiles must agree.
cka      linear CKA in feature space vs the n x n Gram form, and at an N where the
         Gram matrices would not fit in memory.

Timings are wall-clock seconds of one run after a warm-up of the imports; on a shared
machine, read ratios measured in the same run, not absolute times.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from scaleinv_utils import similarity as sm
from scaleinv_utils.neighbors import scale_grid


def timed(func, *args, **kwargs):
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - t0


def correlated_pair(n, p, q, seed):
    """Two representations of the same n stimuli sharing a 32-d latent."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 32))
    X = z @ rng.normal(size=(32, p)) + 2.0 * rng.normal(size=(n, p))
    Y = np.tanh(z @ rng.normal(size=(32, q))) + 1.0 * rng.normal(size=(n, q))
    return X.astype(np.float32), Y.astype(np.float32)


def bench_rdm(n=5000, p=768):
    import rsatoolbox

    X = np.random.default_rng(0).normal(size=(n, p))
    ref, t_ref = timed(lambda: rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(X),
                                                       method="correlation").get_matrices()[0])
    ours, t_ours = timed(sm.rdm, X, "correlation")
    print(f"[rdm] correlation RDM {n} x {p}: rsatoolbox {t_ref:.2f} s, similarity.rdm "
          f"{t_ours:.2f} s, speed-up {t_ref / t_ours:.1f}x, max |difference| "
          f"{np.max(np.abs(ref - ours)):.1e}")
    _, t_rsa = timed(sm.compare_rdms, ours, ours + 1e-3 * np.abs(np.random.default_rng(1).normal(
        size=ours.shape)))
    print(f"[rdm] Spearman comparison of two {n} x {n} RDMs: {t_rsa:.2f} s")


def _sklearn_profile(X, Y, ks):
    from sklearn.neighbors import NearestNeighbors

    out = np.empty((2, len(ks)))
    for s, k in enumerate(ks):
        # kneighbors() without data excludes each point itself, like nearest_neighbors
        ix = NearestNeighbors(n_neighbors=int(k)).fit(X).kneighbors(return_distance=False)
        iy = NearestNeighbors(n_neighbors=int(k)).fit(Y).kneighbors(return_distance=False)
        shared = np.array([np.intersect1d(a, b, assume_unique=True).size for a, b in zip(ix, iy)])
        out[0, s] = np.mean(shared / k)
        out[1, s] = np.mean(shared / (2 * k - shared))
    return out


def bench_profile(n=10_000, p=768, q=512, n_scales=20, baseline_scales=None):
    X, Y = correlated_pair(n, p, q, 0)
    ks = scale_grid(n, n_scales=n_scales)
    prof, t_ours = timed(sm.similarity_profile, X, Y, ks, random_state=0)
    knn_only, t_knn = timed(sm.similarity_profile, X, Y, ks, measures=("mutual_knn", "jaccard"))
    print(f"[profile] N={n}, {p} and {q} features, {len(ks)} scales k={ks[0]}..{ks[-1]}")
    print(f"[profile] one query per representation: kNN measures {t_knn:.1f} s; "
          f"with RBF-CKA (2,000-stimulus kernels) {t_ours:.1f} s")
    sel = np.arange(len(ks)) if baseline_scales is None else np.unique(
        np.linspace(0, len(ks) - 1, baseline_scales).round().astype(int))
    ref, t_ref = timed(_sklearn_profile, X, Y, ks[sel])
    t_ref_all = t_ref * (len(ks) / len(sel))
    note = "" if len(sel) == len(ks) else f" (measured at {len(sel)} scales, scaled to {len(ks)})"
    print(f"[profile] scikit-learn NearestNeighbors per scale: {t_ref_all:.1f} s{note}; "
          f"speed-up {t_ref_all / t_knn:.1f}x for the kNN measures")
    diff = max(np.max(np.abs(ref[0] - knn_only["mutual_knn"][sel])),
               np.max(np.abs(ref[1] - knn_only["jaccard"][sel])))
    print(f"[profile] max |difference| of the kNN profiles vs scikit-learn: {diff:.1e}")
    _, t10 = timed(_sklearn_profile, X, Y, [10])
    _, t10_ours = timed(sm.mutual_knn_alignment, X, Y, 10)
    print(f"[profile] mutual-kNN at k=10 alone: scikit-learn {t10:.1f} s, similarity "
          f"{t10_ours:.1f} s")
    for m, v in prof.values.items():
        print(f"    {m:10s} " + " ".join(f"{x:.3f}" for x in v))


def bench_cka(n_small=10_000, n_large=200_000, p=768, q=512):
    X, Y = correlated_pair(n_small, p, q, 1)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    ours, t_ours = timed(sm.linear_cka, X, Y)

    def gram_cka():
        K, L = X @ X.T, Y @ Y.T
        return sm.hsic(K, L, False) / np.sqrt(sm.hsic(K, K, False) * sm.hsic(L, L, False))

    ref, t_ref = timed(gram_cka)
    print(f"[cka] linear CKA N={n_small}: feature space {t_ours:.2f} s, n x n Gram form "
          f"{t_ref:.2f} s (two {n_small}^2 float64 matrices, {2 * n_small**2 * 8 / 1e9:.1f} GB), "
          f"|difference| {abs(ours - ref):.1e}")
    _, t_unb = timed(sm.linear_cka, X, Y, unbiased=True)
    print(f"[cka] unbiased linear CKA N={n_small} in feature space: {t_unb:.2f} s")
    Xl, Yl = correlated_pair(n_large, p, q, 2)
    val, t_large = timed(sm.linear_cka, Xl, Yl)
    print(f"[cka] linear CKA N={n_large} in feature space: {t_large:.2f} s (value {val:.3f}); "
          f"the Gram form would need {2 * n_large**2 * 8 / 1e9:.0f} GB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["rdm", "profile", "cka"])
    parser.add_argument("--baseline-scales", type=int, default=None,
                        help="time scikit-learn at this many of the 20 scales and scale up")
    args = parser.parse_args()
    if args.only in (None, "rdm"):
        bench_rdm()
    if args.only in (None, "cka"):
        bench_cka()
    if args.only in (None, "profile"):
        bench_profile(baseline_scales=args.baseline_scales)
