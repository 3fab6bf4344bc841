"""A miniature NSD bucket in NSD's real file formats, and a local HTTP server for it.

``make_nsd_tree`` writes, under one directory, the files the NSD tools read,
with NSD's paths and formats but small sizes: CSV (stimulus info), MATLAB .mat
(experimental design), TSV (responses), HDF5 (volume betas chunked one voxel
per chunk, as NSD stores them; the image brick), NIfTI (ROIs, ncsnr), MGH
(surface betas, ncsnr) and MGZ (surface ROIs), FreeSurfer .ctab, COCO-style
caption JSON.

``NSDServer`` serves a directory on 127.0.0.1 with HEAD, Range requests, an
S3-like MD5 ETag, a count of the body bytes it sent, and injected faults.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

STREAMS = ["Unknown", "early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"]
PRF = ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"]
#: Wang et al. (2015) areas in the order of NSD's Kastner2015.mgz.ctab
KASTNER = ["Unknown", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4", "VO1", "VO2", "PHC1",
           "PHC2", "TO2", "TO1", "LO2", "LO1", "V3b", "V3a", "IPS0", "IPS1", "IPS2", "IPS3",
           "IPS4", "IPS5", "SPL1", "FEF"]
#: a few HCP_MMP1 areas (NSD's ctab lists all 180), one or more per network, and one of none
FLOC = ["Unknown", "OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"]
HCP = ["???", "V1", "44", "45", "STSdp", "PCV", "7m", "FEF", "IPS1", "A1", "p32", "TPOJ1",
       "FFC", "MT"]


def _atlases(index):
    """Kastner2015 and HCP_MMP1 label values of voxels/vertices with linear index ``index``.

    Kastner2015 labels every third voxel (it covers visual cortex only), in
    and outside the ROI; HCP_MMP1 labels every voxel, so the precedence of
    the atlases shows wherever they overlap.
    """
    kastner = np.where(index % 3 == 0, index // 3 % len(KASTNER), 0)
    hcp = 1 + index % (len(HCP) - 1)
    return kastner.astype(np.int16), hcp.astype(np.int16)


def _ctab(path, names):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i} {n}\n" for i, n in enumerate(names)))


def make_nsd_tree(root, *, subjects=(1,), n_sessions=3, trials_per_session=60,
                  n_subject_images=60, n_shared=20, n_images=400, image_px=16,
                  vol_shape=(10, 12, 9), roi_fraction=0.2, n_vertices=10300,
                  surface=False, signal=1.0, nan_vertices=(), nan_in_session1=(), edge_voxels=(),
                  zero_in_session1=(), seed=0):
    """Write a miniature NSD bucket under ``root``.

    Each subject sees ``n_subject_images`` images (the first ``n_shared`` are
    the shared ones), each three times over ``n_sessions`` sessions of
    ``trials_per_session`` trials. A voxel's trial beta = signal x image
    pattern + noise, so repeats agree where signal > 0. On the surface,
    ``nan_vertices`` are NaN in every session (like a medial wall) and
    ``nan_in_session1`` in session 1 only. In the volume, ``edge_voxels`` and
    ``zero_in_session1`` (rows of ``np.argwhere(mask)``) have all their betas
    exactly 0 in every session, or in session 1 only: NSD's voxels without
    data at the edge of the imaged volume. The volume's nsdgeneral marks
    non-cortex with -1 (the first i-slab: outside the head; the last: white
    matter), cortex with >= 0; the brainmask is liberal: everything but the
    first slab.

    Returns
    -------
    truth : dict
        What a correct reader must recover: per subject the trial -> 73k id
        table, the ROI mask, the raw int16 betas per session, ncsnr; images;
        captions.
    """
    import h5py
    import nibabel as nib
    import pandas as pd
    from scipy.io import savemat

    root = Path(root)
    rng = np.random.default_rng(seed)
    n_trials = n_sessions * trials_per_session
    if 3 * n_subject_images != n_trials:
        raise ValueError("fixture wants every image shown 3 times: 3 * n_subject_images == n_trials")
    truth = {"subjects": {}}

    # images and their metadata
    exp = root / "nsddata/experiments/nsd"
    exp.mkdir(parents=True, exist_ok=True)
    shared = np.sort(rng.choice(n_images, n_shared, replace=False))
    coco = rng.choice(np.arange(100, 600000), n_images, replace=False)
    crop = [f"({0.0}, {0.0}, {r:.7f}, {r:.7f})" for r in rng.uniform(0, 0.2, n_images)]
    df = pd.DataFrame({"cocoId": coco, "cocoSplit": np.where(rng.random(n_images) < 0.9,
                                                             "train2017", "val2017"),
                       "cropBox": crop, "loss": 0.0, "nsdId": np.arange(n_images),
                       "flagged": False, "BOLD5000": False,
                       "shared1000": np.isin(np.arange(n_images), shared)})
    df.to_csv(exp / "nsd_stim_info_merged.csv")  # NSD's file has a leading unnamed index column
    stim = root / "nsddata_stimuli/stimuli/nsd"
    stim.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n_images, image_px, image_px, 3), dtype=np.uint8)
    with h5py.File(stim / "nsd_stimuli.hdf5", "w") as f:
        f.create_dataset("imgBrick", data=images, chunks=(1, image_px, image_px, 3))
    truth["images"] = images
    truth["shared"] = shared
    truth["coco"] = coco

    # captions (COCO annotation format), six for some images to test "first five by id"
    anns, aid = [], 1
    captions = {}
    for c in coco:
        k = 6 if c % 3 == 0 else 5
        captions[int(c)] = [f"caption {j} of image {c}" for j in range(k)]
        for text in captions[int(c)]:
            anns.append({"id": aid, "image_id": int(c), "caption": text + " "})
            aid += 1
    (root / "coco").mkdir(exist_ok=True)
    (root / "coco/captions_train2017.json").write_text(json.dumps(
        {"images": [{"id": int(c)} for c in coco], "annotations": anns}))
    import zipfile  # COCO's annotations zip, where a mirror of the bucket keeps it
    with zipfile.ZipFile(root / "coco/annotations_trainval2017.zip", "w") as z:
        z.write(root / "coco/captions_train2017.json", "annotations/captions_train2017.json")
    truth["captions"] = captions

    # experimental design: 8 subjects' image lists, the first n_shared being the shared images
    # as in NSD, the fixture's subjects see disjoint sets of non-shared images
    subjectim = np.zeros((8, n_subject_images), dtype=np.int64)
    pool = np.setdiff1d(np.arange(n_images), shared)
    free = pool.copy()
    n_own = n_subject_images - n_shared
    if len(subjects) * n_own > len(pool):
        raise ValueError(f"n_images={n_images} is too few for {len(subjects)} subjects with "
                         f"{n_own} own images each and {n_shared} shared ones.")
    for s in range(8):
        own = rng.choice(free if s + 1 in subjects else pool, n_own, replace=False)
        if s + 1 in subjects:
            free = np.setdiff1d(free, own)
        subjectim[s] = np.concatenate([shared, own]) + 1
    master = np.concatenate([rng.permutation(n_subject_images) for _ in range(3)]) + 1
    savemat(exp / "nsd_expdesign.mat", {"masterordering": master[None, :].astype(float),
                                        "subjectim": subjectim.astype(float),
                                        "sharedix": (shared + 1)[None, :].astype(float)})

    if surface:
        # the fsaverage atlases, shared by every subject (only these exist on fsaverage)
        lab = root / "nsddata/freesurfer/fsaverage/label"
        lab.mkdir(parents=True, exist_ok=True)
        _ctab(lab / "streams.mgz.ctab", STREAMS)
        _ctab(lab / "Kastner2015.mgz.ctab", KASTNER)
        _ctab(lab / "HCP_MMP1.mgz.ctab", HCP)
        fs_atlases = {}
        for h in ("lh", "rh"):
            m = np.zeros(n_vertices, dtype=np.int32)
            m[rng.choice(n_vertices, int(roi_fraction * n_vertices), replace=False)] = 1
            kastner, hcp = _atlases(np.arange(n_vertices))
            fs_atlases[h] = {"nsdgeneral": m, "streams": m * (1 + np.arange(n_vertices) % 7),
                             "Kastner2015": kastner, "HCP_MMP1": hcp}
            for name, v in fs_atlases[h].items():
                nib.save(nib.MGHImage(v.reshape(-1, 1, 1).astype(np.int32), np.eye(4)),
                         lab / f"{h}.{name}.mgz")

    for s in subjects:
        sj = f"subj{s:02d}"
        nsd_id = subjectim[s - 1, master - 1] - 1
        session = np.arange(n_trials) // trials_per_session + 1
        behav = root / f"nsddata/ppdata/{sj}/behav"
        behav.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"SUBJECT": s, "SESSION": session,
                      "RUN": (np.arange(n_trials) % trials_per_session) // 12 + 1,
                      "TRIAL": np.arange(n_trials) % trials_per_session + 1,
                      "73KID": nsd_id + 1}).to_csv(behav / "responses.tsv", sep="\t", index=False)
        sub = {"nsd_id": nsd_id, "session": session}
        pattern = rng.standard_normal((n_images, 1))
        if not surface:
            affine = np.diag([1.8, 1.8, 1.8, 1.0])
            roi_dir = root / f"nsddata/ppdata/{sj}/func1pt8mm/roi"
            roi_dir.mkdir(parents=True, exist_ok=True)
            # a compact blob of voxels, as nsdgeneral is
            ii, jj, kk = np.indices(vol_shape)
            centre = np.array(vol_shape) / 2
            dist = ((ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 + (kk - centre[2]) ** 2)
            mask = dist <= np.quantile(dist, roi_fraction)
            nsdgeneral = np.where(mask, 1, 0).astype(np.int16)
            nsdgeneral[0] = -1  # outside the brain
            nsdgeneral[-1] = -1  # white matter: inside the (liberal) brainmask, not cortex
            streams = np.where(mask, 1 + (ii % 7), 0).astype(np.int16)
            prf = np.where(mask & (jj < vol_shape[1] // 2), 1 + (kk % 7), 0).astype(np.int16)
            kastner, hcp = _atlases(np.arange(mask.size).reshape(vol_shape))
            for name, vol in (("nsdgeneral", nsdgeneral), ("streams", streams),
                              ("prf-visualrois", prf), ("floc-faces", prf),
                              ("Kastner2015", kastner), ("HCP_MMP1", hcp)):
                nib.save(nib.Nifti1Image(vol, affine), roi_dir / f"{name}.nii.gz")
            brainmask = np.ones(vol_shape, np.int16)
            brainmask[0] = 0
            nib.save(nib.Nifti1Image(brainmask, affine),
                     root / f"nsddata/ppdata/{sj}/func1pt8mm/brainmask.nii.gz")
            lab = root / f"nsddata/freesurfer/{sj}/label"
            _ctab(lab / "streams.mgz.ctab", STREAMS)
            _ctab(lab / "prf-visualrois.mgz.ctab", PRF)
            _ctab(lab / "Kastner2015.mgz.ctab", KASTNER)
            _ctab(lab / "HCP_MMP1.mgz.ctab", HCP)
            _ctab(lab / "floc-faces.mgz.ctab", FLOC + ["x", "y"])
            bdir = root / f"nsddata_betas/ppdata/{sj}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
            bdir.mkdir(parents=True, exist_ok=True)
            weights = rng.standard_normal(vol_shape) * mask
            raw = {}
            for sess in range(1, n_sessions + 1):
                rows = session == sess
                b = (signal * pattern[nsd_id[rows]][:, :, None, None] * weights[None]
                     + rng.standard_normal((rows.sum(),) + vol_shape) + 0.3 * sess)
                b16 = np.clip(np.round(b * 300), -32768, 32767).astype(np.int16)
                roi_ijk = np.argwhere(mask)
                for v in list(edge_voxels) + (list(zero_in_session1) if sess == 1 else []):
                    b16[(slice(None),) + tuple(roi_ijk[v])] = 0
                raw[sess] = b16
                # MATLAB writes column-major: h5py sees (trials, k, j, i); one voxel per chunk
                with h5py.File(bdir / f"betas_session{sess:02d}.hdf5", "w") as f:
                    f.create_dataset("betas", data=b16.transpose(0, 3, 2, 1),
                                     chunks=(trials_per_session, 1, 1, 1))
            ncsnr = rng.uniform(0, 1, vol_shape).astype(np.float32)
            nib.save(nib.Nifti1Image(ncsnr, affine), bdir / "ncsnr.nii.gz")
            sub.update(mask=mask, raw=raw, ncsnr=ncsnr, affine=affine, cortex=nsdgeneral >= 0,
                       brainmask=brainmask > 0,
                       labels={"streams": streams, "Kastner2015": kastner, "HCP_MMP1": hcp,
                               "prf-visualrois": prf})
        else:
            # NSD's layout: the atlases (nsdgeneral, streams, Kastner2015, HCP_MMP1) on fsaverage,
            # the hand-drawn ROIs (prf-visualrois, floc-faces) on each subject's native surface,
            # mapped by white-to-fsaverage (1-based native vertex per fsaverage vertex)
            sub_lab = root / f"nsddata/freesurfer/{sj}/label"
            _ctab(sub_lab / "prf-visualrois.mgz.ctab", PRF)
            _ctab(sub_lab / "floc-faces.mgz.ctab", FLOC)
            xdir = root / f"nsddata/ppdata/{sj}/transforms"
            xdir.mkdir(parents=True, exist_ok=True)
            bdir = root / f"nsddata_betas/ppdata/{sj}/fsaverage/betas_fithrf_GLMdenoise_RR"
            bdir.mkdir(parents=True, exist_ok=True)
            sub["mask"], sub["raw"], sub["ncsnr"], sub["labels"], sub["native"] = {}, {}, {}, {}, {}
            for h in ("lh", "rh"):
                m = fs_atlases[h]["nsdgeneral"]
                n_native = n_vertices + 97 + 13 * s  # each subject's surface has its own size
                idx = rng.integers(1, n_native + 1, n_vertices)
                native = {"prf-visualrois": np.where(rng.random(n_native) < 0.3,
                                                     rng.integers(1, len(PRF), n_native), 0),
                          "floc-faces": np.where(rng.random(n_native) < 0.2,
                                                 rng.integers(1, len(FLOC), n_native), 0)}
                for name, v in native.items():
                    nib.save(nib.MGHImage(v.reshape(-1, 1, 1).astype(np.int32), np.eye(4)),
                             sub_lab / f"{h}.{name}.mgz")
                nib.save(nib.MGHImage(idx.reshape(-1, 1, 1).astype(np.int32), np.eye(4)),
                         xdir / f"{h}.white-to-fsaverage.mgz")
                labels = dict(fs_atlases[h])
                labels.update({name: v[idx - 1] for name, v in native.items()})
                sub["labels"][h] = labels
                sub["native"][h] = dict(native, transform=idx)
                w = rng.standard_normal(n_vertices) * m
                raw = {}
                for sess in range(1, n_sessions + 1):
                    rows = session == sess
                    b = (signal * pattern[nsd_id[rows]] * w[None]
                         + rng.standard_normal((rows.sum(), n_vertices))).astype(np.float32)
                    # NaN vertices: like a medial wall (every session) or a vertex that lost
                    # data in one session.
                    b[:, list(nan_vertices)] = np.nan
                    if sess == 1:
                        b[:, list(nan_in_session1)] = np.nan
                    raw[sess] = b
                    nib.save(nib.MGHImage(b.T.reshape(n_vertices, 1, 1, -1), np.eye(4)),
                             bdir / f"{h}.betas_session{sess:02d}.mgh")
                nc = rng.uniform(0, 1, n_vertices).astype(np.float32)
                nib.save(nib.MGHImage(nc.reshape(-1, 1, 1), np.eye(4)), bdir / f"{h}.ncsnr.mgh")
                sub["mask"][h], sub["raw"][h], sub["ncsnr"][h] = m > 0, raw, nc
        truth["subjects"][s] = sub
    return truth


class NSDServer:
    """Serve a directory on 127.0.0.1 like S3: HEAD, Range, If-Range, ETags, and faults.

    Faults are queued per path (relative, no leading slash) in ``faults[path]``
    and consumed one request at a time:

    ``"500"``  answer HTTP 500;  ``"drop:N"``  send the headers and N body bytes,
    then reset the connection;  ``"truncate:N"``  send N body bytes and close
    cleanly;  ``"corrupt"``  flip a byte of the body (ETag unchanged).
    Paths in ``missing`` answer 404; paths in ``no_ranges`` ignore Range
    (HTTP 200, whole file); paths in ``encoded`` carry ``Content-Encoding:
    gzip`` as object metadata (the body is the stored bytes, as S3 sends them).
    ``drop_every = n`` resets every n-th GET of any path after a few bytes.
    ``etag_style = "multipart"`` gives S3 multipart-upload ETags
    (``"<hex>-<parts>"``, not an MD5 of the file) instead of MD5 ones.

    Attributes
    ----------
    bytes_sent : int
        Body bytes sent, over all requests.
    requests : list of (str, str, str or None)
        (method, path, Range header) of every request.
    headers : list of dict
        The request headers of every request, in the same order.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.faults = {}
        self.missing = set()
        self.no_ranges = set()
        self.encoded = set()
        self.drop_every = 0
        self.etag_style = "md5"
        self.bytes_sent = 0
        self.requests = []
        self.headers = []
        self._n_get = 0
        self._lock = threading.Lock()
        self._etags = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _target(self):
                rel = self.path.split("?", 1)[0].lstrip("/")
                return rel, server.root / rel

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head):
                rel, path = self._target()
                rng = self.headers.get("Range")
                with server._lock:
                    server.requests.append((self.command, rel, rng))
                    server.headers.append(dict(self.headers.items()))
                    fault = server.faults.get(rel, []).pop(0) if server.faults.get(rel) else None
                    if not head:
                        server._n_get += 1
                        if fault is None and server.drop_every and server._n_get % server.drop_every == 0:
                            fault = "drop:3"
                if rel in server.no_ranges:
                    rng = None
                if rel in server.missing or not path.is_file():
                    return self._status(404)
                if fault == "500":
                    return self._status(500)
                size = path.stat().st_size
                etag = server._etag(path)
                start, end, status = 0, size, 200
                modified = formatdate(path.stat().st_mtime, usegmt=True)
                if_range = self.headers.get("If-Range")
                if rng and if_range and if_range not in (f'"{etag}"', modified):
                    rng = None  # the client's copy is of another version: send the whole file
                if rng and not head:
                    a, _, b = rng.removeprefix("bytes=").partition("-")
                    start = int(a)
                    end = min(int(b) + 1, size) if b else size
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                with open(path, "rb") as fh:
                    fh.seek(start)
                    body = fh.read(end - start) if not head else b""
                if fault == "corrupt" and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                self.send_response(status)
                self.send_header("Content-Length", str(end - start))
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Last-Modified", modified)
                self.send_header("Accept-Ranges", "bytes")
                if rel in server.encoded:
                    self.send_header("Content-Encoding", "gzip")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                self.end_headers()
                if head:
                    return
                if fault and fault.startswith(("drop:", "truncate:")):
                    n = int(fault.split(":")[1])
                    self._write(body[:n])
                    self.close_connection = True
                    if fault.startswith("drop:"):
                        import socket
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                self._write(body)

            def _write(self, body):
                # Count before writing: the client can finish reading (and a test check the
                # count) before this thread returns from write().
                with server._lock:
                    server.bytes_sent += len(body)
                self.wfile.write(body)

            def _status(self, code):
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _etag(self, path):
        key = (str(path), os.stat(path).st_mtime_ns)
        with self._lock:
            if key not in self._etags:
                h = hashlib.md5()
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
                self._etags[key] = h.hexdigest()
            if self.etag_style == "multipart":  # S3: MD5 of the parts' MD5s, then "-<parts>"
                return hashlib.md5(bytes.fromhex(self._etags[key])).hexdigest() + "-2"
            return self._etags[key]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
