#!/usr/bin/env python
"""Exercise every GPU path of scaleinv_utils end to end, in under 10 minutes on one GPU.

    python gpu_check.py                      # on a machine with a GPU (Colab T4/L4/A100)
    python gpu_check.py --pretrained         # + memory/speed of ViT-L/14, ViT-H/14, CoCa-L/14
                                             #   (random weights: no download; --download for real ones)
    python gpu_check.py --device cpu         # dry run on the CPU (smaller sizes)
    python gpu_check.py --device fake-cuda   # dry run through the mock CUDA device of
                                             #   tests/tools/fake_cuda.py: every "cuda" tensor is a
                                             #   marked CPU tensor, device mixing raises as on CUDA
    python gpu_check.py --device fake-cuda --quick   # the CI dry run (tiny sizes, < 1 minute)

Each check compares the device's result with a CPU reference and reports time and peak GPU
memory. Ends with a table (PASS / WARN / FAIL) and writes a JSON report (--out). Exit code 1 if
any check FAILs. Install first (Colab):
    pip install "scaleinv_utils[offline-models] @ git+https://github.com/scaleinv/scaleinv"
then, in a checkout of the repository, ``python benchmarks/gpu_check.py``. tests/test_gpu_check.py
runs ``--device fake-cuda --quick`` in CI.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOOLS = HERE.parent / "tests" / "tools"   # fake_cuda.py
RESULTS = []
QUICK = False


def log(msg):
    print(msg, flush=True)


def record(name, status, detail="", **data):
    RESULTS.append({"check": name, "status": status, "detail": detail, **data})
    log(f"  [{status}] {name}: {detail}")


class Timer:
    def __init__(self, torch, device):
        self.torch, self.device = torch, device

    def __enter__(self):
        self.sync()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.sync()
        self.s = time.perf_counter() - self.t
        return False

    def sync(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()


def peak_reset(torch, device):
    if device != "cpu":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(torch, device):
    return torch.cuda.max_memory_allocated() / 2 ** 30 if device != "cpu" else float("nan")


def run(name, fn):
    log(f"\n== {name}")
    t = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # one failing area must not hide the others
        traceback.print_exc()
        record(name, "FAIL", f"{type(exc).__name__}: {str(exc)[:300]}")
    log(f"   ({time.perf_counter() - t:.1f} s)")


# ----------------------------------------------------------------------------- checks
def check_environment(args, torch):
    import importlib.metadata as md

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda_build": torch.version.cuda, "device": args.device}
    for dist in ("scaleinv_utils", "torchvision", "open_clip_torch", "transformers", "himalaya",
                 "numpy", "pandas", "nilearn", "scikit-learn", "sentence-transformers", "timm"):
        try:
            info[dist] = md.version(dist)
        except md.PackageNotFoundError:
            info[dist] = None
    if args.device != "cpu":
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_mem_gib=round(p.total_memory / 2 ** 30, 1),
                    capability=f"{p.major}.{p.minor}",
                    allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    allow_tf32_cudnn=torch.backends.cudnn.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark,
                    deterministic=torch.are_deterministic_algorithms_enabled(),
                    float32_matmul_precision=torch.get_float32_matmul_precision(),
                    cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    import scaleinv_utils as su
    info["get_device"] = su.get_device()
    from scaleinv_utils.encoding import resolve_backend
    info["himalaya_backend"] = resolve_backend()
    for k, v in info.items():
        log(f"  {k:26s} {v}")
    expect = "cpu" if args.device == "cpu" else "cuda"
    ok = info["get_device"] == expect or args.device == "cpu"
    record("environment", "PASS" if ok else "FAIL",
           f"get_device()={info['get_device']}, himalaya={info['himalaya_backend']}", info=info)


def check_neighbors(args, torch, dev):
    from scaleinv_utils import neighbors as nb
    from scaleinv_utils.neighbors import nearest_neighbors

    rng = np.random.default_rng(0)
    if QUICK:
        cases = {"gaussian": rng.normal(size=(300, 16)),
                 "tight clusters (repair path)": np.repeat(rng.normal(size=(5, 8)) * 1e4, 30, axis=0)
                 + 1e-6 * rng.normal(size=(150, 8))}
        for name, X in cases.items():
            ref, got = nearest_neighbors(X, 10, device="cpu"), nearest_neighbors(X, 10, device=dev)
            same = np.array_equal(ref.indices, got.indices) and np.allclose(ref.distances, got.distances,
                                                                            rtol=1e-12, atol=1e-12)
            record(f"neighbors exact [{name}]", "PASS" if same else "FAIL", f"identical to the CPU: {same}")
        return
    cases = {
        "gaussian": rng.normal(size=(3000, 64)),
        "tight clusters (repair path)": np.repeat(rng.normal(size=(10, 16)) * 1e4, 60, axis=0)
        + 1e-6 * rng.normal(size=(600, 16)),
        "duplicates": np.vstack([rng.normal(size=(500, 8))] * 2),
    }
    for name, X in cases.items():
        k = 20
        ref = nearest_neighbors(X, k, device="cpu")
        got = nearest_neighbors(X, k, device=dev)
        same_d = np.allclose(got.distances, ref.distances, rtol=1e-10, atol=1e-12)
        same_i = float(np.mean(got.indices == ref.indices))
        status = "PASS" if same_d and same_i == 1.0 else "FAIL"
        record(f"neighbors exact [{name}]", status,
               f"distances equal to CPU: {same_d}; identical indices {same_i:.4f} (ties by index)")
        ref32 = nearest_neighbors(X, k, device="cpu", exact=False)
        got32 = nearest_neighbors(X, k, device=dev, exact=False)
        overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(got32.indices, ref32.indices)])
        record(f"neighbors float32 [{name}]", "PASS" if overlap > 0.99 or name != "gaussian" else "WARN",
               f"set overlap with CPU float32 {overlap:.4f}")
    # speed: float64 (exact=True) vs float32 at the book's sizes
    real = args.device == "cuda"          # dry runs (cpu, fake-cuda) use small sizes
    sizes = [(10_000, 768)] if real else [(3000, 768)]
    if args.full and real:
        sizes.append((30_000, 768))
    for n, d in sizes:
        c = rng.normal(size=(200, d))
        X = c[rng.integers(0, 200, n)] + rng.normal(size=(n, d))
        X /= np.linalg.norm(X, axis=1, keepdims=True)  # CLIP-like unit-norm embeddings
        k = 512 if n >= 10_000 else 128                # id_profile's default needs 2 * 256
        timings = {}
        Xc = X - X.mean(axis=0)
        with Timer(torch, dev) as t:
            i_old, d2_old = nb._exact_float64_rows(X, Xc, np.arange(n), k, dev)
        timings["old_fp64"] = t.s
        with Timer(torch, dev) as t:
            g64 = nearest_neighbors(X, k, device=dev)
        timings["exact_fp32_first"] = t.s
        with Timer(torch, dev) as t:
            g32 = nearest_neighbors(X, k, device=dev, exact=False)
        timings["fp32"] = t.s
        same = bool(np.array_equal(g64.indices, i_old)) and bool(np.allclose(g64.distances, np.sqrt(d2_old), rtol=1e-12))
        agree32 = float(np.mean(g32.indices[:, :k // 2] == g64.indices[:, :k // 2]))
        detail = (f"N={n} D={d} k={k}: old float64 {timings['old_fp64']:.2f} s, exact float32-first "
                  f"{timings['exact_fp32_first']:.2f} s (same graph: {same}), float32 only {timings['fp32']:.2f} s "
                  f"(rank agreement {agree32:.4f})")
        slow = real and timings["exact_fp32_first"] > 5 * timings["fp32"]
        record(f"neighbors speed N={n}", "FAIL" if not same else ("WARN" if slow else "PASS"), detail,
               timings=timings)


def check_dimension(args, torch, dev):
    from scaleinv_utils import dimension as dm

    rng = np.random.default_rng(1)
    n = 300 if QUICK else 2500
    X = np.sin(rng.uniform(size=(n, 4)) @ rng.normal(size=(4, 40))) + 0.01 * rng.normal(size=(n, 40))
    ks = [5, 10, 20, 40]
    a = dm.id_profile(X, ks, random_state=0, device="cpu")
    b = dm.id_profile(X, ks, random_state=0, device=dev)
    diff = max(float(np.max(np.abs(a[e] - b[e]))) for e in a.estimators)
    record("id_profile device vs CPU", "PASS" if diff < 1e-8 else "FAIL",
           f"max |difference| over estimators and scales {diff:.2e} (local PCA: Gram matrices on the "
           f"device, eigenvalues on the CPU)")
    for fn in (dm.gride, dm.twonn, dm.mle):
        v_cpu, v_dev = fn(X, 5, device="cpu").dimension, fn(X, 5, device=dev).dimension
        record(f"{fn.__name__} device vs CPU", "PASS" if abs(v_cpu - v_dev) < 1e-8 else "FAIL",
               f"{v_dev:.6f} vs {v_cpu:.6f}")


def check_similarity(args, torch, dev):
    from scaleinv_utils import similarity as sim

    rng = np.random.default_rng(3)
    n = 300 if QUICK else 3000
    Z = rng.normal(size=(n, 6))
    X = Z @ rng.normal(size=(6, 64)) + 0.5 * rng.normal(size=(n, 64))
    q = 50 if QUICK else 5000   # a voxel side: linear CKA's Y^T Y is the GPU's case
    Y = Z @ rng.normal(size=(6, q)) + 0.5 * rng.normal(size=(n, q))
    ks = [5, 10, 20, 40]
    with Timer(torch, "cpu") as t_cpu:
        ref = sim.knn_overlap(X, Y, ks)
    with Timer(torch, dev) as t_dev:
        got = sim.knn_overlap(X, Y, ks, device=dev)
    same = bool(np.allclose(got, ref, rtol=1e-12))
    record("knn_overlap device vs CPU", "PASS" if same else "FAIL",
           f"equal: {same}; {t_dev.s:.2f} s vs CPU {t_cpu.s:.2f} s")
    for unbiased in (False, True):
        with Timer(torch, "cpu") as t_cpu:
            ref = sim.linear_cka(X, Y, unbiased=unbiased)
        with Timer(torch, dev) as t_dev:
            got = sim.linear_cka(X, Y, unbiased=unbiased, device=dev)
        ok = abs(got - ref) <= 1e-10 * abs(ref)
        record(f"linear_cka{' unbiased' if unbiased else ''} device vs CPU", "PASS" if ok else "FAIL",
               f"{got:.12f} vs {ref:.12f}; {t_dev.s:.2f} s vs CPU {t_cpu.s:.2f} s")
    a = sim.cross_scale_similarity(X, [5, 20], n_anchors=min(n, 500), n_null=1, random_state=0)
    b = sim.cross_scale_similarity(X, [5, 20], n_anchors=min(n, 500), n_null=1, random_state=0, device=dev)
    ok = abs(a.score - b.score) < 1e-12 and np.allclose(a.null_scores, b.null_scores, rtol=1e-12)
    record("cross_scale_similarity device vs CPU", "PASS" if ok else "FAIL",
           f"score {b.score:.6f} vs {a.score:.6f}, null {b.null_scores} vs {a.null_scores}")


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = np.linalg.norm((a - b).reshape(len(a), -1), axis=1)
    den = np.linalg.norm(b.reshape(len(b), -1), axis=1) + 1e-30
    return float(np.median(num / den)), float(np.max(num / den))


def check_features(args, torch, dev):
    import scaleinv_utils as su
    from scaleinv_utils import features as F, models as M

    if QUICK:  # no demo world to build: random images and a few captions
        subset = None
        imgs = np.random.default_rng(0).integers(0, 255, size=(8, 64, 64, 3)).astype(np.uint8)
        caps = ["a red ball on a table", "two dogs", "a blue box", "a green star"] * 2
    else:
        subset = su.load_subset("demo")
        st = subset.stimuli
        n = 256 if dev != "cpu" else 128
        imgs, caps = st.images[:n], [c[0] for c in st.captions[:n]]
    for name in (["demo-random"] if QUICK else ["demo-clip-full-data", "demo-vision-only", "demo-random", "minilm"]):
        m_cpu, m_dev = M.load_model(name, device="cpu"), M.load_model(name, device=dev)
        for modality in m_cpu.info.modalities:
            stim = imgs if modality == "image" else caps
            for heads in (False, True):
                kw = dict(modality=modality, layers="all", heads=heads, cache=False, progress=False)
                ref = F.get_features(m_cpu, stim, **kw)
                got = F.get_features(m_dev, stim, **kw)
                worst, finite, dtypes = 0.0, True, set()
                for layer in ref:
                    worst = max(worst, _rel(got[layer], ref[layer])[1])
                    finite &= bool(np.all(np.isfinite(got[layer])))
                    dtypes.add(str(got[layer].dtype))
                tol = 2e-2 if dev != "cpu" else 1e-6   # fp16 autocast on the GPU
                status = "PASS" if finite and worst < tol and dtypes == {"float32"} else "FAIL"
                record(f"features {name} {modality}{' heads' if heads else ''}", status,
                       f"max relative difference to CPU fp32 over layers {worst:.1e}; finite {finite}; {dtypes}")
        if name.startswith("demo-clip") and subset is not None:
            q_cpu, q_dev = M.demo_quality(m_cpu, subset), M.demo_quality(m_dev, subset)
            diffs = {k: abs(q_cpu[k] - q_dev[k]) for k in q_cpu if isinstance(q_cpu[k], float)}
            record(f"demo_quality {name} (fp32 on device)", "PASS" if max(diffs.values()) <= 0.011 else "WARN",
                   f"largest difference to CPU {max(diffs.values()):.3f} (the book records top5 and colour accuracy)")
        del m_dev
        gc.collect()
    if QUICK:
        return
    # the same model twice on the device: bitwise reproducible?
    m = M.load_model("demo-clip-full-data", device=dev)
    a = F.get_features(m, imgs, layers="all", cache=False, progress=False)
    b = F.get_features(m, imgs, layers="all", cache=False, progress=False)
    same = all(np.array_equal(a[k], b[k]) for k in a)
    record("features run-to-run on device", "PASS" if same else "WARN", f"bitwise identical: {same}")
    # an architecture of each family, random weights (offline): runs, finite, all layers + heads
    fake = np.random.default_rng(0).integers(0, 255, size=(8, 300, 240, 3)).astype(np.uint8)
    for name in ["imagenet-resnet50", "imagenet-vit-b-32", "clip-rn50-openai", "clip-vit-b-32-laion2b",
                 "coca-vit-b-32-laion2b", "clip-convnext-base-w-laion2b"]:
        mm = M.load_model(name, device=dev, random_init=True)
        layers = F.get_features(mm, fake, layers="all", cache=False, progress=False, batch_size=4)
        finite = all(np.all(np.isfinite(v)) for v in layers.values())
        detail = f"{len(layers)} image layers finite: {finite}"
        if F._tower(mm, "image").kind == "tokens":
            hd = F.get_features(mm, fake, layers="all", heads=True, cache=False, progress=False, batch_size=4)
            detail += f"; heads {next(iter(hd.values())).shape}"
        if "text" in mm.info.modalities:
            tx = F.get_features(mm, ["a red ball on a table", "two dogs"], modality="text", layers="all",
                                heads=True, cache=False, progress=False)
            detail += f"; text heads {len(tx)} blocks"
        record(f"features {name} (random weights)", "PASS" if finite else "FAIL", detail)
        del mm
        gc.collect()


def check_big_models(args, torch, dev):
    """Peak memory and throughput of the big towers per batch size (layers='all', then heads)."""
    from scaleinv_utils import features as F, models as M

    names = ["clip-vit-l-14-laion2b", "clip-vit-h-14-laion2b", "coca-vit-l-14-laion2b"]
    sizes = [32, 64, 128, 256] if args.device == "cuda" else [2]
    for name in names:
        t0 = time.perf_counter()
        model = M.load_model(name, device=dev, random_init=not args.download)
        log(f"  {name}: loaded in {time.perf_counter() - t0:.0f} s "
            f"({model.n_parameters() / 1e6:.0f} M parameters, fp32)")
        rows = []
        for bs in sizes:
            imgs = np.random.default_rng(bs).integers(0, 255, size=(2 * bs, 425, 425, 3)).astype(np.uint8)
            for heads in (False, True):
                peak_reset(torch, dev)
                try:
                    with Timer(torch, dev) as t:
                        out = F.get_features(model, imgs, layers="all", heads=heads, cache=False,
                                             progress=False, batch_size=bs)
                except torch.cuda.OutOfMemoryError:
                    rows.append((bs, heads, "OOM", None, None))
                    peak_reset(torch, dev)
                    continue
                finite = all(np.all(np.isfinite(v)) for v in out.values())
                rows.append((bs, heads, peak_gib(torch, dev), 2 * bs / t.s, finite))
                del out
        ok = [r for r in rows if r[2] != "OOM"]
        table = "; ".join(f"bs {bs}{' heads' if h else ''}: "
                          + ("OOM" if p == "OOM" else f"{p:.1f} GiB, {ips:.0f} img/s, finite {fin}")
                          for bs, h, p, ips, fin in rows)
        status = "PASS" if ok and all(r[4] for r in ok) else ("WARN" if ok else "FAIL")
        record(f"big model {name}", status, table, rows=[list(map(str, r)) for r in rows])
        del model
        peak_reset(torch, dev)


def check_encoding(args, torch, dev):
    from scaleinv_utils import encoding as enc

    rng = np.random.default_rng(2)
    backend = "torch_cuda" if dev != "cpu" else "numpy"

    def ridge_peak_bytes(n, p, t, tb=None, n_alphas=17):
        return enc.ridge_peak_bytes(n, p, t, n_alphas=n_alphas, n_targets_batch=tb)
    # correctness against the CPU (numpy) backend
    n, p, t = (300, 16, 50) if QUICK else (3000, 128, 500)
    X = rng.normal(size=(n, p)).astype(np.float32)
    Y = (X[:, :16] @ rng.normal(size=(16, t)) * rng.uniform(0.05, 1, t)
         + rng.normal(size=(n, t))).astype(np.float32)
    tr, te = np.arange(n) < int(0.8 * n), np.arange(n) >= int(0.8 * n)
    m_cpu = enc.fit_encoding(X[tr], Y[tr], backend="numpy", random_state=0)
    m_dev = enc.fit_encoding(X[tr], Y[tr], backend=backend, random_state=0)
    r_cpu = enc.score_encoding(m_cpu, X[te], Y[te]).r2
    r_dev = enc.score_encoding(m_dev, X[te], Y[te]).r2
    same_alpha = float(np.mean(m_cpu.best_alphas == m_dev.best_alphas))
    dr2 = float(np.max(np.abs(r_cpu - r_dev)))
    record("fit_encoding device vs numpy", "PASS" if dr2 < 1e-3 and same_alpha > 0.97 else "WARN",
           f"same alpha for {same_alpha:.3f} of voxels; max |R^2 difference| {dr2:.1e}")
    if QUICK:
        return
    mk = enc.fit_encoding(X[:200], Y[:200], backend=backend, solver="kernel")
    mp = enc.fit_encoding(X[:200], Y[:200], backend=backend, solver="primal")
    record("fit_encoding kernel vs primal", "PASS" if np.allclose(mk.coef, mp.coef, atol=1e-3) else "WARN",
           f"max |coef difference| {np.max(np.abs(mk.coef - mp.coef)):.1e}")
    # NSD size: 9,000 x 512 -> 15,000 voxels, 17 alphas, 5 folds (README's benchmark); a dry run
    # uses a small problem and the formula (checked against the fake device's byte count)
    n, p, t = (9000, 512, 15000) if args.device == "cuda" else (3000, 256, 1000)
    log(f"  predicted peak (himalaya RidgeCV, float32) for 9000x512->15000, 17 alphas: "
        f"{ridge_peak_bytes(9000, 512, 15000) / 2**30:.1f} GiB; with n_targets_batch=4000: "
        f"{ridge_peak_bytes(9000, 512, 15000, tb=4000) / 2**30:.1f} GiB; 30,000 voxels: "
        f"{ridge_peak_bytes(9000, 512, 30000) / 2**30:.1f} GiB")
    X = rng.normal(size=(n, p)).astype(np.float32)
    Y = (X[:, :32] @ rng.normal(size=(32, t)) * 0.1 + rng.normal(size=(n, t))).astype(np.float32)
    for tb in (None, 4000, "auto"):
        peak_reset(torch, dev)
        try:
            with Timer(torch, dev) as tm:
                enc.fit_encoding(X, Y, backend=backend, n_targets_batch=tb)
            tb = None if tb == "auto" else tb
            gib = peak_gib(torch, dev)
            pred = ridge_peak_bytes(n, p, t, tb=tb) / 2 ** 30
            record(f"fit_encoding {n}x{p}->{t}, n_targets_batch={tb}", "PASS",
                   f"{tm.s:.1f} s, peak {gib:.2f} GiB (predicted {pred:.2f} GiB; a T4 has ~14.7 GiB)",
                   seconds=tm.s, peak_gib=gib, predicted_gib=pred)
        except Exception as exc:
            oom = "out of memory" in str(exc).lower()
            record(f"fit_encoding {n}x{p}->{t}, n_targets_batch={tb}", "FAIL" if not oom else "WARN",
                   f"{type(exc).__name__}: {str(exc)[:200]}")
        peak_reset(torch, dev)
    # banded ridge: float64 input stays float64 on the GPU (no cast, unlike fit_encoding)
    half = X.shape[1] // 2
    Xs = [X[:3000, :half], X[:3000, half:]]
    for dtype in (np.float32, np.float64):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with Timer(torch, dev) as tm:
                enc.fit_banded_encoding([x.astype(dtype) for x in Xs], Y[:3000, :min(1000, t)].astype(dtype),
                                        n_iter=5, backend=backend, random_state=0)
        msgs = {str(x.message)[:60] for x in w}
        record(f"fit_banded_encoding {np.dtype(dtype).name}", "PASS", f"{tm.s:.1f} s; warnings {msgs or '-'}")


def check_chapters(args, torch, dev):
    """Optional: execute the chapters (needs a checkout, jupytext and nbclient) and compare the
    recorded numbers with tests/chapter_numbers.json."""
    import jupytext
    from nbclient import NotebookClient

    repo = Path(args.repo)
    expected = json.loads((repo / "tests" / "chapter_numbers.json").read_text())
    rec = Path(args.workdir) / "chapter_numbers.jsonl"
    rec.unlink(missing_ok=True)
    os.environ["SCALEINV_RECORD"] = str(rec)
    for md in sorted((repo / "notebooks" / "text").glob("*.md")):
        t = time.perf_counter()
        nb = jupytext.read(md)
        if args.device == "fake-cuda":
            import nbformat
            nb.cells.insert(0, nbformat.v4.new_code_cell(
                f"import sys; sys.path[:0] = [{str(TOOLS)!r}]; import fake_cuda; fake_cuda.install()"))
        NotebookClient(nb, timeout=1200, kernel_name="python3",
                       resources={"metadata": {"path": str(args.workdir)}}).execute()
        log(f"  executed {md.name} in {time.perf_counter() - t:.0f} s")
    got = {}
    for line in rec.read_text().splitlines():
        item = json.loads(line)
        got[item["key"]] = item["value"]
    for key, spec in sorted(expected.items()):
        if key not in got:
            record(f"chapter number {key}", "FAIL", "not recorded")
            continue
        tol = spec.get("atol", 0.0) + spec.get("rtol", 0.05) * abs(spec["value"])
        ok = abs(got[key] - spec["value"]) <= tol
        record(f"chapter number {key}", "PASS" if ok else "FAIL",
               f"{got[key]:.4g} vs expected {spec['value']:.4g} (tolerance {tol:.3g})")


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu", "fake-cuda"], default="cuda")
    ap.add_argument("--pretrained", action="store_true", help="memory/speed of ViT-L/14, ViT-H/14, CoCa-L/14")
    ap.add_argument("--download", action="store_true", help="with --pretrained: real weights (downloads GBs)")
    ap.add_argument("--full", action="store_true", help="also the N=30,000 neighbour search")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the CI dry run (with --device fake-cuda)")
    ap.add_argument("--chapters", action="store_true", help="execute the chapters (needs --repo, jupytext, nbclient)")
    ap.add_argument("--repo", default=".", help="a checkout of the book (for --chapters)")
    ap.add_argument("--workdir", default=None, help="data cache for this run (default: a fresh temp dir)")
    ap.add_argument("--only", nargs="*", default=None,
                    help="subset of: env neighbors dimension similarity features big encoding chapters")
    ap.add_argument("--out", default="gpu_check_report.json")
    args = ap.parse_args(argv)

    global QUICK
    QUICK = args.quick
    if args.device == "fake-cuda":
        sys.path[:0] = [str(TOOLS)]
        import fake_cuda
        fake_cuda.install()
    import tempfile

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("No CUDA device: run with --device cpu (or --device fake-cuda) for a dry run.")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="scaleinv_gpu_check_")
    os.environ["SCALEINV_DATA"] = args.workdir   # features cache etc. never mixes with the user's
    os.environ.setdefault("MPLBACKEND", "Agg")
    dev = "cpu" if args.device == "cpu" else "cuda"
    warnings.filterwarnings("ignore", message=".*TypedStorage.*")
    t0 = time.perf_counter()
    plan = [("env", lambda: check_environment(args, torch)),
            ("neighbors", lambda: check_neighbors(args, torch, dev)),
            ("dimension", lambda: check_dimension(args, torch, dev)),
            ("similarity", lambda: check_similarity(args, torch, dev)),
            ("features", lambda: check_features(args, torch, dev)),
            ("big", lambda: check_big_models(args, torch, dev) if args.pretrained else None),
            ("encoding", lambda: check_encoding(args, torch, dev)),
            ("chapters", lambda: check_chapters(args, torch, dev) if args.chapters else None)]
    for key, fn in plan:
        if args.only is None or key in args.only:
            run(key, fn)
    if args.device == "fake-cuda":
        import fake_cuda
        record("fake-cuda counters", "PASS", json.dumps({k: v for k, v in fake_cuda.stats().items()
                                                         if k != "fp64_ops"}, default=str))
    total = time.perf_counter() - t0
    log(f"\n{'status':6s} check\n" + "\n".join(f"{r['status']:6s} {r['check']}: {r['detail']}" for r in RESULTS))
    counts = {s: sum(r["status"] == s for r in RESULTS) for s in ("PASS", "WARN", "FAIL")}
    log(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['WARN']} warnings in {total:.0f} s "
        f"(device {args.device})")
    Path(args.out).write_text(json.dumps({"results": RESULTS, "seconds": total}, indent=1, default=str))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
