"""Bytes fetched vs bytes kept when building an NSD subset by range requests.

Builds a miniature NSD bucket with NSD's real geometry where it matters for
byte counts (a full 81 x 104 x 83 func1pt8mm volume, int16 betas chunked one
voxel's 750 trials per chunk, an nsdgeneral-sized ROI shaped like a cortical
sheet, 425 x 425 x 3 images chunked one per chunk) but few sessions and
images, serves it on 127.0.0.1, and builds a shared-images, nsdgeneral,
one-subject subset with ``scaleinv_utils.nsd.prepare``.

Run by hand (about 3 minutes and 3 GB of disk on 2 cores)::

    .venv/bin/python benchmarks/bench_nsd_bytes.py [--sessions 2] [--workdir /tmp/nsd_bench]

Prints a Markdown table (copied into benchmarks/results_nsd.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

VOL = (81, 104, 83)      # NSD func1pt8mm (subj01)
N_ROI = 15724            # nsdgeneral voxels of subj01 in func1pt8mm
TPS = 750                # trials per session


def cortical_sheet(shape, n_voxels, seed=0):
    """A 2-voxel-thick curved sheet in the posterior half: runs like a real cortical ROI."""
    ii, jj, kk = np.indices(shape).astype(float)
    c = np.array(shape) / 2
    r = np.sqrt(((ii - c[0]) / 36) ** 2 + ((jj - c[1]) / 48) ** 2 + ((kk - c[2]) / 38) ** 2)
    wobble = 0.04 * np.sin(ii / 3) * np.cos(kk / 4)
    shell = np.abs(r + wobble - 0.85)
    posterior = jj < c[1]
    score = np.where(posterior, shell, np.inf)
    flat = np.argsort(score, axis=None)[:n_voxels]
    mask = np.zeros(shape, dtype=bool)
    mask.flat[flat] = True
    return mask


def build_bucket(root, n_sessions, seed=0):
    import h5py
    import nibabel as nib
    from nsd_fixtures import make_nsd_tree
    from scaleinv_utils import nsd

    n_trials = n_sessions * TPS
    make_nsd_tree(root, n_sessions=n_sessions, trials_per_session=TPS,
                  n_subject_images=n_trials // 3, n_shared=n_trials // 30,
                  n_images=n_trials // 3 + 100, image_px=425, vol_shape=(4, 4, 4), seed=seed)
    # replace the small volumes by NSD-sized ones
    rng = np.random.default_rng(seed)
    mask = cortical_sheet(VOL, N_ROI, seed)
    aff = np.diag([1.8, 1.8, 1.8, 1.0])
    ii = np.indices(VOL)[0]
    vols = {"nsdgeneral": mask.astype(np.int16), "streams": (mask * (1 + ii % 7)).astype(np.int16),
            "prf-visualrois": (mask * (ii % 8)).astype(np.int16)}
    for name, v in vols.items():
        nib.save(nib.Nifti1Image(v, aff), root / nsd.nsd_file("roi", 1, roi=name))
    nib.save(nib.Nifti1Image(rng.uniform(0, 1, VOL).astype(np.float32), aff),
             root / nsd.nsd_file("ncsnr", 1))
    for s in range(1, n_sessions + 1):
        data = rng.integers(-600, 600, (TPS,) + VOL[::-1], dtype=np.int16)
        with h5py.File(root / nsd.nsd_file("betas", 1, session=s), "w") as f:
            f.create_dataset("betas", data=data, chunks=(TPS, 1, 1, 1))
        del data
    return mask


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/nsd_bench")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    root = work / "bucket"
    if not (root / "nsddata_betas").exists():
        t0 = time.time()
        build_bucket(root, args.sessions)
        print(f"bucket built in {time.time() - t0:.0f} s", file=sys.stderr)
    os.environ["SCALEINV_DATA"] = str(work / f"data-{time.time_ns()}")

    from nsd_fixtures import NSDServer
    from scaleinv_utils import load_subset, nsd
    from scaleinv_utils.remote import HTTPClient

    spec = nsd.NSDSpec(subjects=[1], roi="nsdgeneral", n_train=0, test=True,
                       trials_per_session=TPS)
    with NSDServer(root) as srv:
        client = HTTPClient(progress=False)
        t0 = time.time()
        path = nsd.prepare(spec, agree_terms=True, base_url=srv.url, client=client,
                           progress=False, captions=[srv.url + "coco/captions_train2017.json"])
        wall = time.time() - t0
        per_file = {}
        for method, rel, rng in srv.requests:
            if method != "GET":
                continue
            size = (root / rel).stat().st_size
            n = size if rng is None else min(int(rng.split("-")[1]) + 1, size) - int(rng[6:].split("-")[0])
            per_file.setdefault(rel, [0, 0])
            per_file[rel][0] += n
            per_file[rel][1] += 1
        sent = srv.bytes_sent
    sub = load_subset(path).subject(1)
    n_vox = sub.n_voxels
    n_img = len(load_subset(path).stimuli)
    sessions = np.unique(sub.trial_session)

    betas_f = sum(v[0] for k, v in per_file.items() if "betas_session" in k)
    betas_req = sum(v[1] for k, v in per_file.items() if "betas_session" in k)
    img_f = sum(v[0] for k, v in per_file.items() if k.endswith("nsd_stimuli.hdf5"))
    img_req = sum(v[1] for k, v in per_file.items() if k.endswith("nsd_stimuli.hdf5"))
    small_f = sent - betas_f - img_f
    betas_needed = n_vox * TPS * 2 * len(sessions)       # all trials of a session: z-scoring needs them
    betas_subset = n_vox * len(sub.trial_session) * 2    # int16 equivalent of the trials kept
    img_kept = n_img * 425 * 425 * 3
    whole = sum((root / nsd.nsd_file("betas", 1, session=s)).stat().st_size for s in sessions)

    rows = [
        ("betas (ROI voxels, range reads)", betas_f, betas_needed, betas_req),
        ("images (imgBrick, range reads)", img_f, img_kept, img_req),
        ("betas + images", betas_f + img_f, betas_needed + img_kept, betas_req + img_req),
        ("small files (csv, mat, nii.gz, ctab, json)", small_f, None, None),
        ("everything", sent, betas_needed + img_kept, client.n_requests),
    ]
    print(f"\nsubset: subj01, nsdgeneral ({n_vox} voxels of {np.prod(VOL)}), {len(sessions)} sessions "
          f"x {TPS} trials, {n_img} shared images (425 px); built in {wall:.1f} s\n")
    print("| part | fetched (MB) | kept (MB) | fetched / kept | requests |")
    print("|---|---:|---:|---:|---:|")
    for name, f, k, r in rows:
        ratio = f"{f / k:.3f}" if k else "-"
        print(f"| {name} | {f / 1e6:.2f} | {k / 1e6 if k else float('nan'):.2f} | {ratio} | "
              f"{r if r is not None else '-'} |")
    print(f"| whole per-session beta files instead | {whole / 1e6:.1f} | {betas_needed / 1e6:.2f} | "
          f"{whole / betas_needed:.1f} | {len(sessions)} |")
    print(f"\nkept = ROI betas of every trial of the sessions read (per-session z-scoring needs "
          f"them; {betas_subset / 1e6:.2f} MB of them are trials of the subset's images) + images.")


if __name__ == "__main__":
    main()
