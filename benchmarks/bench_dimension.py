"""Speed of the intrinsic-dimension profile against DADApy and scikit-dimension.

Run by hand (not in CI):

    .venv/bin/python benchmarks/bench_dimension.py            # N = 2,000 and 10,000
    .venv/bin/python benchmarks/bench_dimension.py --n 2000   # one size

Same data, same run: points on a curved 12-dimensional manifold in D = 768
with a little isotropic noise. Timed, best of ``--repeat`` runs:

- floor: one float32 matrix product X @ X.T (the neighbour search cannot be cheaper);
- neighbours: ``nearest_neighbors(X, 2 * k_max)`` (exact float64 distances);
- profile: ``id_profile`` with Gride, TwoNN, MLE, local PCA (fraction and PR)
  over 20 scales k = 2 .. k_max, given the graph, and the total with the search;
  local PCA both with its default precision target (``lpca_rtol=0.01``: centres
  added until each scale's mean has a 1% standard error, at most 1,000) and
  with exactly 1,000 centres; ``--reference`` adds every point as a centre and
  reports how far both means are from it;
- DADApy: ``Data(X).return_id_scaling_gride(range_max=2 * k_max)`` (distances included);
- scikit-dimension: pointwise ``lPCA`` at one scale k = 50 (N = 2,000 only: ~16 s).

It also checks that our Gride curve agrees with DADApy's on the doubling grid.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import time

import numpy as np

import scaleinv_utils.neighbors as nb
from scaleinv_utils import dimension as dm


def make_data(n, D=768, d=12, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d))
    W1 = rng.normal(size=(d, 64)) / np.sqrt(d)
    W2 = rng.normal(size=(64, D)) / np.sqrt(64)
    return np.tanh(Z @ W1) @ W2 + noise * rng.normal(size=(n, D))


def best_of(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def import_dadapy():
    if importlib.util.find_spec("dadapy") is None:
        return None
    added = "float_" not in np.__dict__
    if added:  # dadapy 0.3.4 reads np.float_ at import; NumPy 2 removed it
        np.float_ = np.float64
    import dadapy
    if added:
        del np.float_
    return dadapy


def run(n, k_max, repeat, lpca_centers, with_reference, skdim_k=50):
    X = make_data(n)
    ks = nb.scale_grid(n, 20, k_min=2, k_max=k_max)
    rows = []
    t_floor, _ = best_of(lambda: X.astype(np.float32) @ X.astype(np.float32).T, repeat)
    rows.append(("floor: float32 X @ X.T", t_floor))
    t_nn, graph = best_of(lambda: nb.nearest_neighbors(X, 2 * k_max), repeat)
    rows.append((f"neighbours: one query, k_max = {2 * k_max} (exact float64)", t_nn))
    t_ratio, prof = best_of(lambda: dm.id_profile(X, ks, ("gride", "twonn", "mle"), graph=graph), repeat)
    rows.append((f"profile Gride + TwoNN + MLE, {len(ks)} scales (graph given)", t_ratio))
    t_lpca, lp = best_of(lambda: dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=graph,
                                               lpca_centers=lpca_centers, random_state=0), repeat)
    used = lp.lpca_centers
    rows.append((f"profile local PCA (fraction + PR), {len(ks)} scales, default lpca_rtol = 0.01: "
                 f"{used.min()}-{used.max()} of at most {min(n, lpca_centers)} centres per scale", t_lpca))
    t_fixed, fixed = best_of(lambda: dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=graph,
                                                   lpca_centers=lpca_centers, lpca_rtol=0,
                                                   random_state=0), repeat)
    rows.append((f"profile local PCA, exactly {min(n, lpca_centers)} centres per scale (lpca_rtol = 0)",
                 t_fixed))
    total = t_nn + t_ratio + t_lpca
    rows.append(("profile total (search + all estimators, defaults)", total))
    rows.append((f"profile total with {min(n, lpca_centers)} centres per scale", t_nn + t_ratio + t_fixed))
    reference = None
    if with_reference:
        t_ref, reference = best_of(lambda: dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=graph,
                                                         lpca_centers=None), 1)
        rows.append((f"profile local PCA on all {n} points (reference)", t_ref))
    t_one, one = best_of(lambda: dm.local_pca(X, skdim_k, graph=graph), 1)
    rows.append((f"local PCA one scale k = {skdim_k}, all {n} points", t_one))

    dadapy = import_dadapy()
    agree = None
    if dadapy is not None:
        t_dada, (ids, errs, _) = best_of(
            lambda: dadapy.Data(X.copy()).return_id_scaling_gride(range_max=2 * k_max), repeat)
        rows.append((f"DADApy return_id_scaling_gride(range_max={2 * k_max})", t_dada))
        ours, _, dks, _ = dm.gride_scaling(X, 2 * k_max, graph=graph)
        agree = float(np.max(np.abs(ours - ids) / ids))
    t_sk = None
    if n <= 2000 and importlib.util.find_spec("skdim") is not None:
        import skdim

        t_sk, sk = best_of(lambda: skdim.id.lPCA(ver="ratio", alphaRatio=0.9).fit_pw(
            X, n_neighbors=skdim_k).dimension_pw_, 1)
        rows.append((f"scikit-dimension lPCA fit_pw, one scale k = {skdim_k}", t_sk))
        assert np.allclose(sk, one.pointwise), "lPCA disagrees with scikit-dimension"
    print(f"\n## N = {n:,}, D = {X.shape[1]}, scales k = {ks[0]}..{ks[-1]} ({len(ks)})\n")
    print("| step | seconds |\n|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.2f} |")
    print()
    print(f"- profile total / neighbour query: {total / t_nn:.2f}; / matmul floor: {total / t_floor:.2f}")
    if dadapy is not None:
        print(f"- DADApy Gride curve / our whole profile: {t_dada / total:.2f}; "
              f"/ our Gride+TwoNN+MLE incl. search: {t_dada / (t_nn + t_ratio):.2f}")
        print(f"- Gride agreement with DADApy on k = {dks.tolist()}: max relative difference {agree:.1e}")
    if reference is not None:
        for name in ("lpca", "lpca_pr"):
            for label, prof_ in (("default", lp), (f"{min(n, lpca_centers)} centres", fixed)):
                err = np.abs(prof_[name] - reference[name])
                # k = 2 has one nonzero eigenvalue: its standard error is rounding, not sampling.
                ok = prof_.stderr[name] > 1e-9 * reference[name]
                z = np.max(err[ok] / prof_.stderr[name][ok]) if ok.any() else 0.0
                print(f"- {name}, {label}: max |mean - all-point mean| = {err.max():.3f} "
                      f"({np.max(err / reference[name]):.2%} relative; {z:.1f} reported standard errors)")
    lpca_per_scale = t_fixed / len(ks)
    print(f"- local PCA centres used per scale (default): {used.tolist()}")
    print(f"- local PCA, {min(n, lpca_centers)} centres: {lpca_per_scale:.3f} s per scale over {len(ks)} scales; one scale k = {skdim_k} "
          f"on all points: {t_one:.3f} s")
    if t_sk is not None:
        print(f"- scikit-dimension lPCA (k = {skdim_k}) / ours (same k, all points): {t_sk / t_one:.0f}x; "
              f"/ ours per scale of the 20-scale profile: {t_sk / lpca_per_scale:.0f}x")
    print(f"- ID at k = {ks[0]}, {ks[len(ks) // 2]}, {ks[-1]}: " + "; ".join(
        f"{name} {prof.ids.get(name, lp.ids.get(name))[[0, len(ks) // 2, -1]].round(1).tolist()}"
        for name in ("gride", "twonn", "mle", "lpca", "lpca_pr")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="*", default=[2000, 10000])
    parser.add_argument("--k-max", type=int, default=256, help="largest scale (Gride uses 2 k_max)")
    parser.add_argument("--lpca-centers", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--reference", action="store_true",
                        help="also run local PCA on every point and report the sampling error")
    args = parser.parse_args()
    import torch  # the neighbour search's selection; imported untimed, like DADApy

    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    for n in args.n:
        run(n, args.k_max, args.repeat, args.lpca_centers, args.reference)


if __name__ == "__main__":
    main()
