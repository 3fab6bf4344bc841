"""Float32-first exact neighbour search against the float64 search it replaced.

Run by hand (not in CI):

    .venv/bin/python benchmarks/bench_gpu_neighbors.py                 # CPU, N = 10,000
    .venv/bin/python benchmarks/bench_gpu_neighbors.py --device cuda   # on a GPU
    .venv/bin/python benchmarks/bench_gpu_neighbors.py --n 5000 --k 128

Data: CLIP-like unit-norm embeddings in D = 768 (200 clusters plus noise) and tight clusters
far from the mean (the float64 repair path). Timed, best of ``--repeat`` runs:

- old: the float64 product with its rounding repair (``neighbors._exact_float64_rows`` over
  every row: what ``nearest_neighbors(exact=True)`` computed before);
- new: ``nearest_neighbors(X, k)`` (float32 ranking, float64 re-measure, certified rows,
  float64 fallback for the rest), with the number of fallback rows.

Both graphs must be identical (indices, and distances to 1e-12). On a CPU the float32 product
is about 2x cheaper than float64; on a T4 float64 runs at 1/32 of float32 speed and on an L4 at
1/64, which is the case this search is for. ``--device fake-cuda`` reports the float64 GEMM
work each search would put on the GPU (counted by tests/tools/fake_cuda.py).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from scaleinv_utils import neighbors as nb


def clip_like(n, D=768, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(200, D))
    X = c[rng.integers(0, 200, n)] + rng.normal(size=(n, D))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def tight(n, D=64, seed=1):
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=1000, size=(50, D))
    return c[rng.integers(0, 50, n)] + 1e-3 * rng.normal(size=(n, D))


def best_of(fn, repeat, sync):
    best, out = np.inf, None
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "fake-cuda"])
    args = ap.parse_args(argv)
    fake = None
    if args.device == "fake-cuda":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tools"))
        import fake_cuda as fake
        fake.install()
    import torch

    dev = "cpu" if args.device == "cpu" else "cuda"
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}")
    for name, X in (("CLIP-like D=768", clip_like(args.n)), ("tight clusters D=64", tight(args.n))):
        k = args.k
        Xc = X - X.mean(axis=0)
        counts = {}

        def old():
            return nb._exact_float64_rows(X, Xc, np.arange(len(X)), k, dev)

        fallback = []
        original = nb._exact_float64_rows

        def counting(X_, Xc_, rows, *a, **kw):
            fallback.append(len(rows))
            return original(X_, Xc_, rows, *a, **kw)

        def new():
            fallback.clear()
            nb._exact_float64_rows = counting
            try:
                return nb.nearest_neighbors(X, k, device=dev)
            finally:
                nb._exact_float64_rows = original

        if fake:
            fake.reset()
        t_old, (i_old, d2_old) = best_of(old, args.repeat, sync)
        if fake:
            counts["old"] = fake.stats()["fp64_gflop"] / args.repeat
            fake.reset()
        t_new, g = best_of(new, args.repeat, sync)
        if fake:
            counts["new"] = fake.stats()["fp64_gflop"] / args.repeat
        same_i = bool(np.array_equal(g.indices, i_old))
        same_d = bool(np.allclose(g.distances, np.sqrt(d2_old), rtol=1e-12, atol=1e-12))
        print(f"{name}: N={args.n} k={k}: old float64 {t_old:.2f} s, new float32-first {t_new:.2f} s "
              f"(ratio old/new {t_old / t_new:.2f}); fallback rows {sum(fallback)}; identical indices "
              f"{same_i}, distances {same_d}"
              + (f"; float64 GEMM on the device: old {counts['old']:.1f} GFLOP, new {counts['new']:.1f} GFLOP"
                 if fake else ""))


if __name__ == "__main__":
    main()
