"""Captions of NSD's images: COCO 2017's caption annotations.

Each NSD image is a crop of a COCO image (``cocoId`` in
``nsd_stim_info_merged.csv``); its captions are COCO's. From a remote zip
(COCO's 241 MB annotations archive) only the ``captions_*.json`` members are
read, by range requests through the zip's central directory.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from ..remote import DownloadError, RangeFile, download_file
from .layout import NSD_BASE_URL, _base_url

__all__ = ["COCO_CAPTIONS_SOURCES", "COCO_MIRROR_PATH", "COCO_ENV", "default_caption_sources",
           "load_coco_captions"]

#: Where captions come from: COCO's 2017 caption annotations (a JSON file, or the zip that holds them).
COCO_CAPTIONS_SOURCES = ("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",)
#: Where a mirror of the bucket (any base URL but NSD's own) keeps COCO's annotations zip.
COCO_MIRROR_PATH = "coco/annotations_trainval2017.zip"
#: Environment variable naming caption sources (comma-separated URLs or paths).
COCO_ENV = "SCALEINV_COCO_URL"


def default_caption_sources(base_url=None):
    """Caption sources used when none are given.

    ``$SCALEINV_COCO_URL`` (comma-separated) when set; else, for a base URL
    other than NSD's own bucket (a mirror, a local copy), the annotations zip
    inside it at COCO_MIRROR_PATH; else COCO's own site (COCO_CAPTIONS_SOURCES).

    Parameters
    ----------
    base_url : str or None

    Returns
    -------
    sources : list of str
    """
    env = os.environ.get(COCO_ENV, "").strip()
    if env:
        return [x.strip() for x in env.split(",") if x.strip()]
    base = _base_url(base_url)
    if base != NSD_BASE_URL:
        return [base + COCO_MIRROR_PATH]
    return list(COCO_CAPTIONS_SOURCES)


def _fetch_source(src, client, cache):
    """A caption source: a local path, or a URL fetched into the cache.

    From a remote zip (COCO's 241 MB annotations archive) only the
    ``captions_*.json`` members are read, by range requests through the
    zip's central directory, and cached as JSON files.
    """
    if re.match(r"^https?://", str(src)):
        name = str(src).rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".zip"):
            folder = Path(cache) / "coco" / name[:-4]
            done = folder / ".complete"
            if not done.exists():
                folder.mkdir(parents=True, exist_ok=True)
                try:
                    with RangeFile(src, client, block_size=1 << 20) as rf, zipfile.ZipFile(rf) as z:
                        _extract_captions(z, folder)
                except DownloadError as exc:
                    if "ignored a Range request" not in str(exc):
                        raise
                    # the host refuses ranges: fetch the whole zip once, then read it locally
                    whole = download_file(src, Path(cache) / "coco" / name, client=client, desc=name)
                    with zipfile.ZipFile(whole) as z:
                        _extract_captions(z, folder)
                done.write_text("ok\n")
            return folder
        return download_file(src, Path(cache) / "coco" / name, client=client, desc=name)
    path = Path(os.path.expanduser(str(src)))
    if not path.is_file():
        raise FileNotFoundError(f"caption source {src} is neither a URL nor an existing file.")
    return path


def _extract_captions(z, folder):
    """Write a zip's ``captions_*.json`` members into folder (zipfile checks each CRC)."""
    found = False
    for member in z.namelist():
        if re.search(r"captions_\w+\.json$", member):
            tmp = folder / (Path(member).name + ".part")
            tmp.write_bytes(z.read(member))
            json.loads(tmp.read_text())  # a member that does not parse is not kept
            os.replace(tmp, folder / Path(member).name)
            found = True
    if not found:
        raise ValueError(f"the zip holds no captions_*.json member (members: {z.namelist()[:5]}...).")


def load_coco_captions(paths, coco_ids, n_captions=5):
    """Captions of COCO images from COCO caption annotation files.

    Parameters
    ----------
    paths : list of str or Path
        ``captions_*.json`` files, zips holding them, or folders of them.
    coco_ids : array-like of shape (n_images,)
    n_captions : int

    Returns
    -------
    captions : list of list of str, n_images x n_captions
        The first n_captions by annotation id; an image with fewer repeats
        its last caption (COCO has at least 5 per image).

    Raises
    ------
    KeyError
        If an image has no caption in the files.
    """
    anns = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.glob("captions_*.json")):
                anns += json.loads(f.read_text())["annotations"]
        elif p.suffix == ".zip":
            with zipfile.ZipFile(p) as z:
                for member in z.namelist():
                    if re.search(r"captions_\w+\.json$", member):
                        anns += json.loads(z.read(member))["annotations"]
        else:
            anns += json.loads(p.read_text())["annotations"]
    by_image = {}
    for a in sorted(anns, key=lambda a: a["id"]):
        by_image.setdefault(int(a["image_id"]), []).append(a["caption"].strip())
    out = []
    for cid in np.asarray(coco_ids).tolist():
        caps = by_image.get(int(cid))
        if not caps:
            raise KeyError(f"No COCO caption for cocoId {cid} in {[str(p) for p in paths]}: "
                           "the caption files are not COCO 2017's, or nsd_stim_info_merged.csv is "
                           "damaged (run `scaleinv-data verify --repair`).")
        caps = caps[:n_captions]
        out.append(caps + [caps[-1]] * (n_captions - len(caps)))
    return out
